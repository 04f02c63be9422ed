"""Batch normalization (Ioffe & Szegedy 2015): BatchNorm1d, BatchNorm2d and F.batch_norm.

Per channel c, over the M = N * prod(spatial) values of the batch:

    training:  y = (x - mean_B) / sqrt(var_B + eps) * w + b        (var_B biased)
               running_mean = (1 - f) running_mean + f mean_B
               running_var  = (1 - f) running_var  + f var_B * M / (M - 1)   (stored unbiased)
               f = momentum, or 1 / num_batches_tracked when momentum is None (cumulative average)
    eval:      y = (x - running_mean) / sqrt(running_var + eps) * w + b
               (batch statistics again when there are no running buffers)

Backward in training, with x_hat the normalized input and means over the M values:

    dx = w * invstd * (dy - mean(dy) - x_hat * mean(dy * x_hat)),   dw = sum(dy x_hat),  db = sum(dy)

and in eval dx = dy * w * invstd (the running statistics are constants).

The graph node is the shared mean/variance kernel (norms/_meanvar.py), named BatchNorm2dBackward.
It saves x (the one full-size array) and the per-channel mean and invstd.
"""
import numpy as np

from tinygrad_bn import dtypes
from tinygrad_bn.autograd.grad_mode import no_grad
from tinygrad_bn.creation import ones, zeros
from tinygrad_bn.nn.module import Module
from tinygrad_bn.norms._base import restores_count_on_error
from tinygrad_bn.norms._base import (NormSpec, check_batch_norm_args, check_channel_count,
                                     check_more_than_one_value, register_affine, reset_affine,
                                     stats_as_constants, update_running_stats)
from tinygrad_bn.norms._meanvar import normalize
from tinygrad_bn.tensor import Tensor


def _geometry(shape):
    """BN's grouping: (N, C, rest) with statistics over axes (0, 2), parameters along axis 1."""
    n, c = shape[0], shape[1]
    rest = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return (n, c, rest), (0, 2), (1, c) + (1,) * (len(shape) - 2)


PARAMS_IN_GROUP_VIEW = lambda c: (1, c, 1)  # noqa: E731 - w, b in the (N, C, rest) view


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, node_name="BatchNormBackward"):
    """F.batch_norm: normalizes with batch statistics when `training` (updating the running
    buffers in place when given), with the running statistics otherwise."""
    opname = "batch_norm" if node_name == "BatchNormBackward" else node_name.replace("Backward", "")
    check_batch_norm_args(opname, input, running_mean, running_var, weight, bias, training, eps)
    shape = input.shape
    channels = shape[1]
    group_shape, axes, param_shape = _geometry(shape)
    shown = {"momentum": momentum, "training": training, "param_group_shape": PARAMS_IN_GROUP_VIEW(channels)}
    if training:
        check_more_than_one_value(shape, who=opname)
        if input.numel() == 0:  # nothing to normalize; the running statistics stay as they are
            return input * 1.0
        y, mean, var = normalize(input, weight, bias, group_shape=group_shape, axes=axes,
                                 param_shape=param_shape, eps=eps, node_name=node_name, **shown)
        if running_mean is not None or running_var is not None:
            count = group_shape[0] * group_shape[2]
            update_running_stats(running_mean, running_var, mean, var, count, momentum)
        return y
    mean, invstd = stats_as_constants(running_mean, running_var, eps, (1, channels, 1), input.dtype)
    y, _, _ = normalize(input, weight, bias, group_shape=group_shape, axes=axes, param_shape=param_shape,
                        eps=eps, mean=mean, invstd=invstd, node_name=node_name, **shown)
    return y


class _NormBase(Module):
    """The parameters and running-statistics buffers shared by the BatchNorm and InstanceNorm
    families (PyTorch's _NormBase): weight/bias when affine; running_mean, running_var and
    num_batches_tracked when track_running_stats; the version-2 state_dict upgrade."""

    _version = 2

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None, *, bias=True):
        super().__init__()
        if not isinstance(num_features, (int, np.integer)) or isinstance(num_features, bool) \
                or num_features < 0:
            raise ValueError(f"{type(self).__name__}: num_features must be a non-negative int, "
                             f"got {num_features!r}")
        self.num_features = int(num_features)
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        factory = {"device": device, "dtype": dtype}
        register_affine(self, self.num_features, affine, bias, **factory)
        if track_running_stats:
            self.register_buffer("running_mean", zeros(self.num_features, **factory))
            self.register_buffer("running_var", ones(self.num_features, **factory))
            self.register_buffer("num_batches_tracked", zeros((), dtype=dtypes.int64, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def _short_name(self):
        """The layer as messages name it: BatchNorm2d(4)."""
        return f"{type(self).__name__}({self.num_features})"

    def _check_channels(self, input, channel_dim=1):
        if self.weight is None and self.running_mean is None:
            return  # nothing has num_features entries: PyTorch normalizes any channel count too
        check_channel_count(self._short_name(), self.num_features, input, channel_dim)

    def reset_running_stats(self):
        if self.track_running_stats:
            with no_grad():
                self.running_mean.zero_()
                self.running_var.fill_(1)
                self.num_batches_tracked.zero_()

    def reset_parameters(self):
        self.reset_running_stats()
        reset_affine(self)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        version = local_metadata.get("version", None)
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            # checkpoints from before num_batches_tracked existed: start the count at 0
            state_dict[key] = Tensor(np.zeros((), dtype=np.int64))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


class _BatchNorm(_NormBase):
    """Shared by BatchNorm1d/2d (and the BN family): batch statistics in training, running ones
    in eval, and frozen statistics on request."""

    frozen_stats = False

    def freeze_running_stats(self, frozen=True):
        """Frozen BN: normalize with the running statistics and never update them, even in
        training mode, while weight and bias keep training. A separate flag from `training`, so
        it survives `.train()`. Returns self."""
        if frozen and self.running_mean is None:
            raise RuntimeError(f"{type(self).__name__}.freeze_running_stats: the layer has no "
                               f"running statistics (track_running_stats=False)")
        self.frozen_stats = bool(frozen)
        return self

    def _check_input_dim(self, x):
        raise NotImplementedError

    @restores_count_on_error
    def forward(self, input):
        self._check_input_dim(input)
        self._check_channels(input)
        use_batch_stats = not self.frozen_stats and (
            self.training or (self.running_mean is None and self.running_var is None))
        factor = 0.0 if self.momentum is None else self.momentum
        updates = self.training and self.track_running_stats and not self.frozen_stats
        if updates and self.num_batches_tracked is not None:
            self.num_batches_tracked.data += 1  # counted even for an empty batch, as in PyTorch
            self.num_batches_tracked._version[0] += 1
            if self.momentum is None:
                factor = 1.0 / int(self.num_batches_tracked.item())
        return batch_norm(input,
                          self.running_mean if (updates or not use_batch_stats) else None,
                          self.running_var if (updates or not use_batch_stats) else None,
                          self.weight, self.bias, use_batch_stats, factor, self.eps,
                          node_name=f"{type(self).__name__}Backward")


class BatchNorm1d(_BatchNorm):
    """Batch normalization over (N, C) or (N, C, L) inputs; statistics per channel."""

    def _check_input_dim(self, x):
        if x.ndim not in (2, 3):
            raise ValueError(f"{self._short_name()}: expected 2D or 3D input (got {x.ndim}D input); "
                             f"input of shape {list(x.shape)}")


class BatchNorm2d(_BatchNorm):
    """Batch normalization over (N, C, H, W) inputs; statistics per channel."""

    def _check_input_dim(self, x):
        if x.ndim != 4:
            raise ValueError(f"{self._short_name()}: expected 4D input (got {x.ndim}D input); input of "
                             f"shape {list(x.shape)}")


class BatchNorm3d(_BatchNorm):
    """Batch normalization over (N, C, D, H, W) inputs (volumes, video); statistics per channel,
    over the batch and all three spatial dims."""

    def _check_input_dim(self, x):
        if x.ndim != 5:
            raise ValueError(f"{self._short_name()}: expected 5D input (got {x.ndim}D input); input of "
                             f"shape {list(x.shape)}")


SPECS = [
    NormSpec(name="BatchNorm2d", make=lambda c: BatchNorm2d(c), input_shape=lambda c: (3, c, 2, 2),
             make_for_conv=lambda c, hw: BatchNorm2d(c),
             torch_make=lambda torch, c: torch.nn.BatchNorm2d(c),
             description="batch statistics per channel; running averages in eval"),
    NormSpec(name="BatchNorm3d", make=lambda c: BatchNorm3d(c), input_shape=lambda c: (2, c, 2, 2, 2),
             torch_make=lambda torch, c: torch.nn.BatchNorm3d(c),
             description="BatchNorm for (N, C, D, H, W): statistics over N, D, H, W"),
    NormSpec(name="BatchNorm1d", make=lambda c: BatchNorm1d(c), input_shape=lambda c: (5, c, 3),
             torch_make=lambda torch, c: torch.nn.BatchNorm1d(c),
             description="BatchNorm for (N, C) and (N, C, L)"),
    NormSpec(name="BatchNorm1d-2D-no-affine", make=lambda c: BatchNorm1d(c, affine=False, momentum=None),
             input_shape=lambda c: (6, c),
             torch_make=lambda torch, c: torch.nn.BatchNorm1d(c, affine=False, momentum=None),
             description="(N, C) input, no affine, cumulative running average"),
    NormSpec(name="BatchNorm2d-no-running-stats", make=lambda c: BatchNorm2d(c, track_running_stats=False),
             input_shape=lambda c: (3, c, 2, 2),
             torch_make=lambda torch, c: torch.nn.BatchNorm2d(c, track_running_stats=False),
             batch_independent_eval=False,
             description="eval keeps using batch statistics"),
]
