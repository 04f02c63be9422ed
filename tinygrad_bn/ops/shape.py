"""Shape ops: reshape/view/flatten, permute/transpose, expand, squeeze/unsqueeze, indexing,
cat/stack/split/chunk, pad, and moving between devices. Their backwards move the gradient back
into the input's layout; indexing scatters it (adding where an index repeats)."""
import math

import numpy as np

from tinygrad_bn import backend, dtypes
from tinygrad_bn.autograd.function import Function
from tinygrad_bn.autograd.views import ViewFunction
from tinygrad_bn.autograd.grad_mode import is_grad_enabled
from tinygrad_bn.ops._helpers import as_tensor, normalize_dims, sum_to_shape
from tinygrad_bn.tensor import Tensor, _wrap_dim


def _shape_arg(shape, opname):
    """Accept f(x, 2, 3), f(x, (2, 3)) and f(x, [2, 3])."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for n in shape:
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
            raise TypeError(f"{opname}: sizes must be ints, got {list(shape)}")
    return tuple(int(n) for n in shape)


class Reshape(ViewFunction):
    """y = x with a new shape (same elements, row-major order).   dx = g reshaped back."""

    def forward(self, x, shape):
        return x.reshape(shape)

    def backward(self, g):
        return reshape(g, self.input_meta[0][0])


def reshape(x, *shape):
    if len(shape) == 1 and type(shape[0]) is tuple:
        shape = shape[0]
    if shape == x.data.shape:
        return x
    if -1 not in shape and all(type(n) is int and n >= 0 for n in shape) and \
            math.prod(shape) == x.data.size:
        return Reshape.apply(x, shape=shape)  # the common case: an explicit, valid shape
    shape = _shape_arg(shape, "reshape")
    size = x.numel()
    if shape.count(-1) > 1:
        raise RuntimeError(f"reshape: only one dimension can be inferred, got shape {list(shape)}")
    known = math.prod(n for n in shape if n != -1)
    if any(n < -1 for n in shape) or (-1 in shape and (known == 0 or size % known)) or \
            (-1 not in shape and known != size):
        raise RuntimeError(f"reshape: shape '{list(shape)}' is invalid for input of size {size}")
    if -1 in shape:
        shape = tuple(size // known if n == -1 else n for n in shape)
    if shape == x.shape:
        return x
    return Reshape.apply(x, shape=shape)


view = reshape


def flatten(x, start_dim=0, end_dim=-1):
    if x.ndim == 0:
        return reshape(x, 1)
    start, end = _wrap_dim(start_dim, x.ndim, "flatten"), _wrap_dim(end_dim, x.ndim, "flatten")
    if start > end:
        raise RuntimeError(f"flatten: start_dim ({start_dim}) cannot come after end_dim ({end_dim})")
    s = x.shape
    return reshape(x, s[:start] + (math.prod(s[start:end + 1]),) + s[end + 1:])


def squeeze(x, dim=None):
    if dim is None:
        return reshape(x, tuple(n for n in x.shape if n != 1))
    dims = normalize_dims(dim, x.ndim, "squeeze")
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if not (i in dims and n == 1)))


def unsqueeze(x, dim):
    d = _wrap_dim(dim, x.ndim + 1, "unsqueeze")
    return reshape(x, x.shape[:d] + (1,) + x.shape[d:])


class Permute(ViewFunction):
    """y = x with its axes reordered by `dims`.   dx = g permuted by the inverse order."""

    def forward(self, x, dims):
        return x.transpose(dims)

    def backward(self, g):
        return permute(g, *np.argsort(self.attrs["dims"]).tolist())


def permute(x, *dims):
    dims = _shape_arg(dims, "permute")
    if len(dims) != x.ndim or sorted(d % max(x.ndim, 1) for d in dims) != list(range(x.ndim)):
        raise RuntimeError(f"permute: dims {list(dims)} are not a permutation of the "
                           f"{x.ndim} dims of a tensor of shape {list(x.shape)}")
    dims = tuple(d % x.ndim for d in dims)
    if dims == tuple(range(x.ndim)):
        return x
    return Permute.apply(x, dims=dims)


def transpose(x, dim0, dim1):
    d0, d1 = _wrap_dim(dim0, x.ndim, "transpose"), _wrap_dim(dim1, x.ndim, "transpose")
    if x.ndim == 0:  # dims 0 and -1 name the one "dim" of a 0-d tensor; nothing moves
        return x
    order = list(range(x.ndim))
    order[d0], order[d1] = order[d1], order[d0]
    return permute(x, *order)


class Expand(ViewFunction):
    """y = x broadcast to `shape` (a read-only view).   dx = g summed over the broadcast dims."""

    def forward(self, x, shape):
        return self.xp.broadcast_to(x, shape)

    def backward(self, g):
        return sum_to_shape(g, self.input_meta[0][0])


def expand(x, *sizes):
    sizes = _shape_arg(sizes, "expand")
    if len(sizes) < x.ndim:
        raise RuntimeError(f"expand: the number of sizes provided ({len(sizes)}) must be greater "
                           f"or equal to the number of dimensions in the tensor ({x.ndim})")
    lead = len(sizes) - x.ndim
    target = []
    for i, n in enumerate(sizes):
        old = x.shape[i - lead] if i >= lead else None
        if n == -1:
            if old is None:
                raise RuntimeError(f"expand: -1 is not allowed in a leading, non-existing dimension "
                                   f"(sizes {list(sizes)})")
            n = old
        elif old is not None and old != 1 and old != n:
            raise RuntimeError(f"expand: the expanded size of the tensor ({n}) must match the "
                               f"existing size ({old}) at non-singleton dimension {i}. Target sizes: "
                               f"{list(sizes)}. Tensor sizes: {list(x.shape)}")
        target.append(n)
    target = tuple(target)
    return x if target == x.shape else Expand.apply(x, shape=target)


# ---- indexing -------------------------------------------------------------------------------
def _index_key(x, key):
    """Turn Tensors and lists inside an index into arrays on x's device; report if advanced."""
    parts = key if isinstance(key, tuple) else (key,)
    xp = x.xp
    out, advanced = [], False
    for k in parts:
        if isinstance(k, Tensor):
            if k.device != x.device:
                raise RuntimeError(f"index: indices on {k.device} for a tensor on {x.device}")
            if k.dtype.kind not in "iub":
                raise IndexError(f"index: tensors used as indices must be long, int or bool, "
                                 f"got {k.dtype}")
            k = k.data
        elif isinstance(k, (list, np.ndarray)):
            k = np.asarray(k)
            if k.dtype.kind not in "iub" and k.size:
                raise IndexError(f"index: lists used as indices must hold ints or bools, got {k.dtype}")
            k = k.astype(np.int64) if k.dtype.kind != "b" else k
            k = k if xp is np else xp.asarray(k)
        elif not (k is None or k is Ellipsis or isinstance(k, (slice, int, np.integer))):
            raise IndexError(f"index: unsupported index {k!r} of type {type(k).__name__}; use ints, "
                             f"slices, None, ..., or integer/bool tensors")
        if backend.is_array(k) and k.dtype.kind != "b":
            advanced = True  # integer arrays may repeat an index: backward must accumulate
        out.append(k)
    return tuple(out), advanced


def _checked_getitem(array, key, shape):
    try:
        return array[key]
    except IndexError as e:
        raise IndexError(f"index: {e} (indexing a tensor of shape {list(shape)})") from None


class Index(ViewFunction):
    """y = x[key].   dx = zeros with g scattered into the indexed places (added where repeated)."""

    def forward(self, x, key, advanced):
        if not advanced and not any(k is Ellipsis for k in key):
            key = key + (Ellipsis,)  # x[0] of a vector: a 0-d view, not a copied scalar (PyTorch)
        return _checked_getitem(x, key, x.shape)

    def backward(self, g):
        shape, _ = self.input_meta[0]
        return IndexBackward.apply(g, key=self.attrs["key"], shape=shape, advanced=self.attrs["advanced"])


class IndexBackward(Function):
    """y = zeros(shape); y[key] += g.   Its own backward is indexing again: dg = gy[key]."""

    def forward(self, g, key, shape, advanced):
        out = self.xp.zeros(shape, dtype=g.dtype)
        if advanced:  # integer indices may repeat: accumulate
            backend.scatter_add(out, key, g)
        else:         # slices, ints and masks address each element once
            out[key] = g
        return out

    def backward(self, gg):
        return Index.apply(gg, key=self.attrs["key"], advanced=self.attrs["advanced"])


def index(x, key):
    key, advanced = _index_key(x, key)
    return Index.apply(x, key=key, advanced=advanced)


class SetItem(Function):
    """y = x with y[key] = v.   dx = g with zeros at key,  dv = g[key] summed to v's shape."""

    def forward(self, x, v, key):
        y = x.copy()
        y[key] = v
        return y

    def backward(self, g):
        key = self.attrs["key"]
        dx = dv = None
        if self.needs_input_grad[0]:
            keep = self.xp.ones(g.shape, dtype=g.dtype)
            keep[key] = 0
            dx = g * Tensor._make(keep)
        if self.needs_input_grad[1]:
            dv = sum_to_shape(g[key], self.input_meta[1][0])
        return dx, dv


def setitem(x, key, value):
    """x[key] = value, in place (recorded in the graph when gradients are needed)."""
    key, _ = _index_key(x, key)
    value = as_tensor(value, x, x.dtype if not isinstance(value, Tensor) else None)
    if value.device != x.device:
        raise RuntimeError(f"setitem: value on {value.device} for a tensor on {x.device}")
    if value.dtype != x.dtype:
        from tinygrad_bn.ops.elementwise import cast
        value = cast(value, x.dtype)
    try:
        target_shape = x.data[key].shape
        np.broadcast_shapes(tuple(value.shape), tuple(target_shape))
    except IndexError as e:
        raise IndexError(f"setitem: {e} (tensor of shape {list(x.shape)})") from None
    except ValueError:
        raise RuntimeError(f"setitem: value of shape {list(value.shape)} cannot be broadcast to "
                           f"the indexed shape {list(target_shape)}") from None
    if x._view is not None or (is_grad_enabled() and (x.requires_grad or value.requires_grad)):
        # recorded, or into a view (overlap check; a row of an expand is read-only in NumPy)
        return x._inplace(SetItem.apply(x, value, key=key), "setitem")
    x.data[key] = value.data
    x._version[0] += 1
    return x


# ---- joining and splitting ------------------------------------------------------------------
class Cat(Function):
    """y = the inputs joined along `dim`.   Each input gets its slice of g."""

    def forward(self, *arrays, dim):
        return self.xp.concatenate(arrays, axis=dim)

    def backward(self, g):
        dim, start, grads = self.attrs["dim"], 0, []
        for (shape, _), needed in zip(self.input_meta, self.needs_input_grad):
            stop = start + shape[dim]
            grads.append(narrow(g, dim, start, stop - start) if needed else None)
            start = stop
        return tuple(grads)


def cat(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("cat: expected a non-empty list of Tensors")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"cat: expected a sequence of Tensors, item {i} is {type(t).__name__}")
    ref = tensors[0]
    d = _wrap_dim(dim, ref.ndim, "cat")
    for i, t in enumerate(tensors[1:], 1):
        if t.ndim != ref.ndim:
            raise RuntimeError(f"cat: Tensors must have same number of dimensions: got {ref.ndim} "
                               f"and {t.ndim} (tensor number {i})")
        for j, (a, b) in enumerate(zip(ref.shape, t.shape)):
            if j != d and a != b:
                raise RuntimeError(f"cat: Sizes of tensors must match except in dimension {d}. "
                                   f"Expected size {a} but got size {b} for tensor number {i} in the list.")
    dtype = ref.dtype
    for t in tensors[1:]:
        dtype = dtypes.promote(dtype, t.dtype)
    from tinygrad_bn.ops.elementwise import cast
    return Cat.apply(*[cast(t, dtype) for t in tensors], dim=d)


def stack(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("stack: expected a non-empty list of Tensors")
    for i, t in enumerate(tensors[1:], 1):
        if t.shape != tensors[0].shape:
            raise RuntimeError(f"stack: expects each tensor to be equal size, but got "
                               f"{list(tensors[0].shape)} at entry 0 and {list(t.shape)} at entry {i}")
    d = _wrap_dim(dim, tensors[0].ndim + 1, "stack")
    return cat([unsqueeze(t, d) for t in tensors], d)


def narrow(x, dim, start, length):
    d = _wrap_dim(dim, x.ndim, "narrow")
    size = x.shape[d] if x.ndim else 1
    if not isinstance(start, (int, np.integer)) or not isinstance(length, (int, np.integer)):
        raise TypeError(f"narrow: start and length must be ints, got {start!r} and {length!r}")
    if not -size <= start <= size:
        raise IndexError(f"narrow: start ({start}) out of range for dim {d} of size {size} "
                         f"(expected to be in range of [{-size}, {size}])")
    start = start + size if start < 0 else start  # a negative start counts from the end
    if length < 0 or start + length > size:
        raise RuntimeError(f"narrow: start ({start}) + length ({length}) exceeds dimension size ({size})")
    key = (slice(None),) * d + (slice(start, start + length),)
    return Index.apply(x, key=key, advanced=False)


def split(x, split_size_or_sections, dim=0):
    d = _wrap_dim(dim, x.ndim, "split")
    n = x.shape[d]
    if isinstance(split_size_or_sections, (int, np.integer)):
        size = int(split_size_or_sections)
        if size <= 0:
            raise RuntimeError(f"split: split_size must be positive, got {size}")
        sizes = [min(size, n - s) for s in range(0, n, size)] or [0]
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if sum(sizes) != n or any(s < 0 for s in sizes):
            raise RuntimeError(f"split: split_with_sizes expects split_sizes to sum exactly to {n} "
                               f"(input tensor's size at dimension {d}), but got split_sizes={sizes}")
    out, start = [], 0
    for s in sizes:
        out.append(narrow(x, d, start, s))
        start += s
    return tuple(out)


def chunk(x, chunks, dim=0):
    if not isinstance(chunks, (int, np.integer)) or chunks <= 0:
        raise RuntimeError(f"chunk: chunks must be a positive int, got {chunks!r}")
    n = x.shape[_wrap_dim(dim, x.ndim, "chunk")]
    return split(x, max(math.ceil(n / chunks), 1), dim)


class Pad(Function):
    """y = x with `widths` of constant `value` around it.   dx = the middle of g."""

    def forward(self, x, widths, value):
        return self.xp.pad(x, widths, mode="constant", constant_values=value)

    def backward(self, g):
        shape = self.input_meta[0][0]
        key = tuple(slice(lo, lo + n) for (lo, _), n in zip(self.attrs["widths"], shape))
        return Index.apply(g, key=key, advanced=False)


class GatherAxis(Function):
    """y[..., j, ...] = x[..., idx[j], ...] along `axis` (idx may repeat).
    dx[..., i, ...] = sum of g[..., j, ...] over the j with idx[j] = i   (ScatterAddAxis)."""

    def forward(self, x, idx, axis):
        return self.xp.take(x, self.xp.asarray(idx, dtype=np.intp), axis=axis)

    def backward(self, g):
        return ScatterAddAxis.apply(g, idx=self.attrs["idx"], axis=self.attrs["axis"],
                                    size=self.input_meta[0][0][self.attrs["axis"]])


class ScatterAddAxis(Function):
    """y[..., i, ...] = sum of x[..., j, ...] over the j with idx[j] = i (y has `size` along axis).
    dx = g gathered at idx   (GatherAxis): the two are each other's adjoint."""

    def forward(self, x, idx, axis, size):
        xp = self.xp
        shape = list(x.shape)
        shape[axis] = size
        out = xp.zeros(shape, dtype=x.dtype)
        moved = xp.moveaxis(out, axis, 0)  # a view: the scatter along the first axis writes into out
        backend.scatter_add(moved, xp.asarray(idx, dtype=np.intp), xp.moveaxis(x, axis, 0))
        return out

    def backward(self, g):
        return GatherAxis.apply(g, idx=self.attrs["idx"], axis=self.attrs["axis"])


def _pad_positions(n, left, right, mode):
    """Source index of each output position along one dim, out length n + left + right; a negative
    left / right crops that side first (PyTorch's rules):
    reflect   i = |j| mirrored at n - 1 (the edge is not repeated),  j in [-left, n + right);
    replicate i = clip(j, 0, n - 1);
    circular  the cropped run x[lo:hi] repeated: i = lo + (j mod (hi - lo)), j in [-l+, m + r+)."""
    if mode == "circular":
        lo, hi = max(-left, 0), n - max(-right, 0)
        j = np.arange(-max(left, 0), hi - lo + max(right, 0))
        return lo + j % max(hi - lo, 1)
    j = np.arange(-left, n + right)
    if mode == "reflect":
        j = np.abs(j)
        return np.where(j >= n, 2 * (n - 1) - j, j)
    return np.clip(j, 0, n - 1)


def _pad_by_index(x, pad, mode):
    """reflect / replicate / circular padding: one gather per padded dim (differentiable twice)."""
    k = len(pad) // 2
    if k not in (1, 2, 3) or x.ndim not in (k + 1, k + 2):
        raise NotImplementedError(f"pad: padding size {len(pad)} is not supported for {x.ndim}D input in mode "
                                  f"{mode!r}: it takes 2 (2D or 3D input), 4 (3D or 4D) or 6 (4D or 5D)")
    if mode != "circular" and 0 in (x.shape[1:] if x.ndim == k + 2 else x.shape):  # only a batch may be empty
        raise RuntimeError(f"pad: mode {mode!r} expects a {k + 1}D or {k + 2}D (batch mode) input with possibly "
                           f"0 batch size and other non-zero dimensions, got input shape {list(x.shape)}")
    for i in range(k):
        d = x.ndim - 1 - i
        left, right, n = pad[2 * i], pad[2 * i + 1], x.shape[d]
        if mode == "reflect" and (left >= n or right >= n):
            raise RuntimeError(f"pad: padding size should be less than the corresponding input dimension "
                               f"for mode 'reflect', but got padding ({left}, {right}) at dim {d} of input "
                               f"shape {list(x.shape)}")
        if mode == "circular" and (left > n or right > n):
            raise RuntimeError(f"pad: padding value causes wrapping around more than once for mode "
                               f"'circular': padding ({left}, {right}) at dim {d} of input shape {list(x.shape)}")
        cropped = n - max(-left, 0) - max(-right, 0)
        too_small = (cropped < 0 or (cropped == 0 and max(left, right) > 0)) if mode == "circular" \
            else n + left + right < 1
        if too_small:
            raise RuntimeError(f"pad: input size {n} at dim {d} is too small for padding ({left}, {right}) in "
                               f"mode {mode!r}: the output size would be {n + left + right}")
        if left or right:
            x = GatherAxis.apply(x, idx=tuple(int(k) for k in _pad_positions(n, left, right, mode)), axis=d)
    return x


def pad(x, pad, mode="constant", value=None):
    """torch.nn.functional.pad: `pad` lists (left, right) pairs starting from the last dim; a
    negative width crops. mode 'constant' (value, default 0), 'reflect', 'replicate' or 'circular'."""
    if mode not in ("constant", "reflect", "replicate", "circular"):
        raise NotImplementedError(f"pad: mode {mode!r} is not supported; expected 'constant', 'reflect', "
                                  f"'replicate' or 'circular'")
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2:
        raise RuntimeError(f"pad: padding length must be divisible by 2, got {len(pad)} ({list(pad)})")
    if mode != "constant":
        if value not in (None, 0, 0.0):
            raise RuntimeError(f"pad: padding mode {mode!r} doesn't take in value argument, got value={value!r}")
        return _pad_by_index(x, pad, mode)
    value = 0.0 if value is None else value
    if len(pad) // 2 > x.ndim:
        raise RuntimeError(f"pad: padding length must be even and at most 2*ndim "
                           f"({2 * x.ndim}), got {len(pad)} for input of shape {list(x.shape)}")
    widths, crop = [(0, 0)] * x.ndim, [slice(None)] * x.ndim
    for i in range(len(pad) // 2):
        d, (left, right) = x.ndim - 1 - i, pad[2 * i: 2 * i + 2]
        if x.shape[d] + left + right < 0:
            raise RuntimeError(f"pad: the input size {x.shape[d]} at dim {d}, plus negative padding ({left}, "
                               f"{right}), results in a negative output size {x.shape[d] + left + right}")
        widths[d] = (max(left, 0), max(right, 0))
        crop[d] = slice(max(-left, 0), x.shape[d] - max(-right, 0))
    if any(s != slice(None) for s in crop):
        x = x[tuple(crop)]
    return Pad.apply(x, widths=tuple(widths), value=value)


# ---- devices --------------------------------------------------------------------------------
class ToDevice(Function):
    """y = x copied to another device.   dx = g copied back."""

    def forward(self, x, device):
        return backend.to_device(x, device)

    def backward(self, g):
        return to_device(g, self.device)


def to_device(x, device):
    if x.device == device:
        return x
    backend.array_module(device)  # a clear error for cuda without a GPU
    return ToDevice.apply(x, device=device)
