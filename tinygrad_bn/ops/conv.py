"""Convolution: conv1d, conv2d, conv3d and their transposes, written once for any number of
spatial dims, as im2col + GEMM on a channels-last layout.

Shapes: x (N, C, *S), w (O, C/G, *K), y (N, O, *Q) with G groups, Q = conv_output_size(S, ...).
Inside, every tensor becomes a matrix whose long side is M = N * prod(Q) (all output positions):

    xpad[n, s, g, c]  = x zero-padded, channels last            (N, *S+2p, G, C/G)    one copy
    cols[g, m, (t,c)] = xpad[n, q*stride + t*dilation, g, c]    (G, M, prod(K)*C/G)   one copy of a
                                                                 strided view (t: a kernel tap)
    y[g, o, m]        = sum_(t,c) w[g, o, (t,c)] cols[g, m, (t,c)]                      one GEMM

Channels last, because each receptive-field row (t, c) is then made of contiguous runs of channels
(the im2col copy streams memory) and the GEMM is one (O x K) @ (K x M) product per group instead
of N small ones; NCHW im2col with a batched GEMM measured no faster, and needs the same copies.

Backward, each part a Function so that double backward works (create_graph=True):

    dx = ConvTranspose(g, w):   col2im; per tap t, the column block g^T w_t (M x C/G) is computed
                                and added into the tap's windows of a zero buffer (prod(K) strided
                                adds, no add.at, never the whole column matrix)
    dw = ConvWeightGrad(x, g):  g (G, O/G, M) @ cols (G, M, prod(K)*C/G), one GEMM (on the columns
                                kept from forward, or rebuilt from x)
    db = g summed over batch and space

All three are bilinear, so their derivatives are the three ops again:
    Conv(x, w)            -> dx = ConvTranspose(g, w),      dw = ConvWeightGrad(x, g)
    ConvTranspose(g, w)   -> dg = Conv(gg, w),              dw = ConvWeightGrad(gg, g)
    ConvWeightGrad(x, g)  -> dx = ConvTranspose(g, gg),     dg = Conv(x, gg)

Memory. Saved between forward and backward: references to x and w only. Keeping the column matrix
(prod(K) times the input, 9x for a 3x3 conv) until backward measured ~12% faster fwd+bwd, but held
across a ResNet's 19 convolutions it multiplies the training step's peak memory; the weight
gradient therefore rebuilds the columns. Inside a call the peak extra is the column matrix plus a padded copy (Conv,
ConvWeightGrad) or a padded copy of dx, g as a matrix and one tap block (ConvTranspose). Saved
arrays are freed after backward (unless retain_graph).
"""
import itertools
import math
import threading

import numpy as np

from tinygrad_bn import backend, dtypes
from tinygrad_bn.autograd.function import Function
from tinygrad_bn.tensor import Tensor


# ---- geometry ---------------------------------------------------------------------------------
def conv_output_size(size, kernel, stride, padding, dilation):
    """Q = floor((S + 2p - d(K-1) - 1) / stride) + 1 per spatial dim (PyTorch's formula)."""
    return tuple((s + 2 * p - d * (k - 1) - 1) // st + 1
                 for s, k, st, p, d in zip(size, kernel, stride, padding, dilation))


def sliding_windows(x, first_axis, out_size, kernel, stride, dilation):
    """The strided view win[t..., :, q..., :] = x[:, q*stride + t*dilation, :] (no copy).

    x has len(kernel) spatial axes starting at `first_axis`; the view puts the kernel taps first:
    axes (*kernel, *x.shape with the spatial axes replaced by out_size). `win[t]` is then the input
    each output position sees through tap t, which both im2col (read) and col2im (add) use."""
    nd = len(kernel)
    lead, spatial, rest = (x.strides[:first_axis], x.strides[first_axis:first_axis + nd],
                           x.strides[first_axis + nd:])
    shape = tuple(kernel) + x.shape[:first_axis] + tuple(out_size) + x.shape[first_axis + nd:]
    strides = (tuple(st * d for st, d in zip(spatial, dilation)) + lead
               + tuple(st * s for st, s in zip(spatial, stride)) + rest)
    return backend.as_strided(x, shape, strides)


def kernel_taps(kernel):
    """Every tap index tuple of a kernel, in row-major order."""
    return itertools.product(*(range(k) for k in kernel))


def _inner(padding, size, lead=1):
    """The index of the unpadded region of a padded array (spatial axes after `lead` axes)."""
    return (slice(None),) * lead + tuple(slice(p, p + s) for p, s in zip(padding, size))


def _padded_channels_last(xp, x, padding, groups):
    """x (N, C, *S) -> a zero-padded channels-last copy (N, *S+2p, G, C/G), in the "padded"
    scratch buffer (valid until the next call): only the border is zeroed, the rest is copied."""
    n, c, *size = x.shape
    out = _scratch(xp, (n, *(s + 2 * p for s, p in zip(size, padding)), c), x.dtype, "padded")
    for axis, (p, s) in enumerate(zip(padding, size), start=1):
        before, after = [slice(None)] * out.ndim, [slice(None)] * out.ndim
        before[axis], after[axis] = slice(0, p), slice(p + s, None)
        out[tuple(before)] = 0
        out[tuple(after)] = 0
    out[_inner(padding, size)] = xp.moveaxis(x, 1, -1)
    return out.reshape(out.shape[:-1] + (groups, c // groups))


_scratch_space = threading.local()


def _scratch(xp, shape, dtype, use="columns"):
    """An uninitialised array in a buffer reused from call to call (one per thread and backend).

    A fresh 75 MB column matrix costs the kernel's page faults on every call: filling a reused
    buffer measured ~40% faster than the copy into a new array. The buffer grows to the largest
    request and is then kept, so it adds no more than the one column matrix (and padded input)
    that each call made before. One buffer per `use`; the array is only valid until the next
    _scratch call of the same use: callers use it and drop it."""
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    buffers = _scratch_space.__dict__.setdefault("buffers", {})
    buffer = buffers.get((xp.__name__, use))
    if buffer is None or buffer.size < nbytes:
        buffer = buffers[xp.__name__, use] = xp.empty(nbytes, dtype=np.uint8)
    return buffer[:nbytes].view(dtype).reshape(shape)


def _merge_runs(view):
    """The same elements, in the same order, with each pair of neighbouring axes that walks memory
    as one run merged into one axis: (.., a, b, ..) with stride_a = b * stride_b -> (.., a*b, ..).

    NumPy's copy loops over the last axis only; the 3 taps of a stride-1 3x3 row and their C
    channels lie side by side in the channels-last input, so merging them gives a 3C-long inner
    loop instead of C (the im2col copy measured ~30% faster at C = 16)."""
    shape, strides = list(view.shape[-1:]), list(view.strides[-1:])
    for size, stride in zip(reversed(view.shape[:-1]), reversed(view.strides[:-1])):
        if stride == shape[0] * strides[0]:
            shape[0] *= size
        else:
            shape.insert(0, size)
            strides.insert(0, stride)
    return backend.as_strided(view, tuple(shape), tuple(strides))


def _columns(xp, x, kernel, out_size, stride, padding, dilation, groups):
    """im2col: the (G, M, prod(K)*C/G) matrix of every receptive field (one strided copy), in the
    scratch buffer: valid until the next call."""
    nd = len(kernel)
    win = sliding_windows(_padded_channels_last(xp, x, padding, groups), 1, out_size, kernel,
                          stride, dilation)                    # (*K, N, *Q, G, C/G)
    group_axis, channel_axis = 2 * nd + 1, 2 * nd + 2
    order = (group_axis,) + tuple(range(nd, 2 * nd + 1)) + tuple(range(nd)) + (channel_axis,)
    fields = _merge_runs(win.transpose(order))                 # (G, N, *Q, *K, C/G), merged
    cols = _scratch(xp, fields.shape, x.dtype)
    xp.copyto(cols, fields)
    rows = x.shape[0] * math.prod(out_size)  # explicit sizes, not -1: a batch may be empty
    return cols.reshape(groups, rows, math.prod(kernel) * x.shape[1] // groups)


def _weight_taps(xp, w, groups):
    """w (O, C/G, *K) -> (G, O/G, *K, C/G): the same (tap, channel) order as the columns."""
    o, cg, *kernel = w.shape
    return xp.moveaxis(w.reshape(groups, o // groups, cg, *kernel), 2, -1)


def _as_matrix(xp, y, groups):
    """y (N, O, *Q) -> (G, O/G, M), M = N * prod(Q)."""
    n, o, positions = y.shape[0], y.shape[1], math.prod(y.shape[2:])
    y = xp.moveaxis(y.reshape(n, groups, o // groups, positions), 0, 2)
    return y.reshape(groups, o // groups, n * positions)


def _as_rows(y, groups):
    """y (N, O, *Q) -> (G, M, O/G), contiguous: one row of channels per output position."""
    n, o, positions = y.shape[0], y.shape[1], math.prod(y.shape[2:])
    y = y.reshape(n, groups, o // groups, positions).transpose(1, 0, 3, 2)
    return y.reshape(groups, n * positions, o // groups)


def _from_rows(xp, ym, n, out_size):
    """(G, M, O/G) -> y (N, O, *Q), a contiguous copy."""
    g, _, og = ym.shape
    y = ym.reshape(g, n, math.prod(out_size), og).transpose(1, 0, 3, 2)    # (N, G, O/G, prod(Q))
    return xp.ascontiguousarray(y).reshape(n, g * og, *out_size)


# ---- the three Functions ----------------------------------------------------------------------
def _conv_arrays(xp, x, w, stride, padding, dilation, groups):
    """y (N, O, *Q) from the rows cols(x) (G, M, K*C/G) @ w^T (G, K*C/G, O/G), one GEMM per
    group (see the module doc). Rows times w^T, not w times cols^T: with M long and O/G short,
    BLAS measured ~1.6x faster in this orientation, transpose to (N, O, *Q) included."""
    kernel = w.shape[2:]
    out_size = conv_output_size(x.shape[2:], kernel, stride, padding, dilation)
    cols = _columns(xp, x, kernel, out_size, stride, padding, dilation, groups)
    wm = _weight_taps(xp, w, groups).reshape(cols.shape[0], -1, cols.shape[2])
    return _from_rows(xp, xp.matmul(cols, wm.transpose(0, 2, 1)), x.shape[0], out_size)


def _flipped_transposed(xp, w, groups):
    """w (O, C/G, *K) -> w' (C, O/G, *K), w'[g*C/G + c, o, t] = w[g*O/G + o, c, K-1-t]."""
    o, cg, *kernel = w.shape
    wg = w.reshape(groups, o // groups, cg, *kernel).swapaxes(1, 2)      # (G, C/G, O/G, *K)
    flipped = wg[(Ellipsis,) + (slice(None, None, -1),) * len(kernel)]
    return xp.ascontiguousarray(flipped).reshape(groups * cg, o // groups, *kernel)


def _transpose_as_conv(xp, y, w, padding, dilation, groups):
    """Stride 1 only: ConvTranspose(y, w) = Conv(y, w') with w' the flipped, transposed weight
    and padding p' = d(K-1) - p, because with i = q + t*d - p and t' = K-1-t,
        x[i] = sum_t w[t] y[i + p - t*d] = sum_t' w'[t'] y[i - p' + t'*d].
    One im2col of y and one GEMM, instead of prod(K) per-tap GEMMs and strided adds (the
    input gradient of the ResNet's 3x3 convolutions measured ~2x faster this way)."""
    kernel = w.shape[2:]
    flipped_padding = tuple(d * (k - 1) - p for d, k, p in zip(dilation, kernel, padding))
    return _conv_arrays(xp, y, _flipped_transposed(xp, w, groups), (1,) * len(kernel),
                        flipped_padding, dilation, groups)


def _transpose_is_a_conv(y_shape, w_shape, output_size, stride, padding, dilation):
    """The stride-1 form needs p <= d(K-1), so that the flipped padding is not negative, and no
    output_padding (an output of exactly Q + d(K-1) - 2p)."""
    return all(s == 1 and p <= d * (k - 1) and size == q + d * (k - 1) - 2 * p
               for s, p, d, k, q, size in zip(stride, padding, dilation, w_shape[2:],
                                               y_shape[2:], output_size))


class Conv(Function):
    """y = conv(x, w) + b:  y[n, o, q] = b[o] + sum_(c,t) w[o, c, t] x[n, g*C/G + c, q*s + t*d - p]
    (g = the group of output channel o, x zero outside its bounds).

    Backward: dx = ConvTranspose(g, w), dw = ConvWeightGrad(x, g), db = sum_(n,q) g."""

    node_name = "ConvolutionBackward"

    def forward(self, x, w, b=None, *, stride, padding, dilation, groups):
        kernel = w.shape[2:]
        y = _conv_arrays(self.xp, x, w, stride, padding, dilation, groups)
        if b is not None:
            y += b.reshape((1, -1) + (1,) * len(kernel))
        if self.needs_input_grad[0]:
            self.save_for_backward(w=w)   # dx needs w only
        if self.needs_input_grad[1]:
            self.save_for_backward(x=x)   # dw needs x (a reference): the columns are rebuilt
        return y

    def backward(self, g):
        dx = dw = db = None
        (x_shape, _), (w_shape, _) = self.input_meta[:2]
        if self.needs_input_grad[0]:
            dx = ConvTranspose.apply(g, self.saved("w"), output_size=x_shape[2:], **self.attrs)
        if self.needs_input_grad[1]:
            dw = ConvWeightGrad.apply(self.saved("x"), g, kernel_size=w_shape[2:], **self.attrs)
        if len(self.input_meta) == 2:
            return dx, dw
        if self.needs_input_grad[2]:
            db = g.sum(dim=(0,) + tuple(range(2, g.ndim)))
        return dx, dw, db


class ConvTranspose(Function):
    """x = ConvTranspose(y, w), the adjoint of Conv(., w) for inputs of spatial size `output_size`:
    <ConvTranspose(y, w), a> = <y, Conv(a, w)>. Also conv_transpose's forward; col2im inside:
        x_pad[n, q*s + t*d, g, c] += sum_o y[n, g, o, q] w[g, o, t, c]   for every tap t.

    Backward: dy = Conv(gg, w),  dw = ConvWeightGrad(gg, y)."""

    def forward(self, y, w, *, output_size, stride, padding, dilation, groups):
        if self.needs_input_grad[0]:
            self.save_for_backward(w=w)
        if self.needs_input_grad[1]:
            self.save_for_backward(y=y)
        if _transpose_is_a_conv(y.shape, w.shape, output_size, stride, padding, dilation):
            return _transpose_as_conv(self.xp, y, w, padding, dilation, groups)
        return _col2im(self.xp, y, w, output_size, stride, padding, dilation, groups)

    def backward(self, gg):
        geometry = {k: v for k, v in self.attrs.items() if k != "output_size"}
        dy = Conv.apply(gg, self.saved("w"), **geometry) if self.needs_input_grad[0] else None
        dw = (ConvWeightGrad.apply(gg, self.saved("y"), kernel_size=self.input_meta[1][0][2:],
                                   **geometry) if self.needs_input_grad[1] else None)
        return dy, dw


def _col2im(xp, y, w, output_size, stride, padding, dilation, groups):
    """ConvTranspose's general path (any stride): per tap t, the column block y^T w_t (M x C/G)
    is added into the tap's windows of a zero buffer."""
    n, kernel = y.shape[0], w.shape[2:]
    # rows, not a transposed view of _as_matrix: BLAS was ~25% slower on the transposed form
    ym = _as_rows(y, groups)                                           # (G, M, O/G)
    wt = _weight_taps(xp, w, groups)                                   # (G, O/G, *K, C/G)
    cg = w.shape[1]
    padded = xp.zeros((n, *(s + 2 * p for s, p in zip(output_size, padding)), groups, cg),
                      dtype=y.dtype)
    win = sliding_windows(padded, 1, y.shape[2:], kernel, stride, dilation)
    # each tap's column block is made and added in turn, in one reused buffer (peak memory
    # M x C/G, and no fresh allocation per tap: that measured ~10% of this op)
    block = xp.empty((groups, ym.shape[1], cg), dtype=y.dtype)
    for tap in kernel_taps(kernel):
        xp.matmul(ym, wt[(slice(None), slice(None)) + tap], out=block)   # (G, M, C/G)
        win[tap] += xp.moveaxis(block.reshape(groups, n, *y.shape[2:], cg), 0, -2)
    x = padded[_inner(padding, output_size)].reshape(n, *output_size, groups * cg)
    return xp.ascontiguousarray(xp.moveaxis(x, -1, 1))


def _weight_grad(xp, cols, g, groups, w_shape):
    """dw (O, C/G, *K) = g (G, O/G, M) @ cols (G, M, prod(K)*C/G), one GEMM per group."""
    dw = xp.matmul(_as_matrix(xp, g, groups), cols)                        # (G, O/G, K*C/G)
    _, cg, *kernel = w_shape
    return xp.moveaxis(dw.reshape(dw.shape[:2] + tuple(kernel) + (cg,)), -1, 2).reshape(w_shape)


class ConvWeightGrad(Function):
    """dw = ConvWeightGrad(x, g): dw[o, c, t] = sum_(n,q) g[n, o, q] x[n, c, q*s + t*d - p],
    i.e. g (G, O/G, M) @ cols(x) (G, M, prod(K)*C/G), the columns rebuilt from x.

    Backward: dx = ConvTranspose(g, gg),  dg = Conv(x, gg)."""

    def forward(self, x, g, *, kernel_size, stride, padding, dilation, groups):
        # one GEMM on the full columns, not one per tap: per-tap GEMMs with numpy copies in
        # between measured as fast on an idle machine but up to 10x slower on a busy one (each
        # call waits for BLAS's worker threads to be scheduled again)
        cols = _columns(self.xp, x, kernel_size, g.shape[2:], stride, padding, dilation, groups)
        if self.needs_input_grad[0]:
            self.save_for_backward(g=g)
        if self.needs_input_grad[1]:
            self.save_for_backward(x=x)
        w_shape = (g.shape[1], x.shape[1] // groups) + tuple(kernel_size)
        return _weight_grad(self.xp, cols, g, groups, w_shape)

    def backward(self, gg):
        geometry = {k: v for k, v in self.attrs.items() if k != "kernel_size"}
        dx = (ConvTranspose.apply(self.saved("g"), gg, output_size=self.input_meta[0][0][2:],
                                  **geometry) if self.needs_input_grad[0] else None)
        dg = Conv.apply(self.saved("x"), gg, **geometry) if self.needs_input_grad[1] else None
        return dx, dg


# ---- argument checks (all before any array work) ----------------------------------------------
def _int_tuple(value, nd, name, opname, what="convolution"):
    """An int or a sequence of 1 or nd ints -> an nd-tuple of ints."""
    items = (value,) if isinstance(value, (int, np.integer)) else value
    if (not isinstance(items, (tuple, list)) or len(items) not in (1, nd)
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                       for v in items)):
        raise RuntimeError(f"{opname}: expected {name} to be a single integer value or a list of "
                           f"{nd} values to match the {what} dimensions, but got {name}={value!r}")
    return tuple(int(v) for v in items) * (nd if len(items) == 1 else 1)


def _check_tensors(opname, **tensors):
    """Tensors (None allowed for optional ones) of one floating dtype on one device."""
    given = {k: t for k, t in tensors.items() if t is not None}
    for name, t in given.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{opname}: expected {name} to be a Tensor, got {type(t).__name__}")
        if not dtypes.is_floating(t.dtype):
            raise RuntimeError(f"{opname}: expected a floating-point {name}, got {name} of dtype "
                               f"{t.dtype}")
    (first, ref), *others = given.items()
    for name, t in others:
        if t.device != ref.device:
            raise RuntimeError(f"{opname}: expected {first} and {name} on the same device, but got "
                               f"{first} on {ref.device} and {name} on {t.device}")
        if t.dtype != ref.dtype:
            raise RuntimeError(f"{opname}: expected {first} and {name} to have the same dtype, but "
                               f"got {first} {ref.dtype} and {name} {t.dtype}")


def _check_weight_and_bias(opname, weight, bias, nd, groups, out_channels_axis=0):
    if weight.ndim != nd + 2:
        raise RuntimeError(f"{opname}: expected weight to be {nd + 2}-D (channels, channels, "
                           f"*kernel), but got weight of size {list(weight.shape)}")
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups <= 0:
        raise RuntimeError(f"{opname}: non-positive groups is not supported, got groups={groups!r}")
    if out_channels_axis == 0 and weight.shape[0] % groups:
        raise RuntimeError(f"{opname}: Given groups={groups}, expected weight to be divisible by "
                           f"{groups} at dimension 0, but got weight of size "
                           f"{list(weight.shape)} instead")
    out_channels = weight.shape[0] if out_channels_axis == 0 else weight.shape[1] * groups
    if bias is not None and (bias.ndim != 1 or bias.shape[0] != out_channels):
        raise RuntimeError(f"{opname}: Given weight of size {list(weight.shape)}, expected bias to "
                           f"be 1-dimensional with {out_channels} elements, but got bias of size "
                           f"{list(bias.shape)} instead")


def _check_input(opname, input, nd):
    if input.ndim not in (nd + 1, nd + 2):
        raise RuntimeError(f"{opname}: Expected {nd + 1}D (unbatched) or {nd + 2}D (batched) input "
                           f"to {opname}, but got input of size: {list(input.shape)}")


def _check_geometry(opname, stride, padding, dilation):
    if any(s <= 0 for s in stride):
        raise RuntimeError(f"{opname}: non-positive stride is not supported, got stride={stride}")
    if any(p < 0 for p in padding):
        raise RuntimeError(f"{opname}: negative padding is not supported, got padding={padding}")
    if any(d <= 0 for d in dilation):
        raise RuntimeError(f"{opname}: dilation should be greater than zero, but got "
                           f"dilation={dilation}")


def _same_padding(opname, padding, kernel, stride, dilation):
    """'valid' -> 0; 'same' -> (before, extra): the total d(K-1) split evenly, an odd unit last."""
    if padding == "valid":
        return (0,) * len(kernel), (0,) * len(kernel)
    if padding != "same":
        raise RuntimeError(f"{opname}: Invalid padding string {padding!r}, should be one of "
                           f"'valid' or 'same'")
    if any(s != 1 for s in stride):
        raise RuntimeError(f"{opname}: padding='same' is not supported for strided convolutions, "
                           f"got stride={stride}")
    totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
    return tuple(t // 2 for t in totals), tuple(t % 2 for t in totals)


def _unbatched(fn, input, *args):
    """PyTorch accepts one sample without the batch dim: add it, run, remove it."""
    return fn(input.unsqueeze(0), *args).squeeze(0)


def _conv(opname, nd, input, weight, bias, stride, padding, dilation, groups):
    _check_tensors(opname, input=input, weight=weight, bias=bias)
    _check_input(opname, input, nd)
    _check_weight_and_bias(opname, weight, bias, nd, groups)
    stride = _int_tuple(stride, nd, "stride", opname)
    dilation = _int_tuple(dilation, nd, "dilation", opname)
    kernel = weight.shape[2:]
    extra = (0,) * nd
    if isinstance(padding, str):
        padding, extra = _same_padding(opname, padding, kernel, stride, dilation)
    padding = _int_tuple(padding, nd, "padding", opname)
    _check_geometry(opname, stride, padding, dilation)
    batched = input.ndim == nd + 2
    channels = input.shape[1 if batched else 0]
    if channels != weight.shape[1] * groups:
        raise RuntimeError(f"{opname}: expected input{list(input.shape)} to have "
                           f"{weight.shape[1] * groups} channels (weight {list(weight.shape)}, "
                           f"groups={groups}), but got {channels} channels")
    size = input.shape[-nd:]
    padded = tuple(s + 2 * p + e for s, p, e in zip(size, padding, extra))
    effective = tuple(d * (k - 1) + 1 for d, k in zip(dilation, kernel))
    if any(p < k for p, k in zip(padded, effective)):
        raise RuntimeError(f"{opname}: Calculated padded input size per channel: "
                           f"({' x '.join(map(str, padded))}). Kernel size: "
                           f"({' x '.join(map(str, effective))}). Kernel size can't be greater "
                           f"than actual input size (input {list(input.shape)}, weight "
                           f"{list(weight.shape)}, padding={padding}, dilation={dilation})")
    if any(extra):  # 'same' with an even effective kernel: PyTorch pads the odd unit at the end
        from tinygrad_bn.ops.shape import pad
        input = pad(input, [w for e in reversed(extra) for w in (0, e)])
    inputs = (weight,) if bias is None else (weight, bias)
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=int(groups))
    if not batched:
        return _unbatched(lambda x: Conv.apply(x, *inputs, **attrs), input)
    return Conv.apply(input, *inputs, **attrs)


def _conv_transpose(opname, nd, input, weight, bias, stride, padding, output_padding, groups,
                    dilation):
    _check_tensors(opname, input=input, weight=weight, bias=bias)
    _check_input(opname, input, nd)
    _check_weight_and_bias(opname, weight, bias, nd, groups, out_channels_axis=1)
    stride = _int_tuple(stride, nd, "stride", opname)
    padding = _int_tuple(padding, nd, "padding", opname)
    output_padding = _int_tuple(output_padding, nd, "output_padding", opname)
    dilation = _int_tuple(dilation, nd, "dilation", opname)
    _check_geometry(opname, stride, padding, dilation)
    batched = input.ndim == nd + 2
    channels = input.shape[1 if batched else 0]
    if channels != weight.shape[0]:
        raise RuntimeError(f"{opname}: expected input{list(input.shape)} to have "
                           f"{weight.shape[0]} channels (weight {list(weight.shape)}, "
                           f"groups={groups}), but got {channels} channels")
    if weight.shape[0] % groups:
        raise RuntimeError(f"{opname}: Given groups={groups}, expected weight to be divisible by "
                           f"{groups} at dimension 0, but got weight of size "
                           f"{list(weight.shape)} instead")
    if any(op < 0 or (op >= s and op >= d) for op, s, d in zip(output_padding, stride, dilation)):
        raise RuntimeError(f"{opname}: output padding must be non-negative and smaller than either "
                           f"stride or dilation, but got output_padding={output_padding}, "
                           f"stride={stride}, dilation={dilation}")
    kernel = weight.shape[2:]
    out_size = tuple((s - 1) * st - 2 * p + d * (k - 1) + op + 1 for s, st, p, d, k, op in
                     zip(input.shape[-nd:], stride, padding, dilation, kernel, output_padding))
    if any(n <= 0 for n in out_size):
        raise RuntimeError(f"{opname}: the calculated output size {list(out_size)} is too small "
                           f"(input {list(input.shape)}, weight {list(weight.shape)}, "
                           f"padding={padding})")

    def run(x):
        out = ConvTranspose.apply(x, weight, output_size=out_size, stride=stride, padding=padding,
                                  dilation=dilation, groups=int(groups))
        return out if bias is None else out + bias.reshape((1, -1) + (1,) * nd)
    return run(input) if batched else _unbatched(run, input)


# ---- the functional forms (torch.nn.functional names and signatures) -------------------------
def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv1d: input (N, C, L) or (C, L), weight (O, C/groups, K)."""
    return _conv("conv1d", 1, input, weight, bias, stride, padding, dilation, groups)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d: input (N, C, H, W) or (C, H, W), weight (O, C/groups, kH, kW);
    padding an int, a pair, 'valid' or 'same' (stride 1 only)."""
    return _conv("conv2d", 2, input, weight, bias, stride, padding, dilation, groups)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv3d: input (N, C, D, H, W) or (C, D, H, W)."""
    return _conv("conv3d", 3, input, weight, bias, stride, padding, dilation, groups)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """torch.nn.functional.conv_transpose1d: weight (C_in, C_out/groups, K)."""
    return _conv_transpose("conv_transpose1d", 1, input, weight, bias, stride, padding,
                           output_padding, groups, dilation)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """torch.nn.functional.conv_transpose2d: weight (C_in, C_out/groups, kH, kW); the gradient of
    conv2d with respect to its input, output size (H-1)*stride - 2*padding + dilation*(k-1)
    + output_padding + 1."""
    return _conv_transpose("conv_transpose2d", 2, input, weight, bias, stride, padding,
                           output_padding, groups, dilation)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """torch.nn.functional.conv_transpose3d: input (N, C_in, D, H, W) or unbatched, weight
    (C_in, C_out/groups, kD, kH, kW)."""
    return _conv_transpose("conv_transpose3d", 3, input, weight, bias, stride, padding,
                           output_padding, groups, dilation)
