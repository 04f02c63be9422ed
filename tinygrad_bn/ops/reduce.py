"""Reductions: sum, mean, var, std, max/min/amax/amin, logsumexp (with dim, keepdim, correction).

Every backward first puts the reduced axes back as size-1 dims (`_unreduce`) and broadcasts the
gradient over them, so one helper serves every reduction."""
import builtins
import collections

import numpy as np

from tinygrad_bn import dtypes
from tinygrad_bn.autograd.function import Function
from tinygrad_bn.ops._helpers import log_sum_exp_shifted, normalize_dims
from tinygrad_bn.tensor import Tensor


def _kept_shape(shape, dims):
    return tuple(1 if i in dims else n for i, n in enumerate(shape))


def _unreduce(g, in_shape, dims, keepdim):
    """Broadcast a reduction's gradient back over the reduced axes (a differentiable Tensor op)."""
    from tinygrad_bn.ops.shape import expand
    if not keepdim:
        g = g.reshape(_kept_shape(in_shape, dims))
    return expand(g, in_shape)


def _check_nonempty(x, dims, opname):
    for d in dims:
        if x.shape[d] == 0:
            raise IndexError(f"{opname}: Expected reduction dim {d} to have non-zero size "
                             f"(input shape {list(x.shape)})")
    if not dims and x.numel() == 0:
        raise RuntimeError(f"{opname}: Expected reduction dim to be specified for input.numel() == 0")


class Sum(Function):
    """y = sum of x over `dims`.   dx = g broadcast back over those dims."""

    def forward(self, x, dims, keepdim):
        # axis=None when every axis is reduced: NumPy's whole-array path is faster than axis=(0,)
        return x.sum(axis=None if len(dims) == x.ndim and not keepdim else dims, keepdims=keepdim)

    def backward(self, g):
        return _unreduce(g, self.input_meta[0][0], self.attrs["dims"], self.attrs["keepdim"])


def sum(x, dim=None, keepdim=False):
    dims = normalize_dims(dim, x.ndim, "sum")
    if x.dtype.kind in "bi" and x.dtype != dtypes.int64:
        from tinygrad_bn.ops.elementwise import cast
        x = cast(x, dtypes.int64)  # PyTorch sums bool and int32 into int64
    return Sum.apply(x, dims=dims, keepdim=keepdim)


class Mean(Function):
    """y = mean of x over `dims` (M elements each).   dx = g / M broadcast back."""

    def forward(self, x, dims, keepdim):
        return x.mean(axis=dims, keepdims=keepdim)

    def backward(self, g):
        shape = self.input_meta[0][0]
        count = 1
        for d in self.attrs["dims"]:
            count *= shape[d]
        return _unreduce(g, shape, self.attrs["dims"], self.attrs["keepdim"]) * (1.0 / builtins.max(count, 1))


def mean(x, dim=None, keepdim=False):
    if not dtypes.is_floating(x.dtype):
        raise RuntimeError(f"mean(): could not infer output dtype. Input dtype must be either a "
                           f"floating point or complex dtype. Got: {x.dtype}")
    return Mean.apply(x, dims=normalize_dims(dim, x.ndim, "mean"), keepdim=keepdim)


class Var(Function):
    """y = sum((x - mean)^2) / (M - correction).   dx = g * 2 (x - mean) / (M - correction)."""

    def forward(self, x, dims, keepdim, correction):
        self.save_for_backward(x=x)
        return x.var(axis=dims, ddof=correction, keepdims=keepdim)

    def backward(self, g):
        x = self.saved("x")
        dims, keepdim, correction = self.attrs["dims"], self.attrs["keepdim"], self.attrs["correction"]
        count = 1
        for d in dims:
            count *= x.shape[d]
        centred = x - x.mean(dims, keepdim=True)
        return _unreduce(g, x.shape, dims, keepdim) * centred * (2.0 / (count - correction))


def _var_args(dim, unbiased, correction, opname):
    """PyTorch's overloads: var(), var(unbiased), var(dim, unbiased, keepdim), var(dim, *, correction)."""
    if isinstance(dim, bool):  # var(unbiased): a bool first argument is not a dim
        if unbiased is not None:
            raise TypeError(f"{opname}: got unbiased twice ({dim!r} and {unbiased!r})")
        dim, unbiased = None, dim
    if unbiased is not None and correction is not None:
        raise TypeError(f"{opname}: give either unbiased or correction, not both")
    if unbiased is not None:
        if not isinstance(unbiased, (bool, np.bool_)):
            raise TypeError(f"{opname}: unbiased must be a bool, got {unbiased!r}")
        correction = 1 if unbiased else 0
    return dim, 1 if correction is None else correction


def var(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    dim, correction = _var_args(dim, unbiased, correction, "var")
    if not dtypes.is_floating(x.dtype):
        raise RuntimeError(f"var: expected a floating-point tensor, got dtype {x.dtype}")
    dims = normalize_dims(dim, x.ndim, "var")
    return Var.apply(x, dims=dims, keepdim=keepdim, correction=correction)


def std(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """sqrt(var(x)): the gradient goes through Var and Sqrt."""
    from tinygrad_bn.ops.elementwise import sqrt
    dim, correction = _var_args(dim, unbiased, correction, "std")
    return sqrt(var(x, dim, keepdim=keepdim, correction=correction))


class Amax(Function):
    """y = max of x over `dims`.   The gradient is shared evenly among the tied maxima."""

    def forward(self, x, dims, keepdim, smallest):
        y = x.min(axis=dims, keepdims=True) if smallest else x.max(axis=dims, keepdims=True)
        self.save_for_backward(x=x, y_kept=y)
        return y if keepdim else y.reshape(tuple(n for i, n in enumerate(x.shape) if i not in dims))

    def backward(self, g):
        x, y = self.saved_array("x"), self.saved_array("y_kept")
        dims = self.attrs["dims"]
        winners = (x == y).astype(g.dtype)
        winners /= winners.sum(axis=dims, keepdims=True)
        return _unreduce(g, x.shape, dims, self.attrs["keepdim"]) * Tensor._make(winners)


def amax(x, dim=None, keepdim=False):
    dims = normalize_dims(dim, x.ndim, "amax")
    _check_nonempty(x, dims, "amax")
    return Amax.apply(x, dims=dims, keepdim=keepdim, smallest=False)


def amin(x, dim=None, keepdim=False):
    dims = normalize_dims(dim, x.ndim, "amin")
    _check_nonempty(x, dims, "amin")
    return Amax.apply(x, dims=dims, keepdim=keepdim, smallest=True)


class MaxDim(Function):
    """y = max of x along one dim, with its index.   dx = g at the index, 0 elsewhere."""

    def forward(self, x, dim, keepdim, smallest):
        xp = self.xp
        idx = (xp.argmin if smallest else xp.argmax)(x, axis=dim)
        idx = xp.expand_dims(idx, dim)
        y = xp.take_along_axis(x, idx, axis=dim)
        self.save_for_backward(idx=idx)
        indices = (idx if keepdim else idx.squeeze(dim)).astype(dtypes.int64)
        self.mark_non_differentiable(indices)
        return (y if keepdim else y.squeeze(dim)), indices

    def backward(self, g, _g_indices):
        xp = self.xp
        idx = self.saved_array("idx")
        dim, shape = self.attrs["dim"], self.input_meta[0][0]
        positions = xp.arange(shape[dim]).reshape([-1 if i == dim else 1 for i in range(len(shape))])
        onehot = (positions == idx).astype(g.dtype)
        return _unreduce(g, shape, (dim,), self.attrs["keepdim"]) * Tensor._make(onehot)


MaxResult = collections.namedtuple("MaxResult", ["values", "indices"])


def _max_min(x, dim, keepdim, smallest):
    name = "min" if smallest else "max"
    if isinstance(dim, Tensor):  # torch.max(a, b): the elementwise maximum, whatever b's shape
        if keepdim is not False:
            raise TypeError(f"{name}(input, other): takes no keepdim, got keepdim={keepdim!r}")
        from tinygrad_bn.ops.elementwise import maximum, minimum
        return (minimum if smallest else maximum)(x, dim)
    if dim is None:
        return amin(x) if smallest else amax(x)
    (d,) = normalize_dims(dim, x.ndim, name) or (0,)
    _check_nonempty(x, (d,) if x.ndim else (), name)
    if x.ndim == 0:
        return MaxResult(x, Tensor._make(x.xp.zeros((), dtype=dtypes.int64)))
    return MaxResult(*MaxDim.apply(x, dim=d, keepdim=keepdim, smallest=smallest))


def max(x, dim=None, keepdim=False):
    """max(x): the largest value. max(x, dim): (values, indices) along dim, like torch.max."""
    return _max_min(x, dim, keepdim, smallest=False)


def min(x, dim=None, keepdim=False):
    return _max_min(x, dim, keepdim, smallest=True)


def argmax(x, dim=None, keepdim=False):
    if isinstance(x, Tensor) and x.dtype == dtypes.bool_:
        raise RuntimeError("argmax: does not support bool input, as in PyTorch")
    if dim is None:
        return Tensor._make(x.xp.asarray(x.data.argmax()).astype(dtypes.int64))
    return _max_min(x.detach(), dim, keepdim, smallest=False).indices


def argmin(x, dim=None, keepdim=False):
    if isinstance(x, Tensor) and x.dtype == dtypes.bool_:
        raise RuntimeError("argmin: does not support bool input, as in PyTorch")
    if dim is None:
        return Tensor._make(x.xp.asarray(x.data.argmin()).astype(dtypes.int64))
    return _max_min(x.detach(), dim, keepdim, smallest=True).indices


class LogSumExp(Function):
    """y = log sum exp(x) over dims, computed as m + log sum exp(x - m) with m = max.
    dx = g * exp(x - y)   (the softmax)."""

    def forward(self, x, dims, keepdim):
        xp = self.xp
        if x.size == 0:  # log of an empty sum: -inf (max over an empty axis has no value)
            kept = xp.full(_kept_shape(x.shape, dims), -xp.inf, dtype=x.dtype)
            out = kept if keepdim else kept.reshape(tuple(n for i, n in enumerate(x.shape) if i not in dims))
            self.save_for_backward(x=x, y=out)
            return out
        m = x.max(axis=dims, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)  # all -inf rows: keep them -inf, not nan
        y = log_sum_exp_shifted(xp, x - m, dims) + m
        out = y if keepdim else y.reshape(tuple(n for i, n in enumerate(x.shape) if i not in dims))
        self.save_for_backward(x=x, y=out)
        return out

    def backward(self, g):
        from tinygrad_bn.ops.elementwise import exp
        x, y = self.saved("x", "y")
        dims, keepdim = self.attrs["dims"], self.attrs["keepdim"]
        y_kept = y if keepdim else y.reshape(_kept_shape(x.shape, dims))
        return _unreduce(g, x.shape, dims, keepdim) * exp(x - y_kept)


def logsumexp(x, dim, keepdim=False):
    if not dtypes.is_floating(x.dtype):
        raise RuntimeError(f"logsumexp: expected a floating-point tensor, got dtype {x.dtype}")
    dims = normalize_dims(dim, x.ndim, "logsumexp")
    return LogSumExp.apply(x, dims=dims, keepdim=keepdim)

