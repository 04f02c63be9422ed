"""Instance normalization (Ulyanov, Vedaldi & Lempitsky 2016): InstanceNorm1d, InstanceNorm2d and
F.instance_norm.

Per (sample n, channel c), over the L = prod(spatial) values of that one feature map:

    mu     = mean(x)                       var = mean((x - mu)^2)          (biased)
    x_hat  = (x - mu) / sqrt(var + eps)
    y      = x_hat * w[c] + b[c]           (affine=False by default)

The defaults (track_running_stats=False) use instance statistics in training and in eval alike.
With track_running_stats=True, training still normalizes with instance statistics and updates

    running_mean = (1 - m) running_mean + m * mean_n(mu_nc)
    running_var  = (1 - m) running_var  + m * mean_n(var_nc * L / (L - 1))

(each instance's unbiased variance, averaged over the batch), and eval normalizes with the running
statistics, like BatchNorm eval. momentum=None means m = 0: the statistics never move, and
num_batches_tracked is registered but never counts (both as in PyTorch).

Backward with instance statistics, with g_hat = dy * w[c] and means over the L values of (n, c):

    dx = invstd * (g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat))
    dw[c] = sum over (n, spatial) of dy * x_hat,      db[c] = sum over (n, spatial) of dy

and with running statistics dx = dy * w[c] * invstd (they are constants).

The graph node is the shared mean/variance kernel (norms/_meanvar.py) on the view (N, C, L) with
statistics over axis 2, named InstanceNorm1dBackward / InstanceNorm2dBackward (the functional
form: InstanceNormBackward). It saves x (the one full-size array), the per-(n, c) mean and
invstd (or the running ones), and w.
"""
import math
import warnings

from tinygrad_bn import dtypes
from tinygrad_bn.norms._base import NormSpec, stats_as_constants, torch_size, update_running_stats
from tinygrad_bn.norms._meanvar import normalize
from tinygrad_bn.norms.batchnorm import _NormBase


def _instance_norm(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps,
                   batched=True, node_name="InstanceNormBackward"):
    """F.instance_norm on (N, C, *spatial), or - batched=False, for the modules' unbatched
    inputs - on (C, *spatial) treated as a batch of one (with no reshape nodes in the graph)."""
    shape = tuple(input.shape) if batched else (1,) + tuple(input.shape)
    if not dtypes.is_floating(input.dtype):
        raise TypeError(f"instance_norm: expected a floating-point input, got {input.dtype}")
    if use_input_stats and math.prod(shape[2:]) == 1:
        raise ValueError(f"Expected more than 1 spatial element when training, got input size "
                         f"{torch_size(shape)}")
    if len(shape) < 2:
        raise ValueError(f"instance_norm: expected at least 2D input (got {input.ndim}D input)")
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must either both be None or neither be None")
    if not use_input_stats and running_mean is None:
        raise RuntimeError("Expected running_mean and running_var to be defined when use_input_stats "
                           "is false")
    n, c = shape[0], shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if t is not None and (t.ndim != 1 or t.numel() != c):
            # PyTorch's words (it repeats the per-channel tensors over the batch, hence the
            # factor N), then the sizes that actually disagree
            raise RuntimeError(f"{name} should contain {n * c} elements not {n * t.numel()} "
                               f"(instance_norm repeats {name} over the batch of {n}: the input has "
                               f"{c} channels, {name} has shape {list(t.shape)})")
    if input.numel() == 0:  # nothing to normalize; the running statistics stay as they are
        return input * 1.0
    spatial = math.prod(shape[2:])
    group_shape, stats_shape = (n, c, spatial), (1, c, 1)
    # the parameters broadcast against the input itself: (1, C, 1, ...) or, unbatched, (C, 1, ...)
    param_shape = ((1, c) if batched else (c,)) + (1,) * (len(shape) - 2)
    shown = {"momentum": momentum, "use_input_stats": use_input_stats}
    geometry = {"group_shape": group_shape, "axes": (2,), "param_shape": param_shape,
                # w, b are constant within each (n, c) group: the kernel's per-group fast path
                "param_group_shape": stats_shape}
    if use_input_stats:
        y, mean, var = normalize(input, weight, bias, eps=eps, node_name=node_name, **geometry, **shown)
        if running_mean is not None:
            # mean over the batch of the per-instance statistics; the shared rule makes each
            # instance's variance unbiased over its L values
            update_running_stats(running_mean, running_var, mean.mean(axis=0), var.mean(axis=0),
                                 spatial, momentum)
        return y
    mean, invstd = stats_as_constants(running_mean, running_var, eps, stats_shape, input.dtype)
    y, _, _ = normalize(input, weight, bias, eps=eps, mean=mean, invstd=invstd, node_name=node_name,
                        **geometry, **shown)
    return y


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5):
    """F.instance_norm: statistics per (sample, channel) over the spatial dims when
    use_input_stats (updating running_mean/running_var in place when given), the running
    statistics otherwise."""
    return _instance_norm(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)


class _InstanceNorm(_NormBase):
    """Shared by InstanceNorm1d/2d: PyTorch's _NormBase parameters and buffers, with
    InstanceNorm's defaults (affine=False, track_running_stats=False). num_batches_tracked is
    registered for PyTorch's state_dict layout; InstanceNorm never increments it."""

    no_batch_dim = None  # the ndim of an unbatched input; set by subclasses

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False, track_running_stats=False,
                 device=None, dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         bias=bias)

    def _check_input_dim(self, input):
        if input.ndim not in (self.no_batch_dim, self.no_batch_dim + 1):
            raise ValueError(f"{self._short_name()}: expected {self.no_batch_dim}D or "
                             f"{self.no_batch_dim + 1}D input (got {input.ndim}D input); input of shape "
                             f"{list(input.shape)}")

    def forward(self, input):
        self._check_input_dim(input)
        feature_dim = input.ndim - self.no_batch_dim
        channels = input.shape[feature_dim]
        if channels != self.num_features:
            if self.affine:
                raise ValueError(f"{self._short_name()}: expected input's size at dim={feature_dim} to "
                                 f"match num_features ({self.num_features}), but got: {channels}. Input "
                                 f"of shape {list(input.shape)}.")
            warnings.warn(f"input's size at dim={feature_dim} does not match num_features. You can "
                          f"silence this warning by not passing in num_features, which is not used "
                          f"because affine=False", UserWarning, stacklevel=3)
            if self.track_running_stats:  # then the buffers' size is wrong: say so, naming the layer
                self._check_channels(input, feature_dim)
        return _instance_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                              self.training or not self.track_running_stats,
                              0.0 if self.momentum is None else self.momentum, self.eps,
                              batched=input.ndim == self.no_batch_dim + 1,
                              node_name=f"{type(self).__name__}Backward")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        version = local_metadata.get("version", None)
        if version is None and not self.track_running_stats:
            # checkpoints from before PyTorch 0.4, when InstanceNorm tracked statistics by default
            keys = [prefix + name for name in ("running_mean", "running_var") if prefix + name in state_dict]
            if keys:
                klass = type(self).__name__
                names = " and ".join('"' + k + '"' for k in keys)
                error_msgs.append(
                    f"Unexpected running stats buffer(s) {names} "
                    f"for {klass} with track_running_stats=False. If state_dict is a checkpoint saved "
                    f"before 0.4.0, this may be expected because {klass} does not track running stats by "
                    f"default since 0.4.0. Please remove these keys from state_dict. If the running stats "
                    f"are actually needed, instead set track_running_stats=True in {klass} to enable them. "
                    f"See the documentation of {klass} for details.")
                for key in keys:
                    state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


class InstanceNorm1d(_InstanceNorm):
    """Instance normalization of (N, C, L) inputs, or unbatched (C, L)."""

    no_batch_dim = 2


class InstanceNorm2d(_InstanceNorm):
    """Instance normalization of (N, C, H, W) inputs, or unbatched (C, H, W)."""

    no_batch_dim = 3


class InstanceNorm3d(_InstanceNorm):
    """Instance normalization of (N, C, D, H, W) inputs, or unbatched (C, D, H, W)."""

    no_batch_dim = 4


SPECS = [
    NormSpec(name="InstanceNorm2d", make=lambda c: InstanceNorm2d(c), input_shape=lambda c: (2, c, 2, 2),
             make_for_conv=lambda c, hw: InstanceNorm2d(c, affine=True),
             torch_make=lambda torch, c: torch.nn.InstanceNorm2d(c),
             description="statistics per (sample, channel) over H, W; no parameters by default"),
    NormSpec(name="InstanceNorm2d-affine-tracked",
             make=lambda c: InstanceNorm2d(c, affine=True, track_running_stats=True),
             input_shape=lambda c: (2, c, 2, 2),
             torch_make=lambda torch, c: torch.nn.InstanceNorm2d(c, affine=True, track_running_stats=True),
             description="affine, running averages of the instance statistics used in eval"),
    NormSpec(name="InstanceNorm3d", make=lambda c: InstanceNorm3d(c, affine=True),
             input_shape=lambda c: (2, c, 2, 2, 2),
             torch_make=lambda torch, c: torch.nn.InstanceNorm3d(c, affine=True),
             description="(N, C, D, H, W) input: statistics per (sample, channel) over D, H, W"),
    NormSpec(name="InstanceNorm1d", make=lambda c: InstanceNorm1d(c, affine=True, bias=False),
             input_shape=lambda c: (3, c, 2),
             torch_make=lambda torch, c: torch.nn.InstanceNorm1d(c, affine=True, bias=False),
             description="(N, C, L) input, weight only"),
    NormSpec(name="InstanceNorm1d-frozen-stats",
             make=lambda c: InstanceNorm1d(c, track_running_stats=True, momentum=None),
             input_shape=lambda c: (2, c, 3),
             torch_make=lambda torch, c: torch.nn.InstanceNorm1d(c, track_running_stats=True, momentum=None),
             # momentum=None: PyTorch's instance norm never moves them (checked against PyTorch)
             test_options={"still_buffers": ("running_mean", "running_var")},
             description="momentum=None: the running statistics never move"),
]
