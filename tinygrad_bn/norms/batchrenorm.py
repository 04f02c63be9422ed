"""Batch Renormalization (Ioffe 2017, arXiv 1702.03275): BatchRenorm1d and BatchRenorm2d.

Chainer's variant (chainer.functions.batch_renormalization, v7), which tracks the running
*variance* with Bessel's correction, like BatchNorm, rather than the paper's running sigma.
Per channel, in training, over the M = N * prod(spatial) values of the batch:

    mean_B, var_B (biased),  std = sqrt(var_B + eps),  sigma = sqrt(running_var + eps)
    r = clip(std / sigma, 1/rmax, rmax)                    } from the running statistics as they
    d = clip((mean_B - running_mean) / sigma, -dmax, dmax) } were BEFORE this step; constants
    x_hat = (x - mean_B) / std
    y = w * (x_hat * r + d) + b
    then running_mean = (1-f) running_mean + f mean_B,  running_var = (1-f) running_var + f var_B M/(M-1)

(f = momentum, or 1/num_batches_tracked for momentum=None.) Unclipped, x_hat * r + d equals
(x - running_mean)/sigma: r and d correct the batch statistics towards the running ones that eval
uses, y = w (x - running_mean)/sqrt(running_var + eps) + b (BatchNorm eval). With rmax=1, dmax=0,
r=1 and d=0: exactly BatchNorm, outputs, gradients and running statistics alike.

Defaults follow BatchNorm (eps=1e-5, momentum=0.1), so BatchRenorm is a drop-in replacement;
Chainer's are eps=2e-5 and decay=0.9 (= momentum 0.1). Running statistics are always tracked.

rmax and dmax are numbers or callables of the step count (num_batches_tracked before this
step: 0 for the first batch); `renorm_schedule()` gives the paper's linear warm-up
(rmax 1 -> 3 over steps 5k..40k, dmax 0 -> 5 over 5k..25k).

Backward, with r and d constants (stop_gradient) and means over the M values (Chainer's):

    g = dy * w * r
    dx = invstd * (g - mean(g) - x_hat * mean(g * x_hat))
       = (r w / std) * (dy - (x_hat * sum(dy x_hat) + sum(dy)) / M)          (Chainer's form)
    dw = r * sum(dy * x_hat) + d * sum(dy),   db = sum(dy)

That is BatchNorm's backward with weight w*r, and it is how the composed version (for double
backward) is written: the shared kernel's composed backward with weight w*r.

Graph: one node (BatchRenorm2dBackward) saving x, w and per channel mean, invstd, r, d; its
backward is one node (the fused expression above) whose own backward is the VJP of the composed
version. Note that gradcheck only agrees with this backward where r and d are locally constant
(clipped, or rmax=1/dmax=0): the stop-gradient is the algorithm, not an approximation.
"""
import math
import numbers

import numpy as np

from tinygrad_bn.autograd.function import Function
from tinygrad_bn.norms._base import restores_count_on_error
from tinygrad_bn.norms._base import (NormSpec, check_batch_norm_args, check_more_than_one_value,
                                     reference_affine, reference_batch_norm_train, reference_ema,
                                     update_running_stats)
from tinygrad_bn.norms._meanvar import _stats, composed_backward, gradients_per_input, vjp_of_composed
from tinygrad_bn.norms.batchnorm import BatchNorm1d, BatchNorm2d, _BatchNorm, batch_norm
from tinygrad_bn.tensor import Tensor


class LinearRamp:
    """step -> `start` until `begin_step`, then linearly to `end` at `end_step`, `end` after."""

    def __init__(self, start, end, begin_step, end_step):
        if end_step < begin_step:
            raise ValueError(f"LinearRamp: end_step ({end_step}) must not be before begin_step "
                             f"({begin_step})")
        self.start, self.end = float(start), float(end)
        self.begin_step, self.end_step = begin_step, end_step

    def __call__(self, step):
        if step <= self.begin_step:
            return self.start
        if step >= self.end_step:
            return self.end
        t = (step - self.begin_step) / (self.end_step - self.begin_step)
        return self.start + (self.end - self.start) * t

    def __repr__(self):
        return (f"LinearRamp({self.start:g}, {self.end:g}, begin_step={self.begin_step}, "
                f"end_step={self.end_step})")


def renorm_schedule(rmax=3.0, dmax=5.0, warmup_steps=5000, rmax_steps=40000, dmax_steps=25000):
    """The paper's schedule as (rmax, dmax) callables: plain BatchNorm (rmax=1, dmax=0) for the
    first `warmup_steps`, then linear ramps reaching rmax at `rmax_steps` and dmax at
    `dmax_steps`. Usage: `rmax, dmax = renorm_schedule(); BatchRenorm2d(C, rmax=rmax, dmax=dmax)`."""
    return (LinearRamp(1.0, rmax, warmup_steps, rmax_steps),
            LinearRamp(0.0, dmax, warmup_steps, dmax_steps))


def _check_limits(rmax, dmax, where):
    if not isinstance(rmax, numbers.Real) or rmax < 1:
        raise ValueError(f"{where}: rmax must be a number >= 1, got {rmax!r}")
    if not isinstance(dmax, numbers.Real) or dmax < 0:
        raise ValueError(f"{where}: dmax must be a number >= 0, got {dmax!r}")


class BatchRenormalize(Function):
    """y = w * ((x - mean_B) * invstd * r + d) + b, r and d from the running statistics.

    Inputs: x, and optionally w and b. Outputs: y and - not differentiable - the batch mean and
    biased variance, r and d, each (C,)."""

    def forward(self, x, *params, running_mean, running_var, rmax, dmax, eps, has_weight, has_bias,
                node_name=None, **shown_attrs):
        xp = self.xp
        n, c, rest = x.shape[0], x.shape[1], math.prod(x.shape[2:])
        xg = x.reshape(n, c, rest)
        mean, var, invstd = _stats(xp, xg, (0, 2), True, eps)                 # (1, C, 1)
        sigma = xp.sqrt(running_var.reshape(1, c, 1) + eps)
        r = xp.clip(xp.sqrt(var + eps) / sigma, 1.0 / rmax, rmax).astype(x.dtype, copy=False)
        d = xp.clip((mean - running_mean.reshape(1, c, 1)) / sigma, -dmax, dmax).astype(x.dtype, copy=False)
        y = xg - mean
        y *= invstd * r
        y += d
        y = y.reshape(x.shape)
        shape = (1, c) + (1,) * (x.ndim - 2)
        weight = params[0] if has_weight else None
        bias = params[-1] if has_bias else None
        if weight is not None:
            y *= weight.reshape(shape)
        if bias is not None:
            y += bias.reshape(shape)
        self.save_for_backward(x=x, mean=mean, invstd=invstd, r=r, d=d,
                               **({"weight": weight} if weight is not None else {}))
        outs = (mean.reshape(c), var.reshape(c).astype(x.dtype, copy=False), r.reshape(c), d.reshape(c))
        self.mark_non_differentiable(*outs)
        return (y,) + outs

    @property
    def name(self):
        return self.attrs.get("node_name") or "BatchRenormalizeBackward"

    def backward(self, dy, *_unused):
        has_weight, has_bias = self.attrs["has_weight"], self.attrs["has_bias"]
        x = self.saved("x")
        inputs = [dy, x] + ([self.saved("weight")] if has_weight else [])
        grads = list(BatchRenormBackward.apply(
            *inputs, mean=self.saved_array("mean"), invstd=self.saved_array("invstd"),
            r=self.saved_array("r"), d=self.saved_array("d"), eps=self.attrs["eps"],
            has_weight=has_weight, has_bias=has_bias))
        return gradients_per_input(self, grads)


class BatchRenormBackward(Function):
    """(dx, dw, db) of BatchRenormalize as one fused array expression (module docstring).

    Inputs: dy, x and (if affine) w. Its own backward is the VJP of composed_renorm_backward."""

    node_name = "BatchRenormBackwardBackward"

    def forward(self, dy, x, *maybe_weight, mean, invstd, r, d, eps, has_weight, has_bias):
        weight = maybe_weight[0] if has_weight else None
        self.save_for_backward(dy=dy, x=x, **({"weight": weight} if weight is not None else {}))
        n, c, rest = x.shape[0], x.shape[1], math.prod(x.shape[2:])
        xg, dyg = x.reshape(n, c, rest), dy.reshape(n, c, rest)
        x_hat = (xg - mean) * invstd
        scale = r * weight.reshape(1, c, 1) if weight is not None else r
        g = dyg * scale
        dx = g - x_hat * (g * x_hat).mean(axis=(0, 2), keepdims=True)
        dx -= g.mean(axis=(0, 2), keepdims=True)
        dx *= invstd
        grads = [dx.reshape(x.shape)]
        sum_dy = dyg.sum(axis=(0, 2))
        if has_weight:
            dw = r.reshape(c) * (dyg * x_hat).sum(axis=(0, 2)) + d.reshape(c) * sum_dy
            grads.append(dw.astype(weight.dtype, copy=False))
        if has_bias:
            grads.append(sum_dy)
        return tuple(grads)

    def backward(self, *gg):
        """VJP of the composed (primitive-op) backward: second derivatives to any order."""
        return vjp_of_composed(self, composed_renorm_backward, gg, r=self.attrs["r"],
                               d=self.attrs["d"], eps=self.attrs["eps"], has_bias=self.attrs["has_bias"])


def composed_renorm_backward(dy, x, weight=None, *, r, d, eps, has_bias=True):
    """(dx, dw, db) of BatchRenormalize with primitive Tensor ops: BatchNorm's composed backward
    with weight w*r, then dw = r * sum(dy x_hat) + d * sum(dy). r, d: constant (1, C, 1) arrays.
    The test oracle of BatchRenormBackward; differentiable to any order."""
    n, c = x.shape[0], x.shape[1]
    r_t, d_t = Tensor._make(r.reshape(c)), Tensor._make(d.reshape(c))
    scale = weight * r_t if weight is not None else r_t
    dx, sum_dy_xhat, sum_dy = composed_backward(
        dy, x, scale, group_shape=(n, c, math.prod(x.shape[2:])), axes=(0, 2),
        param_shape=(1, c) + (1,) * (x.ndim - 2), eps=eps, center=True, has_bias=True)
    dw = sum_dy_xhat * r_t + sum_dy * d_t if weight is not None else None
    return dx, dw, (sum_dy if has_bias else None)


def batch_renorm(input, running_mean, running_var, weight=None, bias=None, training=False, rmax=1.0,
                 dmax=0.0, momentum=0.1, eps=1e-5, node_name="BatchRenormBackward", return_rd=False):
    """Functional batch renormalization. With `training`: r and d from the running buffers, then
    one EMA update of them (factor `momentum`, a number); otherwise BatchNorm eval with them.
    With return_rd, returns (y, r, d) (r and d as (C,) arrays; None in eval)."""
    if running_mean is None or running_var is None:
        raise RuntimeError(f"{node_name.replace('Backward', '')}: batch renormalization needs the "
                           f"running statistics, but running_mean/running_var is None")
    if not training:
        y = batch_norm(input, running_mean, running_var, weight, bias, False, 0.0, eps, node_name=node_name)
        return (y, None, None) if return_rd else y
    opname = node_name.replace("Backward", "")
    check_batch_norm_args(opname, input, running_mean, running_var, weight, bias, True, eps)
    _check_limits(rmax, dmax, opname)
    check_more_than_one_value(input.shape, who=opname)
    if input.numel() == 0:  # as BatchNorm: nothing to normalize, the statistics stay
        return (input * 1.0, None, None) if return_rd else input * 1.0
    params = [p for p in (weight, bias) if p is not None]
    dtype = input.dtype
    y, mean, var, r, d = BatchRenormalize.apply(
        input, *params, running_mean=running_mean.data.astype(dtype),
        running_var=running_var.data.astype(dtype),
        rmax=float(rmax), dmax=float(dmax), eps=eps, has_weight=weight is not None,
        has_bias=bias is not None, node_name=node_name, momentum=momentum)
    count = input.numel() // input.shape[1]
    update_running_stats(running_mean, running_var, mean.data, var.data, count, momentum)
    return (y, r.data, d.data) if return_rd else y


class _BatchRenorm(_BatchNorm):
    """Shared by BatchRenorm1d/2d: BatchNorm's parameters, buffers (always tracked: r and d need
    them) and state_dict, plus rmax and dmax (numbers, or callables of the step count)."""

    def __init__(self, num_features, rmax=1.0, dmax=0.0, eps=1e-5, momentum=0.1, affine=True,
                 device=None, dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, True, device, dtype, bias=bias)
        name = type(self).__name__
        if not callable(rmax) or not callable(dmax):
            _check_limits(rmax if not callable(rmax) else 1.0, dmax if not callable(dmax) else 0.0, name)
        self.rmax = rmax
        self.dmax = dmax
        #: r and d of the last training step, (C,) arrays (for monitoring how much is corrected)
        self.last_r = self.last_d = None

    def clipping(self, step=None):
        """(rmax, dmax) at `step` (default: the current num_batches_tracked)."""
        if step is None:
            step = int(self.num_batches_tracked.item()) if self.num_batches_tracked is not None else 0
        rmax = self.rmax(step) if callable(self.rmax) else self.rmax
        dmax = self.dmax(step) if callable(self.dmax) else self.dmax
        _check_limits(rmax, dmax, f"{type(self).__name__} at step {step}")
        return rmax, dmax

    @restores_count_on_error
    def forward(self, input):
        self._check_input_dim(input)
        name = f"{type(self).__name__}Backward"
        if not self.training or self.frozen_stats:
            return batch_renorm(input, self.running_mean, self.running_var, self.weight, self.bias,
                                False, eps=self.eps, node_name=name)
        rmax, dmax = self.clipping()  # the schedule sees the steps taken before this one
        factor = self.momentum if self.momentum is not None else 0.0
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.data += 1
            self.num_batches_tracked._version[0] += 1
            if self.momentum is None:
                factor = 1.0 / int(self.num_batches_tracked.item())
        y, self.last_r, self.last_d = batch_renorm(
            input, self.running_mean, self.running_var, self.weight, self.bias, True, rmax, dmax,
            factor, self.eps, node_name=name, return_rd=True)
        return y

    def extra_repr(self):
        return (f"{self.num_features}, rmax={self.rmax!r}, dmax={self.dmax!r}, eps={self.eps}, "
                f"momentum={self.momentum}, affine={self.affine}, bias={self.bias is not None}")


class BatchRenorm1d(_BatchRenorm):
    """Batch renormalization over (N, C) or (N, C, L) inputs; see the module docstring."""

    _check_input_dim = BatchNorm1d._check_input_dim  # the same inputs and messages as BatchNorm1d


class BatchRenorm2d(_BatchRenorm):
    """Batch renormalization over (N, C, H, W) inputs; see the module docstring."""

    _check_input_dim = BatchNorm2d._check_input_dim  # the same inputs and messages as BatchNorm2d


def reference(layer, x, params, buffers, training):
    """The module docstring's equations (Ioffe 2017, Algorithm 1, Chainer's running variance) in
    plain NumPy: (y, buffers after the call)."""
    buffers = dict(buffers)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    rm, rv = buffers["running_mean"], buffers["running_var"]
    sigma = np.sqrt(rv + layer.eps)
    if not training:
        return reference_affine(layer, (x - rm.reshape(shape)) / sigma.reshape(shape), params), buffers
    rmax, dmax = layer.clipping(int(buffers["num_batches_tracked"]))
    x_hat, mean, var, count = reference_batch_norm_train(x, layer.eps)
    r = np.clip(np.sqrt(var + layer.eps) / sigma, 1 / rmax, rmax)
    d = np.clip((mean - rm) / sigma, -dmax, dmax)
    reference_ema(buffers, mean, var, count, layer.momentum)
    return reference_affine(layer, x_hat * r.reshape(shape) + d.reshape(shape), params), buffers


SPECS = [
    # Small limits, so that r and d sit at their clip bounds for the matrix's data: there the
    # stop-gradient backward is the true derivative and gradcheck applies (test_batchrenorm.py
    # checks that the bounds are engaged with a margin).
    NormSpec(name="BatchRenorm2d", make=lambda c: BatchRenorm2d(c, rmax=1.05, dmax=0.05),
             input_shape=lambda c: (3, c, 2, 2), reference=reference,
             make_for_conv=lambda c, hw: BatchRenorm2d(c),
             description="BatchNorm corrected towards the running statistics by clipped, "
                         "stop-gradient r and d (Chainer's variant); BatchNorm eval"),
    NormSpec(name="BatchRenorm1d", make=lambda c: BatchRenorm1d(c, rmax=1.05, dmax=0.05),
             input_shape=lambda c: (5, c, 2), reference=reference,
             description="batch renormalization for (N, C) and (N, C, L)"),
]
