"""Synchronized batch normalization: BatchNorm whose statistics cover the batch of every rank.

PyTorch's algorithm (torch/nn/modules/_functions.py and the CUDA kernel
batch_norm_reduce_statistics_kernel), per channel:

forward, on each rank r with n_r = N_r * prod(spatial) values per channel:
    local   = [mean_r (C), invstd_r (C), n_r (1)]       invstd_r = 1/sqrt(var_r + eps), var_r biased
    rows    = all_gather(local)                          (2C+1 floats per rank, in rank order;
                                                          an empty rank sends zeros, its row is dropped)
    merge rows in rank order (Chan's parallel variance):
        v      = (1/invstd_j^2 - eps) * n_j              (the lossy round trip back to a variance)
        var_n += v + (avg - m_j)^2 * n * n_j / (n + n_j)
        avg    = (n * avg + n_j * m_j) / (n + n_j);   n += n_j
    invstd  = 1/sqrt(var_n/n + eps)
    y       = (x - avg) * invstd * w + b
    running_mean = (1-f) running_mean + f avg,   running_var = (1-f) running_var + f var_n/(n-1)

backward, with xmu = x - avg and Ntot = n (the global count):
    sum_dy, sum_dy_xmu = all_reduce_sum([sum(dy), sum(dy * xmu)])     (local sums, 2C floats)
    dx = (dy - sum_dy/Ntot - xmu * invstd^2 * sum_dy_xmu/Ntot) * w * invstd
    dw = local sum(dy * xmu) * invstd,   db = local sum(dy)           (NOT reduced: DDP does it)

So one training step costs each layer two messages: an all_gather of 2C+1 floats forward and an
all_reduce of 2C floats backward. It synchronises only when training with batch statistics and
the communicator is initialized with world_size > 1; otherwise it is exactly BatchNorm
(norms/batchnorm.py), and eval sends nothing.

Graph: the forward is one node (SyncBatchNormBackward) saving x, w and the global mean/invstd;
its backward is one node too (SyncBatchNormBackwardBackward, the fused expression above, which
makes the all_reduce). Double backward: the VJP of `composed_sync_backward`, the same backward
written with Tensor ops and a differentiable all_reduce (whose own backward is an all_reduce of
the gradients), so it works across ranks, provided every rank runs the same double backward.
"""
import math

from tinygrad_bn.autograd.function import Function
from tinygrad_bn.distributed.comm import Communicator, get_default_communicator
from tinygrad_bn.norms._base import restores_count_on_error
from tinygrad_bn.norms._base import NormSpec, check_batch_norm_args
from tinygrad_bn.norms._meanvar import _stats, gradients_per_input, vjp_of_composed
from tinygrad_bn.norms.batchnorm import BatchNorm1d, BatchNorm2d, _BatchNorm


def _grouping(shape):
    """(N, C, rest): the BN view of an (N, C, *) input."""
    return shape[0], shape[1], math.prod(shape[2:])


def merge_gathered_stats(rows, channels, eps):
    """(avg, var_n, n): rank-order merge of gathered [mean(C), invstd(C), count] rows, exactly
    as PyTorch's batch_norm_reduce_statistics_kernel (rows with count 0 are skipped). avg and
    var_n are None when every row is empty."""
    avg = var_n = None
    n = 0.0
    c = channels
    for row in rows:
        count = float(row[2 * c])
        if count < 1:  # an empty rank: its zeros only kept the collective complete
            continue
        m = row[:c]
        v = 1.0 / row[c:2 * c]
        v = (v * v - eps) * count
        factor = 1.0 / (n + count)
        if avg is None:
            avg, var_n = m * 0.0, m * 0.0
        var_n = var_n + v + (avg - m) * (avg - m) * n * count * factor
        avg = avg * (n * factor) + m * (count * factor)
        n += count
    return avg, var_n, n


class SyncBatchNormFunction(Function):
    """y = (x - avg) * invstd * w + b with avg, invstd over every rank's batch (module docstring).

    Inputs: x and, if present, w and b. Outputs: y, and - not differentiable, for the running
    statistics - the global mean and the unbiased global variance var_n/(n-1), each (C,)
    (empty arrays when every rank's batch is empty)."""

    node_name = "SyncBatchNormBackward"

    def forward(self, x, *params, comm, eps, has_weight, has_bias, momentum=None):
        xp = self.xp
        n, c, rest = _grouping(x.shape)
        xg = x.reshape(n, c, rest)
        if n * rest > 0:
            mean, _, invstd = _stats(xp, xg, (0, 2), True, eps)
            local = xp.concatenate([mean.reshape(c), invstd.reshape(c),
                                    xp.full((1,), n * rest, dtype=x.dtype)])
        else:  # still join the collective, so that the other ranks are not left waiting
            local = xp.zeros(2 * c + 1, dtype=x.dtype)
        rows = comm.all_gather(local)
        avg, var_n, total = merge_gathered_stats(rows, c, eps)
        if total == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got 1 value "
                             f"per channel over all {comm.world_size} ranks (input size "
                             f"{list(x.shape)} on rank {comm.rank})")
        if avg is None:  # every rank is empty: nothing to normalize, nothing to update
            avg, invstd = xp.zeros(c, dtype=x.dtype), xp.ones(c, dtype=x.dtype)
            mean_out = var_out = xp.empty(0, dtype=x.dtype)
        else:
            invstd = 1.0 / xp.sqrt(var_n / total + eps)
            mean_out, var_out = avg, var_n / (total - 1)
        self.total = total
        y = (xg - avg.reshape(1, c, 1)) * invstd.reshape(1, c, 1)
        y = y.reshape(x.shape)
        weight = params[0] if has_weight else None
        bias = params[-1] if has_bias else None
        shape = (1, c) + (1,) * (x.ndim - 2)
        if weight is not None:
            y *= weight.reshape(shape)
        if bias is not None:
            y += bias.reshape(shape)
        self.save_for_backward(x=x, mean=avg, invstd=invstd,
                               **({"weight": weight} if weight is not None else {}))
        self.mark_non_differentiable(mean_out, var_out)
        return y, mean_out, var_out

    def backward(self, dy, _d_mean, _d_var):
        has_weight, has_bias = self.attrs["has_weight"], self.attrs["has_bias"]
        x = self.saved("x")
        inputs = [dy, x] + ([self.saved("weight")] if has_weight else [])
        grads = list(SyncBatchNormGrad.apply(
            *inputs, mean=self.saved_array("mean"), invstd=self.saved_array("invstd"),
            total=self.total, comm=self.attrs["comm"], eps=self.attrs["eps"],
            input_grad=self.needs_input_grad[0], has_weight=has_weight, has_bias=has_bias))
        return gradients_per_input(self, grads)


class SyncBatchNormGrad(Function):
    """(dx, dw, db) of SyncBatchNormFunction, with the one all_reduce of the backward pass.

    Inputs: dy, x and (if affine) w. dx is only computed - and the all_reduce only made - when
    `input_grad` (as in PyTorch). Its own backward is the VJP of composed_sync_backward."""

    node_name = "SyncBatchNormBackwardBackward"

    def forward(self, dy, x, *maybe_weight, mean, invstd, total, comm, eps, input_grad,
                has_weight, has_bias):
        xp = self.xp
        weight = maybe_weight[0] if has_weight else None
        self.save_for_backward(dy=dy, x=x, **({"weight": weight} if weight is not None else {}))
        n, c, rest = _grouping(x.shape)
        dyg = dy.reshape(n, c, rest)
        xmu = x.reshape(n, c, rest) - mean.reshape(1, c, 1)
        sum_dy = dyg.sum(axis=(0, 2))
        sum_dy_xmu = (dyg * xmu).sum(axis=(0, 2))
        if input_grad:
            combined = comm.all_reduce(xp.concatenate([sum_dy, sum_dy_xmu]))
            norm = 1.0 / max(total, 1.0)
            inv = invstd.reshape(1, c, 1)
            mean_dy = (combined[:c] * norm).reshape(1, c, 1)
            factor_1 = inv * inv * (combined[c:] * norm).reshape(1, c, 1)
            factor_2 = inv * weight.reshape(1, c, 1) if weight is not None else inv
            dx = (dyg - mean_dy - xmu * factor_1) * factor_2
            dx = dx.reshape(x.shape)
        else:
            dx = xp.zeros_like(x)
        grads = [dx]
        if has_weight:
            grads.append((sum_dy_xmu * invstd).astype(weight.dtype, copy=False))
        if has_bias:
            grads.append(sum_dy)
        return tuple(grads)

    def backward(self, *gg):
        """VJP of the composed backward; its all_reduces meet the other ranks' in the same order."""
        return vjp_of_composed(self, composed_sync_backward, gg, comm=self.attrs["comm"],
                               eps=self.attrs["eps"], total=self.attrs["total"],
                               input_grad=self.attrs["input_grad"], has_bias=self.attrs["has_bias"])


class AllReduce(Function):
    """y = the sum of a over every rank (the same on all of them).

    The total loss is the sum of every rank's loss, and each rank's y feeds its own loss, so
    d(total)/d(a_r) = sum over ranks of each rank's dy: the backward is an all_reduce too."""

    node_name = "AllReduceBackward"

    def forward(self, a, comm):
        return comm.all_reduce(a)

    def backward(self, g):
        return AllReduce.apply(g, comm=self.attrs["comm"])


def composed_sync_backward(dy, x, weight=None, *, comm, eps, total, input_grad=True, has_bias=True):
    """(dx, dw, db) of SyncBatchNorm written with Tensor ops and differentiable all_reduces, the
    global statistics recomputed from x (two more all_reduces). Differentiable to any order;
    the test oracle of SyncBatchNormGrad. Every rank must call it together."""
    n, c, rest = _grouping(x.shape)
    total = max(total, 1.0)
    xg, dyg = x.reshape(n, c, rest), dy.reshape(n, c, rest)
    mean = AllReduce.apply(xg.sum((0, 2)), comm=comm) / total
    xmu = xg - mean.reshape(1, c, 1)
    var = AllReduce.apply((xmu * xmu).sum((0, 2)), comm=comm) / total
    invstd = (var + eps).rsqrt()
    inv = invstd.reshape(1, c, 1)
    sum_dy, sum_dy_xmu = dyg.sum((0, 2)), (dyg * xmu).sum((0, 2))
    dx = None
    if input_grad:
        from tinygrad_bn.ops.shape import cat
        combined = AllReduce.apply(cat([sum_dy, sum_dy_xmu]), comm=comm)
        mean_dy = (combined[:c] / total).reshape(1, c, 1)
        mean_dy_xmu = (combined[c:] / total).reshape(1, c, 1)
        scale = inv * weight.reshape(1, c, 1) if weight is not None else inv
        dx = ((dyg - mean_dy - xmu * inv * inv * mean_dy_xmu) * scale).reshape(x.shape)
    dw = sum_dy_xmu * invstd if weight is not None else None
    db = sum_dy if has_bias else None
    return dx, dw, db


def _ema(buffer, value, factor):
    """buffer = (1 - f) buffer + f value, in place, outside the graph (as PyTorch's kernel)."""
    if buffer is None:
        return
    data = buffer.data
    data *= (1 - factor)
    data += factor * value.astype(data.dtype, copy=False)
    buffer._version[0] += 1


def sync_batch_norm(input, running_mean, running_var, weight=None, bias=None, momentum=0.1, eps=1e-5,
                    process_group=None):
    """Training-mode batch norm with statistics over every rank of `process_group` (default: the
    default communicator), updating the running buffers (when given) with the global statistics.
    Always synchronises: SyncBatchNorm decides when to call it."""
    comm = process_group if process_group is not None else get_default_communicator()
    check_batch_norm_args("sync_batch_norm", input, running_mean, running_var, weight, bias, True, eps)
    params = [p for p in (weight, bias) if p is not None]
    y, mean, var = SyncBatchNormFunction.apply(input, *params, comm=comm, eps=eps,
                                               has_weight=weight is not None, has_bias=bias is not None,
                                               momentum=momentum)
    if mean.data.size:
        _ema(running_mean, mean.data, momentum)
        _ema(running_var, var.data, momentum)
    return y


class SyncBatchNorm(_BatchNorm):
    """BatchNorm over the union of every rank's batch (N, C, *); see the module docstring.

    `process_group` is the Communicator to synchronise over (default: the default communicator
    at call time). Synchronises only when training with batch statistics and the communicator is
    initialized with world_size > 1; otherwise it behaves exactly like BatchNorm."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 process_group=None, device=None, dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        if process_group is not None and not isinstance(process_group, Communicator):
            raise TypeError(f"SyncBatchNorm: process_group must be a tinygrad_bn.distributed."
                            f"Communicator or None, got {type(process_group).__name__}")
        self.process_group = process_group

    def _check_input_dim(self, x):
        if x.ndim < 2:
            raise ValueError(f"expected at least 2D input (got {x.ndim}D input)")

    def _check_non_zero_input_channels(self, x):
        if x.shape[1] == 0:
            raise ValueError("SyncBatchNorm number of input channels should be non-zero")

    @restores_count_on_error
    def forward(self, input):
        self._check_input_dim(input)
        self._check_non_zero_input_channels(input)
        comm = self.process_group if self.process_group is not None else get_default_communicator()
        use_batch_stats = not self.frozen_stats and (
            self.training or (self.running_mean is None and self.running_var is None))
        need_sync = use_batch_stats and self.training and comm.initialized and comm.world_size > 1
        if not need_sync:  # exactly BatchNorm (no messages); the node is named SyncBatchNormBackward
            return super().forward(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.data += 1  # each rank counts its own steps
            self.num_batches_tracked._version[0] += 1
            if self.momentum is None:
                factor = 1.0 / int(self.num_batches_tracked.item())
        tracked = self.track_running_stats
        return sync_batch_norm(input, self.running_mean if tracked else None,
                               self.running_var if tracked else None, self.weight, self.bias,
                               factor, self.eps, comm)

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """Replace every BatchNorm1d/BatchNorm2d/SyncBatchNorm in `module` (recursively, or
        module itself) by a SyncBatchNorm that shares its parameters and buffers (the same
        Tensor objects, as in PyTorch, so an optimizer built before still updates them) and its
        training flag. Other BatchNorm-family layers (GhostBatchNorm, BatchRenorm) are kept:
        their statistics mean something else. Returns the converted module."""
        output = module
        if isinstance(module, (BatchNorm1d, BatchNorm2d, SyncBatchNorm)):
            output = cls(module.num_features, module.eps, module.momentum, module.affine,
                         module.track_running_stats, process_group, bias=module.bias is not None)
            if module.affine:
                output.weight = module.weight
                if module.bias is not None:
                    output.bias = module.bias
            output.running_mean = module.running_mean
            output.running_var = module.running_var
            output.num_batches_tracked = module.num_batches_tracked
            output.frozen_stats = module.frozen_stats
            output.training = module.training
        for name, child in module.named_children():
            output.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return output


SPECS = [
    NormSpec(name="SyncBatchNorm", make=lambda c: SyncBatchNorm(c), input_shape=lambda c: (3, c, 2, 2),
             make_for_conv=lambda c, hw: SyncBatchNorm(c),
             torch_make=lambda torch, c: torch.nn.SyncBatchNorm(c),
             description="BatchNorm with statistics over every rank's batch (single process here: "
                         "exactly BatchNorm; multi-rank in tests/norms/test_syncbn.py)"),
]
