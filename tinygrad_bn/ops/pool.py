"""Pooling with PyTorch's semantics: max_pool2d, avg_pool2d, adaptive_avg_pool2d, adaptive_max_pool2d
(and the 1-D adaptive forms).

Inputs are (N, C, H, W) or unbatched (C, H, W): the two last axes are the spatial ones, whatever
comes before them is carried along. Max and average pooling read the padded input through
`sliding_windows` (ops/conv.py): win[t] (..., Ho, Wo) is what every output position sees through
kernel tap t, with no copy. Forward reduces over the taps; backward adds each tap's share of the
gradient back into that tap's windows of a zero buffer (col2im: kh*kw strided adds, no add.at).

Output size (PyTorch's pooling_output_shape), per spatial dim:
    Ho = floor((H + 2p - d(k-1) - 1 [+ s-1 if ceil_mode]) / s) + 1,
    minus one in ceil_mode if the last window would start in the right padding.

Every backward is itself a Function whose backward is the forward map again (average pooling and
"route to the argmax" are linear maps; their transposes are each other), so double backward works.
"""
import math

import numpy as np

from tinygrad_bn import backend, dtypes
from tinygrad_bn.autograd.function import Function
from tinygrad_bn.ops.conv import _int_tuple, kernel_taps, sliding_windows
from tinygrad_bn.tensor import Tensor


# ---- geometry ---------------------------------------------------------------------------------
def pool_output_size(size, kernel, stride, padding, dilation, ceil_mode):
    """The pooled size per spatial dim (the formula in the module docstring)."""
    out = []
    for n, k, s, p, d in zip(size, kernel, stride, padding, dilation):
        q = (n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (q - 1) * s >= n + p:  # the last window must not start in the right pad
            q -= 1
        out.append(q)
    return tuple(out)


def _pad_widths(ndim, size, out_size, kernel, stride, padding, dilation):
    """p before each spatial dim and, after it, as far as the last window reaches (ceil_mode)."""
    return [(0, 0)] * (ndim - len(size)) + [
        (p, max((q - 1) * s + d * (k - 1) + 1 - n - p, 0))
        for n, q, k, s, p, d in zip(size, out_size, kernel, stride, padding, dilation)]


def _windows(xp, x, out_size, kernel, stride, padding, dilation, fill):
    """The tap-first window view of x padded with `fill`."""
    widths = _pad_widths(x.ndim, x.shape[-2:], out_size, kernel, stride, padding, dilation)
    padded = xp.pad(x, widths, mode="constant", constant_values=fill)
    return sliding_windows(padded, x.ndim - 2, out_size, kernel, stride, dilation)


def _scatter_taps(xp, tap_share, dtype, in_shape, out_size, kernel, stride, padding, dilation):
    """dx (in_shape) with tap_share(i) (..., Ho, Wo) added at each tap i's window positions."""
    widths = _pad_widths(len(in_shape), in_shape[-2:], out_size, kernel, stride, padding, dilation)
    padded = xp.zeros(tuple(n + lo + hi for n, (lo, hi) in zip(in_shape, widths)), dtype=dtype)
    win = sliding_windows(padded, len(in_shape) - 2, out_size, kernel, stride, dilation)
    for i, tap in enumerate(kernel_taps(kernel)):
        win[tap] += tap_share(i)
    inner = tuple(slice(lo, lo + n) for n, (lo, _) in zip(in_shape, widths))
    return xp.ascontiguousarray(padded[inner])


def _first_inside_tap(size, out_size, kernel, stride, padding, dilation):
    """Per output position, the flat index of its first tap inside the unpadded input (host)."""
    firsts = []
    for n, q, k, s, p, d in zip(size, out_size, kernel, stride, padding, dilation):
        pos = np.arange(q)[:, None] * s - p + np.arange(k)[None, :] * d
        firsts.append(((pos >= 0) & (pos < n)).argmax(axis=1))
    return firsts[0][:, None] * kernel[1] + firsts[1][None, :]


# ---- max pooling ------------------------------------------------------------------------------
class MaxPool2d(Function):
    """y[q] = max over taps t of x[q*s + t*d - p] (padding counts as -inf).

    The winning tap (argmax) is the first maximum, or the last NaN, as PyTorch's loop
    `if (val > max || isnan(val))` over the in-bounds taps picks; a window of only -inf keeps its
    first in-bounds tap. Backward routes g to the winners: dx = MaxPool2dBackward(g, argmax)."""

    node_name = "MaxPool2DWithIndicesBackward"

    def forward(self, x, *, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
        xp = self.xp
        out_size = pool_output_size(x.shape[-2:], kernel_size, stride, padding, dilation, ceil_mode)
        win = _windows(xp, x, out_size, kernel_size, stride, padding, dilation, -np.inf)
        best = xp.full(win.shape[2:], -np.inf, dtype=x.dtype)
        argmax = xp.empty(win.shape[2:], dtype=np.int32)
        argmax[...] = xp.asarray(_first_inside_tap(x.shape[-2:], out_size, kernel_size, stride,
                                                   padding, dilation).astype(np.int32))
        for i, tap in enumerate(kernel_taps(kernel_size)):
            value = win[tap]
            wins = (value > best) | xp.isnan(value)
            best = xp.where(wins, value, best)
            argmax[wins] = i
        self.save_for_backward(argmax=argmax)
        if not return_indices:
            return best
        # PyTorch's indices: the flat position h*W + w of the winner in the unpadded input
        row, col = argmax // kernel_size[1], argmax % kernel_size[1]
        h = xp.arange(out_size[0]).reshape(-1, 1) * stride[0] - padding[0] + row * dilation[0]
        w = xp.arange(out_size[1]) * stride[1] - padding[1] + col * dilation[1]
        indices = (h * x.shape[-1] + w).astype(np.int64)
        self.mark_non_differentiable(indices)
        return best, indices

    def backward(self, g, *_):
        return MaxPool2dBackward.apply(g, self.saved("argmax"), input_size=self.input_meta[0][0],
                                       **_pool_attrs(self.attrs))


class MaxPool2dBackward(Function):
    """dx = zeros; dx[q*s + argmax(q)*d - p] += g[q]  (scatter to the winners, a linear map of g).
    Backward: dg = MaxPool2dGather(gg, argmax), the transpose (gather from the winners)."""

    def forward(self, g, argmax, *, input_size, kernel_size, stride, padding, dilation):
        self.save_for_backward(argmax=argmax)
        return _scatter_taps(self.xp, lambda i: self.xp.where(argmax == i, g, 0), g.dtype,
                             input_size, g.shape[-2:], kernel_size, stride, padding, dilation)

    def backward(self, gg):
        return MaxPool2dGather.apply(gg, self.saved("argmax"), **_pool_attrs(self.attrs)), None


class MaxPool2dGather(Function):
    """y[q] = x[q*s + argmax(q)*d - p] (read the winners).
    Backward: MaxPool2dBackward(gg, argmax), the transpose."""

    def forward(self, x, argmax, *, kernel_size, stride, padding, dilation):
        xp = self.xp
        win = _windows(xp, x, argmax.shape[-2:], kernel_size, stride, padding, dilation, 0)
        y = xp.zeros(argmax.shape, dtype=x.dtype)
        for i, tap in enumerate(kernel_taps(kernel_size)):
            y += xp.where(argmax == i, win[tap], 0)
        self.save_for_backward(argmax=argmax)
        return y

    def backward(self, gg):
        return MaxPool2dBackward.apply(gg, self.saved("argmax"), input_size=self.input_meta[0][0],
                                       **self.attrs), None


def _pool_attrs(attrs):
    return {k: attrs[k] for k in ("kernel_size", "stride", "padding", "dilation")}


# ---- average pooling --------------------------------------------------------------------------
def _avg_divisor(xp, size, out_size, kernel, stride, padding, count_include_pad, dtype, divisor_override=None):
    """divisor[q] = prod over dims of the window length, clipped to the padded input
    (count_include_pad) or to the input: PyTorch's (hend - hstart) * (wend - wstart);
    or divisor_override for every window."""
    if divisor_override is not None:
        return xp.asarray(np.full(tuple(out_size), divisor_override, dtype=dtype))
    counts = []
    for n, q, k, s, p in zip(size, out_size, kernel, stride, padding):
        start = np.arange(q) * s - p
        end = np.minimum(start + k, n + p)
        if not count_include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, n)
        counts.append(end - start)
    return xp.asarray(np.outer(counts[0], counts[1]).astype(dtype))


class AvgPool2d(Function):
    """y[q] = sum over taps t of x[q*s + t - p] / divisor[q]  (zero padding).

    Linear: dx = AvgPool2dBackward(g) = its transpose, whose backward is AvgPool2d again."""

    node_name = "AvgPool2DBackward"

    def forward(self, x, *, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override=None):
        xp = self.xp
        out_size = pool_output_size(x.shape[-2:], kernel_size, stride, padding, (1, 1), ceil_mode)
        win = _windows(xp, x, out_size, kernel_size, stride, padding, (1, 1), 0)
        divisor = _avg_divisor(xp, x.shape[-2:], out_size, kernel_size, stride, padding,
                               count_include_pad, x.dtype, divisor_override)
        return win.sum(axis=(0, 1)) / divisor

    def backward(self, g):
        return AvgPool2dBackward.apply(g, input_size=self.input_meta[0][0], **self.attrs)


class AvgPool2dBackward(Function):
    """dx[q*s + t - p] += g[q] / divisor[q] for every tap t.  Backward: AvgPool2d(gg)."""

    def forward(self, g, *, input_size, kernel_size, stride, padding, ceil_mode, count_include_pad,
                divisor_override=None):
        xp = self.xp
        share = g / _avg_divisor(xp, input_size[-2:], g.shape[-2:], kernel_size, stride, padding,
                                 count_include_pad, g.dtype, divisor_override)
        return _scatter_taps(xp, lambda i: share, g.dtype, input_size, g.shape[-2:], kernel_size,
                             stride, padding, (1, 1))

    def backward(self, gg):
        attrs = {k: v for k, v in self.attrs.items() if k != "input_size"}
        return AvgPool2d.apply(gg, **attrs)


# ---- adaptive average pooling -----------------------------------------------------------------
def _averaging_matrix(xp, size, out, dtype):
    """A (out, size): row i averages x[start_i:end_i], start_i = floor(i*size/out),
    end_i = ceil((i+1)*size/out) (PyTorch's adaptive pooling windows)."""
    i = np.arange(out)[:, None]
    start, end = (i * size) // out, -(-(i + 1) * size // out)
    j = np.arange(size)[None, :]
    return xp.asarray((((j >= start) & (j < end)) / (end - start)).astype(dtype))


class AdaptiveAvgPool2d(Function):
    """y = A_h x A_w^T: y[i, j] = mean of x over rows [start_i, end_i) and columns [start_j, end_j).

    Linear: dx = A_h^T g A_w (AdaptiveAvgPool2dBackward), whose backward is this op again."""

    node_name = "AdaptiveAvgPool2DBackward"

    def forward(self, x, *, output_size):
        a_h, a_w = (_averaging_matrix(self.xp, n, q, x.dtype)
                    for n, q in zip(x.shape[-2:], output_size))
        return self.xp.matmul(self.xp.matmul(a_h, x), a_w.T)

    def backward(self, g):
        return AdaptiveAvgPool2dBackward.apply(g, input_size=self.input_meta[0][0][-2:])


class AdaptiveAvgPool2dBackward(Function):
    """dx = A_h^T g A_w (spreads each output's gradient evenly over its window).
    Backward: AdaptiveAvgPool2d(gg)."""

    def forward(self, g, *, input_size):
        a_h, a_w = (_averaging_matrix(self.xp, n, q, g.dtype)
                    for n, q in zip(input_size, g.shape[-2:]))
        return self.xp.matmul(self.xp.matmul(a_h.T, g), a_w)

    def backward(self, gg):
        return AdaptiveAvgPool2d.apply(gg, output_size=self.input_meta[0][0][-2:])


# ---- argument checks and the functional forms ---------------------------------------------------
_LAYOUTS = {1: "2-D (C, L) or 3-D (N, C, L)", 2: "3-D (C, H, W) or 4-D (N, C, H, W)"}


def _check_pool_input(opname, input, spatial=2):
    """A float Tensor of (C, *S) or (N, C, *S) with `spatial` non-empty dims S (and C > 0)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{opname}: expected input to be a Tensor, got {type(input).__name__}")
    if input.ndim not in (spatial + 1, spatial + 2) or any(n == 0 for n in input.shape[-spatial - 1:]):
        raise RuntimeError(f"{opname}: expected a non-empty {_LAYOUTS[spatial]} input, but got input of "
                           f"size {list(input.shape)}")
    if not dtypes.is_floating(input.dtype):
        raise RuntimeError(f"{opname}: expected a floating-point input, got dtype {input.dtype}")


def _pool_geometry(opname, input, kernel_size, stride, padding, dilation, ceil_mode):
    """Checked (kernel, stride, padding, dilation) pairs; stride defaults to the kernel size."""
    kernel = _int_tuple(kernel_size, 2, "kernel_size", opname, "pooling")
    stride = kernel if stride is None or stride == () or stride == [] else \
        _int_tuple(stride, 2, "stride", opname, "pooling")
    padding = _int_tuple(padding, 2, "padding", opname, "pooling")
    dilation = _int_tuple(dilation, 2, "dilation", opname, "pooling")
    if any(k <= 0 for k in kernel):
        raise RuntimeError(f"{opname}: kernel_size must be greater than zero, but got "
                           f"kernel_size={kernel}")
    if any(s <= 0 for s in stride):
        raise RuntimeError(f"{opname}: stride must be greater than zero, but got stride={stride}")
    if any(d <= 0 for d in dilation):
        raise RuntimeError(f"{opname}: dilation must be greater than zero, but got "
                           f"dilation={dilation}")
    if any(p < 0 for p in padding):
        raise RuntimeError(f"{opname}: pad must be non-negative, but got padding={padding}")
    for p, k, d in zip(padding, kernel, dilation):
        if p > (d * (k - 1) + 1) // 2:
            raise RuntimeError(f"{opname}: pad should be at most half of effective kernel size, "
                               f"but got pad={p}, kernel_size={k} and dilation={d}")
    out = pool_output_size(input.shape[-2:], kernel, stride, padding, dilation, ceil_mode)
    if any(q < 1 for q in out):
        size = "x".join(map(str, input.shape[-3:]))
        raise RuntimeError(f"{opname}: Given input size: ({size}). Calculated output size: "
                           f"({input.shape[-3]}x{out[0]}x{out[1]}). Output size is too small "
                           f"(kernel_size={kernel}, stride={stride}, padding={padding}, "
                           f"dilation={dilation})")
    return kernel, stride, padding, dilation


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """torch.nn.functional.max_pool2d (padding is -inf); with return_indices also the flat
    position h*W + w of each maximum in its input plane, as PyTorch gives it."""
    _check_pool_input("max_pool2d", input)
    kernel, stride, padding, dilation = _pool_geometry("max_pool2d", input, kernel_size, stride,
                                                       padding, dilation, ceil_mode)
    return MaxPool2d.apply(input, kernel_size=kernel, stride=stride, padding=padding,
                           dilation=dilation, ceil_mode=bool(ceil_mode),
                           return_indices=bool(return_indices))


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """torch.nn.functional.avg_pool2d (zero padding; count_include_pad decides whether the
    padding counts in the divisor; divisor_override, a nonzero int, replaces the divisor)."""
    _check_pool_input("avg_pool2d", input)
    if divisor_override is not None:
        if not isinstance(divisor_override, (int, np.integer)) or isinstance(divisor_override, bool):
            raise TypeError(f"avg_pool2d: divisor_override must be int, not {type(divisor_override).__name__}")
        if divisor_override == 0:
            raise RuntimeError("avg_pool2d: divisor must be not zero, got divisor_override=0")
    kernel, stride, padding, _ = _pool_geometry("avg_pool2d", input, kernel_size, stride, padding,
                                                1, ceil_mode)
    return AvgPool2d.apply(input, kernel_size=kernel, stride=stride, padding=padding,
                           ceil_mode=bool(ceil_mode), count_include_pad=bool(count_include_pad),
                           divisor_override=None if divisor_override is None else int(divisor_override))


def adaptive_avg_pool2d(input, output_size):
    """torch.nn.functional.adaptive_avg_pool2d: output_size an int, or a pair whose None entries
    keep the input's size."""
    _check_pool_input("adaptive_avg_pool2d", input)
    sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    if len(sizes) != 2 or not all(s is None or (isinstance(s, (int, np.integer)) and
                                                not isinstance(s, bool) and s >= 0) for s in sizes):
        raise RuntimeError(f"adaptive_avg_pool2d: output_size must be a non-negative int or a pair "
                           f"of non-negative ints (or None), but got {output_size!r}")
    sizes = tuple(n if s is None else int(s) for s, n in zip(sizes, input.shape[-2:]))
    return AdaptiveAvgPool2d.apply(input, output_size=sizes)


# ---- adaptive max pooling ---------------------------------------------------------------------
def _adaptive_taps(size, out):
    """Per tap, the flat input index (prod(out),) each output reads, and whether that tap is inside
    its window: windows [floor(i*n/q), ceil((i+1)*n/q)) per dim, visited row-major as PyTorch's
    loop does; short windows repeat their last position (marked outside, so it never wins)."""
    starts, lengths = [], []
    for n, q in zip(size, out):
        i = np.arange(q)
        starts.append((i * n) // q)
        lengths.append(-(-(i + 1) * n // q) - (i * n) // q)
    taps = []
    for offsets in np.ndindex(*[int(ln.max()) if len(ln) else 0 for ln in lengths]):
        flat, inside = np.zeros(1, dtype=np.int64), np.ones(1, dtype=bool)
        for n, st, ln, t in zip(size, starts, lengths, offsets):
            flat = (flat[:, None] * n + st + np.minimum(t, ln - 1)).ravel()
            inside = (inside[:, None] & (t < ln)).ravel()
        taps.append((flat, inside))
    return taps


class AdaptiveMaxPool(Function):
    """y[q] = max of x over window q (the bins of _adaptive_taps), over the last len(output_size)
    dims; the winner is the first maximum or the last NaN (PyTorch's `val > max || isnan(val)`).
    Backward routes g to the winners: dx = AdaptiveMaxPoolBackward(g, argmax)."""

    node_name = "AdaptiveMaxPool2DBackward"

    def forward(self, x, *, output_size, return_indices):
        xp, k = self.xp, len(output_size)
        lead = x.shape[:-k]
        flat = x.reshape(lead + (-1,))
        taps = _adaptive_taps(x.shape[-k:], output_size)
        q = math.prod(output_size)
        best = xp.full(lead + (q,), -np.inf, dtype=x.dtype)
        argmax = xp.zeros(lead + (q,), dtype=np.int64) + (xp.asarray(taps[0][0]) if taps else 0)
        for index, inside in taps:
            value = xp.take(flat, xp.asarray(index), axis=-1)
            wins = xp.asarray(inside) & ((value > best) | xp.isnan(value))
            best = xp.where(wins, value, best)
            argmax = xp.where(wins, xp.asarray(index), argmax)
        argmax = argmax.reshape(lead + tuple(output_size))
        self.save_for_backward(argmax=argmax)
        best = best.reshape(lead + tuple(output_size))
        if not return_indices:
            return best
        indices = argmax.copy()  # the flat position of the winner in its input plane, as PyTorch gives it
        self.mark_non_differentiable(indices)
        return best, indices

    def backward(self, g, *_):
        return AdaptiveMaxPoolBackward.apply(g, self.saved("argmax"), input_size=self.input_meta[0][0],
                                             spatial_dims=len(self.attrs["output_size"]))


class AdaptiveMaxPoolBackward(Function):
    """dx = zeros; dx[argmax(q)] += g[q] per input plane (scatter to the winners, linear in g).
    Backward: AdaptiveMaxPoolGather(gg, argmax), the transpose."""

    def forward(self, g, argmax, *, input_size, spatial_dims):
        xp = self.xp
        planes = math.prod(input_size[:-spatial_dims])
        dx = xp.zeros((planes, math.prod(input_size[-spatial_dims:])), dtype=g.dtype)
        rows = xp.arange(planes).reshape(-1, 1)
        backend.scatter_add(dx, (rows, argmax.reshape(planes, -1)), g.reshape(planes, -1))
        self.save_for_backward(argmax=argmax)
        return dx.reshape(input_size)

    def backward(self, gg):
        return AdaptiveMaxPoolGather.apply(gg, self.saved("argmax"), spatial_dims=self.attrs["spatial_dims"]), None


class AdaptiveMaxPoolGather(Function):
    """y[q] = x[argmax(q)] per input plane (read the winners). Backward: AdaptiveMaxPoolBackward."""

    def forward(self, x, argmax, *, spatial_dims):
        planes = math.prod(x.shape[:-spatial_dims])
        self.save_for_backward(argmax=argmax)
        y = self.xp.take_along_axis(x.reshape(planes, -1), argmax.reshape(planes, -1), axis=-1)
        return y.reshape(argmax.shape)

    def backward(self, gg):
        return AdaptiveMaxPoolBackward.apply(gg, self.saved("argmax"), input_size=self.input_meta[0][0],
                                             spatial_dims=self.attrs["spatial_dims"]), None


def _adaptive_sizes(opname, input, output_size, k):
    """output_size (an int, or k entries, None keeping the input's size) as a tuple of k ints >= 0."""
    sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * k
    if len(sizes) != k or not all(s is None or (isinstance(s, (int, np.integer)) and
                                                not isinstance(s, bool) and s >= 0) for s in sizes):
        what = "a non-negative int" + (" or a pair of non-negative ints (or None)" if k == 2 else "")
        raise RuntimeError(f"{opname}: output_size must be {what}, but got {output_size!r} "
                           f"(input of size {list(input.shape)})")
    return tuple(n if s is None else int(s) for s, n in zip(sizes, input.shape[-k:]))


def _check_pool1d_input(opname, input):
    _check_pool_input(opname, input, spatial=1)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """torch.nn.functional.adaptive_max_pool2d: output_size an int, or a pair whose None entries
    keep the input's size; with return_indices also each maximum's flat position h*W + w."""
    _check_pool_input("adaptive_max_pool2d", input)
    sizes = _adaptive_sizes("adaptive_max_pool2d", input, output_size, 2)
    return AdaptiveMaxPool.apply(input, output_size=sizes, return_indices=bool(return_indices))


def adaptive_max_pool1d(input, output_size, return_indices=False):
    """torch.nn.functional.adaptive_max_pool1d over the last dim of (N, C, L) or (C, L)."""
    _check_pool1d_input("adaptive_max_pool1d", input)
    sizes = _adaptive_sizes("adaptive_max_pool1d", input, output_size, 1)
    return AdaptiveMaxPool.apply(input, output_size=sizes, return_indices=bool(return_indices))


def adaptive_avg_pool1d(input, output_size):
    """torch.nn.functional.adaptive_avg_pool1d: adaptive_avg_pool2d of (..., 1, L) to (1, output_size)."""
    _check_pool1d_input("adaptive_avg_pool1d", input)
    (size,) = _adaptive_sizes("adaptive_avg_pool1d", input, output_size, 1)
    return AdaptiveAvgPool2d.apply(input.unsqueeze(-2), output_size=(1, size)).squeeze(-2)
