"""Ghost batch normalization (Hoffer, Hubara & Soudry 2017, arXiv 1705.08741):
GhostBatchNorm1d and GhostBatchNorm2d.

The batch is cut into contiguous ghost batches of `virtual_batch_size` samples (torch's
`x.split(vbs)`), and each ghost batch j is batch-normalized with its own statistics, sharing w, b:

    y_j = (x_j - mean_j) / sqrt(var_j + eps) * w + b          (var_j biased, per channel)

Running statistics get one BatchNorm EMA step per ghost batch, in order (the paper's algorithm):
num_batches_tracked += number of ghost batches, and for each j

    running_mean = (1 - f) running_mean + f mean_j
    running_var  = (1 - f) running_var  + f var_j M_j/(M_j - 1)        (M_j values per channel)

(f = momentum, or 1/num_batches_tracked for momentum=None). Eval is plain BatchNorm eval with
the running statistics.

Remainder rule: when virtual_batch_size does not divide N, the last ghost batch is short.
  remainder="auto" (default)  keep it as its own ghost batch, unless it would hold a single value
                              per channel (e.g. one sample of a (N, C) input): then it is merged
                              into the previous ghost batch, since its statistics do not exist
  remainder="separate"        always keep it (exactly torch's split; a one-value remainder raises
                              BatchNorm's "Expected more than 1 value per channel" error)
  remainder="merge"           always merge it into the previous ghost batch (so every ghost batch
                              has between vbs and 2 vbs - 1 samples)
A batch smaller than virtual_batch_size is one ghost batch (plain BatchNorm).

Backward: BatchNorm's backward within each ghost batch (means over that ghost batch's values),

    dx_j = invstd_j * (g_j - mean_j(g) - x_hat_j * mean_j(g * x_hat)),   g = dy * w
    dw = sum(dy * x_hat) over everything,   db = sum(dy)

Graph: the whole layer is ONE node (GhostBatchNorm2dBackward): the ghost batches are a grouped
view (k, vbs, C, rest) of x with statistics over axes (1, 3) - one vectorized block when vbs
divides N, plus one more block for a remainder of another size. It saves x, w and the per-ghost-
batch mean and invstd (k, C). Its backward is one node too (the fused expression above); double
backward is the VJP of the shared kernel's composed backward applied block by block.
"""
import math

import numpy as np

from tinygrad_bn.autograd.function import Function
from tinygrad_bn.norms._base import restores_count_on_error
from tinygrad_bn.norms._base import (NormSpec, check_batch_norm_args, check_more_than_one_value,
                                     reference_affine, reference_batch_norm_train, reference_ema,
                                     update_running_stats)
from tinygrad_bn.norms._meanvar import _stats, composed_backward, gradients_per_input, vjp_of_composed
from tinygrad_bn.norms.batchnorm import BatchNorm1d, BatchNorm2d, _BatchNorm, batch_norm

REMAINDER_RULES = ("auto", "separate", "merge")


def ghost_batch_sizes(n, virtual_batch_size, values_per_sample=1, remainder="auto"):
    """Sizes of the contiguous ghost batches of an n-sample batch (see the remainder rule)."""
    if isinstance(virtual_batch_size, bool) or not isinstance(virtual_batch_size, int) \
            or virtual_batch_size < 1:
        raise ValueError(f"ghost batch norm: virtual_batch_size must be a positive int, got "
                         f"{virtual_batch_size!r}")
    if remainder not in REMAINDER_RULES:
        raise ValueError(f"ghost batch norm: remainder must be one of "
                         f"{', '.join(repr(r) for r in REMAINDER_RULES)}, got {remainder!r}")
    if n <= virtual_batch_size:
        return [n]
    sizes = [virtual_batch_size] * (n // virtual_batch_size)
    r = n % virtual_batch_size
    if r:
        if remainder == "merge" or (remainder == "auto" and r * values_per_sample == 1):
            sizes[-1] += r
        else:
            sizes.append(r)
    return sizes


def _blocks(sizes):
    """Runs of equal ghost batch sizes as (first sample, number of ghost batches, size): at most
    two blocks, the full ghost batches and the remainder."""
    blocks, start = [], 0
    for s in sizes:
        if blocks and blocks[-1][2] == s:
            first, k, _ = blocks[-1]
            blocks[-1] = (first, k + 1, s)
        else:
            blocks.append((start, 1, s))
        start += s
    return tuple(blocks)


def _param_shape(ndim, c):
    return (1, c) + (1,) * (ndim - 2)


class GhostNormalize(Function):
    """y = (x - mean_j) * invstd_j * w + b, with statistics per ghost batch j (module docstring).

    Inputs: x, and optionally w and b. `blocks` = ((first sample, k ghost batches, size), ...).
    Outputs: y and, not differentiable, the per-ghost-batch mean and biased variance, (k, C)."""

    def forward(self, x, *params, blocks, eps, has_weight, has_bias, node_name=None, **shown_attrs):
        xp = self.xp
        n, c, rest = x.shape[0], x.shape[1], math.prod(x.shape[2:])
        xg = x.reshape(n, c, rest)
        y = xp.empty(xg.shape, dtype=x.dtype)
        means, variances, invstds = [], [], []
        for first, k, size in blocks:
            stop = first + k * size
            xb = xg[first:stop].reshape(k, size, c, rest)
            mean, var, invstd = _stats(xp, xb, (1, 3), True, eps)          # (k, 1, C, 1)
            yb = xb - mean
            yb *= invstd
            y[first:stop] = yb.reshape(k * size, c, rest)
            means.append(mean.reshape(k, c))
            variances.append(var.reshape(k, c).astype(x.dtype, copy=False))
            invstds.append(invstd.reshape(k, c))
        chunk_mean, chunk_var = xp.concatenate(means), xp.concatenate(variances)
        chunk_invstd = xp.concatenate(invstds)
        y = y.reshape(x.shape)
        weight = params[0] if has_weight else None
        bias = params[-1] if has_bias else None
        if weight is not None:
            y *= weight.reshape(_param_shape(x.ndim, c))
        if bias is not None:
            y += bias.reshape(_param_shape(x.ndim, c))
        self.save_for_backward(x=x, chunk_mean=chunk_mean, chunk_invstd=chunk_invstd,
                               **({"weight": weight} if weight is not None else {}))
        self.mark_non_differentiable(chunk_mean, chunk_var)
        return y, chunk_mean, chunk_var

    @property
    def name(self):
        return self.attrs.get("node_name") or "GhostNormalizeBackward"

    def backward(self, dy, _d_mean, _d_var):
        has_weight, has_bias = self.attrs["has_weight"], self.attrs["has_bias"]
        x = self.saved("x")
        inputs = [dy, x] + ([self.saved("weight")] if has_weight else [])
        grads = list(GhostNormalizeBackward.apply(
            *inputs, chunk_mean=self.saved_array("chunk_mean"),
            chunk_invstd=self.saved_array("chunk_invstd"), blocks=self.attrs["blocks"],
            eps=self.attrs["eps"], has_weight=has_weight, has_bias=has_bias))
        return gradients_per_input(self, grads)


class GhostNormalizeBackward(Function):
    """(dx, dw, db) of GhostNormalize as one fused array expression, block by block.

    Inputs: dy, x and (if affine) w. Its own backward is the VJP of composed_ghost_backward."""

    node_name = "GhostNormalizeBackwardBackward"

    def forward(self, dy, x, *maybe_weight, chunk_mean, chunk_invstd, blocks, eps, has_weight, has_bias):
        xp = self.xp
        weight = maybe_weight[0] if has_weight else None
        self.save_for_backward(dy=dy, x=x, **({"weight": weight} if weight is not None else {}))
        n, c, rest = x.shape[0], x.shape[1], math.prod(x.shape[2:])
        xg, dyg = x.reshape(n, c, rest), dy.reshape(n, c, rest)
        dx = xp.empty(xg.shape, dtype=x.dtype)
        dw = xp.zeros(c, dtype=x.dtype)
        j = 0
        for first, k, size in blocks:
            stop = first + k * size
            mean = chunk_mean[j:j + k].reshape(k, 1, c, 1)
            invstd = chunk_invstd[j:j + k].reshape(k, 1, c, 1)
            j += k
            x_hat = (xg[first:stop].reshape(k, size, c, rest) - mean) * invstd
            dyb = dyg[first:stop].reshape(k, size, c, rest)
            g_hat = dyb * weight.reshape(1, 1, c, 1) if weight is not None else dyb
            dxb = g_hat - x_hat * (g_hat * x_hat).mean(axis=(1, 3), keepdims=True)
            dxb -= g_hat.mean(axis=(1, 3), keepdims=True)
            dxb *= invstd
            dx[first:stop] = dxb.reshape(k * size, c, rest)
            if has_weight:
                dw += (dyb * x_hat).sum(axis=(0, 1, 3))
        grads = [dx.reshape(x.shape)]
        if has_weight:
            grads.append(dw.astype(weight.dtype, copy=False))
        if has_bias:
            grads.append(dyg.sum(axis=(0, 2)))
        return tuple(grads)

    def backward(self, *gg):
        """VJP of the composed (primitive-op) backward: second derivatives to any order."""
        return vjp_of_composed(self, composed_ghost_backward, gg, blocks=self.attrs["blocks"],
                               eps=self.attrs["eps"], has_bias=self.attrs["has_bias"])


def composed_ghost_backward(dy, x, weight=None, *, blocks, eps, has_bias=True):
    """(dx, dw, db) of GhostNormalize with primitive Tensor ops: the shared kernel's composed
    backward on each block's grouped view, joined. The test oracle of GhostNormalizeBackward."""
    from tinygrad_bn.ops.shape import cat
    c = x.shape[1]
    rest = math.prod(x.shape[2:])
    dxs, dw, db = [], None, None
    for first, k, size in blocks:
        stop = first + k * size
        dxb, dwb, dbb = composed_backward(
            dy[first:stop], x[first:stop], weight, group_shape=(k, size, c, rest), axes=(1, 3),
            param_shape=_param_shape(x.ndim, c), eps=eps, center=True, has_bias=has_bias)
        dxs.append(dxb)
        dw = dwb if dw is None else dw + dwb
        db = dbb if db is None else db + dbb
    return (dxs[0] if len(dxs) == 1 else cat(dxs)), dw, db


def ghost_batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
                     momentum=0.1, eps=1e-5, virtual_batch_size=128, remainder="auto",
                     node_name="GhostBatchNormBackward"):
    """Functional ghost batch norm. With `training`: statistics per ghost batch, and one EMA
    step (factor `momentum`, a number) of the running buffers per ghost batch when they are
    given; the caller counts num_batches_tracked (the modules add the number of ghost batches,
    `len(ghost_batch_sizes(...))`). Otherwise F.batch_norm with the running statistics."""
    if not training:
        return batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps,
                          node_name=node_name)
    check_batch_norm_args(node_name.replace("Backward", ""), input, running_mean, running_var,
                          weight, bias, True, eps)
    if momentum is None and (running_mean is not None or running_var is not None):
        raise ValueError("ghost_batch_norm: momentum=None (cumulative average) needs the step "
                         "count; use GhostBatchNorm1d/2d, or pass a number")
    y, chunk_mean, chunk_var, sizes = _ghost_forward(input, weight, bias, eps, virtual_batch_size,
                                                     remainder, node_name, momentum)
    if chunk_mean is not None:
        rest = math.prod(input.shape[2:])
        for j, size in enumerate(sizes):
            update_running_stats(running_mean, running_var, chunk_mean[j], chunk_var[j],
                                 size * rest, momentum)
    return y


def _ghost_forward(input, weight, bias, eps, virtual_batch_size, remainder, node_name, momentum):
    """(y, per-ghost-batch mean (k, C), var (k, C), sizes); stats None for an empty batch."""
    shape = input.shape
    rest = math.prod(shape[2:])
    sizes = ghost_batch_sizes(shape[0], virtual_batch_size, rest, remainder)
    for size in sizes:
        check_more_than_one_value((size,) + tuple(shape[1:]), who=node_name.replace("Backward", ""))
    if input.numel() == 0:
        return input * 1.0, None, None, sizes
    params = [p for p in (weight, bias) if p is not None]
    y, chunk_mean, chunk_var = GhostNormalize.apply(
        input, *params, blocks=_blocks(sizes), eps=eps, has_weight=weight is not None,
        has_bias=bias is not None, node_name=node_name, momentum=momentum,
        virtual_batch_size=virtual_batch_size)
    return y, chunk_mean.data, chunk_var.data, sizes


class _GhostBatchNorm(_BatchNorm):
    """Shared by GhostBatchNorm1d/2d: BatchNorm's parameters, buffers and state_dict, plus the
    ghost batch size and the remainder rule."""

    def __init__(self, num_features, virtual_batch_size=128, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, remainder="auto", device=None, dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        if isinstance(virtual_batch_size, bool) or not isinstance(virtual_batch_size, int) \
                or virtual_batch_size < 1:
            raise ValueError(f"{type(self).__name__}: virtual_batch_size must be a positive int, "
                             f"got {virtual_batch_size!r}")
        if remainder not in REMAINDER_RULES:
            raise ValueError(f"{type(self).__name__}: remainder must be one of "
                             f"{', '.join(repr(r) for r in REMAINDER_RULES)}, got {remainder!r}")
        self.virtual_batch_size = virtual_batch_size
        self.remainder = remainder

    @restores_count_on_error
    def forward(self, input):
        self._check_input_dim(input)
        name = f"{type(self).__name__}Backward"
        use_batch_stats = not self.frozen_stats and (
            self.training or (self.running_mean is None and self.running_var is None))
        if not use_batch_stats:  # eval (or frozen statistics): plain BatchNorm eval
            return batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                              False, 0.0, self.eps, node_name=name)
        updates = self.training and self.track_running_stats and not self.frozen_stats
        check_batch_norm_args(type(self).__name__, input, self.running_mean if updates else None,
                              self.running_var if updates else None, self.weight, self.bias,
                              True, self.eps)
        y, chunk_mean, chunk_var, sizes = _ghost_forward(
            input, self.weight, self.bias, self.eps, self.virtual_batch_size, self.remainder, name,
            self.momentum)
        if updates:
            rest = math.prod(input.shape[2:])
            for j, size in enumerate(sizes):  # one BatchNorm EMA step per ghost batch, in order
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.data += 1
                    self.num_batches_tracked._version[0] += 1
                factor = self.momentum if self.momentum is not None else \
                    1.0 / int(self.num_batches_tracked.item())
                if chunk_mean is not None:
                    update_running_stats(self.running_mean, self.running_var, chunk_mean[j],
                                         chunk_var[j], size * rest, factor)
        return y

    def ghost_batch_sizes(self, n, values_per_sample=1):
        """The ghost batch sizes this layer uses for an n-sample batch."""
        return ghost_batch_sizes(n, self.virtual_batch_size, values_per_sample, self.remainder)

    def extra_repr(self):
        return (f"{self.num_features}, virtual_batch_size={self.virtual_batch_size}, eps={self.eps}, "
                f"momentum={self.momentum}, affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}, remainder={self.remainder!r}")


class GhostBatchNorm1d(_GhostBatchNorm):
    """Ghost batch normalization over (N, C) or (N, C, L) inputs; see the module docstring."""

    _check_input_dim = BatchNorm1d._check_input_dim  # the same inputs and messages as BatchNorm1d


class GhostBatchNorm2d(_GhostBatchNorm):
    """Ghost batch normalization over (N, C, H, W) inputs; see the module docstring."""

    _check_input_dim = BatchNorm2d._check_input_dim  # the same inputs and messages as BatchNorm2d


def reference(layer, x, params, buffers, training):
    """The module docstring's equations (Hoffer et al. 2017, Algorithm 1) in plain NumPy: BatchNorm
    per contiguous ghost batch and one EMA step per ghost batch; (y, buffers after the call)."""
    buffers = dict(buffers)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if not training:
        rm, rv = buffers["running_mean"].reshape(shape), buffers["running_var"].reshape(shape)
        return reference_affine(layer, (x - rm) / (rv + layer.eps) ** 0.5, params), buffers
    parts, start = [], 0
    for size in layer.ghost_batch_sizes(x.shape[0], math.prod(x.shape[2:])):
        x_hat, mean, var, count = reference_batch_norm_train(x[start:start + size], layer.eps)
        reference_ema(buffers, mean, var, count, layer.momentum)
        parts.append(x_hat)
        start += size
    return reference_affine(layer, np.concatenate(parts), params), buffers


SPECS = [
    # 5 samples in ghost batches of 2: two full ones (a grouped block) and a one-sample
    # remainder with 2 values per channel, kept as a third ghost batch (a second block)
    NormSpec(name="GhostBatchNorm2d", make=lambda c: GhostBatchNorm2d(c, virtual_batch_size=2),
             input_shape=lambda c: (5, c, 1, 2), reference=reference,
             make_for_conv=lambda c, hw: GhostBatchNorm2d(c, virtual_batch_size=32),
             description="BatchNorm per contiguous ghost batch of virtual_batch_size samples; "
                         "one EMA step per ghost batch; BatchNorm eval"),
    # (5, C) in ghost batches of 2: the one-value remainder is merged (sizes 2 and 3)
    NormSpec(name="GhostBatchNorm1d", make=lambda c: GhostBatchNorm1d(c, virtual_batch_size=2, momentum=None),
             input_shape=lambda c: (5, c), reference=reference,
             description="ghost batches of (N, C) input; a one-value remainder merges into the "
                         "previous ghost batch; cumulative running average"),
]
