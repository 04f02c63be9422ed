"""Rearranging elements: flip, roll, repeat, tril/triu, diag, unbind, unflatten, t.
Each backward moves the gradient back to where its element came from (repeat: summed over copies)."""
import numpy as np

from tinygrad_bn.autograd.function import Function
from tinygrad_bn.ops._helpers import normalize_dims
from tinygrad_bn.tensor import _wrap_dim


def _ints(values, opname, what):
    values = tuple(values) if isinstance(values, (tuple, list)) else (values,)
    for v in values:
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise TypeError(f"{opname}: {what} must be ints, got {list(values)}")
    return tuple(int(v) for v in values)


class Flip(Function):
    """y = x reversed along `dims` (a copy, as PyTorch).   dx = g reversed along the same dims."""

    def forward(self, x, dims):
        return self.xp.flip(x, dims).copy()

    def backward(self, g):
        return Flip.apply(g, dims=self.attrs["dims"])


def flip(x, dims):
    dims = normalize_dims(_ints(dims, "flip", "dims"), x.ndim, "flip")
    return Flip.apply(x, dims=dims) if dims else x.clone()  # clone keeps bool bool (x * 1 is int64)


class Roll(Function):
    """y = x shifted cyclically by `shifts` along `dims` (dims=None: the flattened tensor).
    dx = g rolled back by -shifts."""

    def forward(self, x, shifts, dims):
        return self.xp.roll(x, shifts, dims)

    def backward(self, g):
        shifts = self.attrs["shifts"]
        back = -shifts if isinstance(shifts, int) else tuple(-s for s in shifts)
        return Roll.apply(g, shifts=back, dims=self.attrs["dims"])


def roll(x, shifts, dims=None):
    shifts = _ints(shifts, "roll", "shifts")
    if dims is None:
        if len(shifts) != 1:
            raise RuntimeError(f"roll: without dims, shifts must be one int, got {list(shifts)}")
        return Roll.apply(x, shifts=shifts[0], dims=None)
    dims = _ints(dims, "roll", "dims")
    if len(dims) != len(shifts):
        raise RuntimeError(f"roll: shifts and dimensions must align. shifts: {len(shifts)}, "
                           f"dims: {len(dims)}")
    if x.ndim == 0:  # PyTorch: no dim of a 0-d tensor can be rolled (without dims it can)
        raise IndexError(f"roll: Dimension specified as {dims[0]} but tensor has no dimensions")
    dims = tuple(_wrap_dim(d, x.ndim, "roll") for d in dims)
    return Roll.apply(x, shifts=shifts, dims=dims)


class Repeat(Function):
    """y = x tiled `sizes` times along each dim (x first gets leading 1-dims to len(sizes)).
    dx = g viewed as (r0, n0, r1, n1, ...) and summed over the r axes (every copy's gradient)."""

    def forward(self, x, sizes):
        return self.xp.tile(x.reshape((1,) * (len(sizes) - x.ndim) + x.shape), sizes)

    def backward(self, g):
        sizes, shape = self.attrs["sizes"], self.input_meta[0][0]
        full = (1,) * (len(sizes) - len(shape)) + tuple(shape)
        split = [n for pair in zip(sizes, full) for n in pair]
        return g.reshape(split).sum(tuple(range(0, 2 * len(sizes), 2))).reshape(shape)


def repeat(x, *sizes):
    if not sizes:
        raise TypeError('repeat() missing 1 required positional arguments: "repeats"')
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    sizes = _ints(sizes, "repeat", "sizes")
    if len(sizes) < x.ndim:
        raise RuntimeError(f"repeat: Number of dimensions of repeat dims ({len(sizes)}) can not be "
                           f"smaller than number of dimensions of tensor ({x.ndim}, shape {list(x.shape)})")
    if any(s < 0 for s in sizes):
        raise RuntimeError(f"repeat: repeats must be non-negative, got {list(sizes)}")
    return Repeat.apply(x, sizes=sizes)


class Triangle(Function):
    """y = x where (col - row <= k) [tril] or (col - row >= k) [triu], else 0, on the last two dims.
    dx = g with the same mask."""

    def forward(self, x, diagonal, upper):
        mask = _triangle_mask(self.xp, x.shape, diagonal, upper)  # broadcast over leading dims
        return self.xp.where(mask, x, 0).astype(x.dtype, copy=False)

    def backward(self, g):
        return Triangle.apply(g, diagonal=self.attrs["diagonal"], upper=self.attrs["upper"])


def _triangle_mask(xp, shape, k, upper):
    rows, cols = shape[-2], shape[-1]
    lower = xp.tri(rows, cols, k - 1 if upper else k, dtype=bool)
    return ~lower if upper else lower


def _triangle(x, diagonal, upper):
    name = "triu" if upper else "tril"
    if x.ndim < 2:
        raise RuntimeError(f"{name}: input tensor must have at least 2 dimensions, got shape {list(x.shape)}")
    if not isinstance(diagonal, (int, np.integer)) or isinstance(diagonal, bool):
        raise TypeError(f"{name}: diagonal must be an int, got {diagonal!r}")
    return Triangle.apply(x, diagonal=int(diagonal), upper=upper)


def tril(x, diagonal=0): return _triangle(x, diagonal, upper=False)
def triu(x, diagonal=0): return _triangle(x, diagonal, upper=True)


def _diag_positions(xp, length, k):
    i = xp.arange(length)
    return i + max(-k, 0), i + max(k, 0)


class DiagEmbed(Function):
    """Y = a (rows, cols) matrix of zeros with v on diagonal k.   dv = diagonal k of G."""

    def forward(self, v, diagonal, shape):
        y = self.xp.zeros(shape, dtype=v.dtype)
        y[_diag_positions(self.xp, v.shape[0], diagonal)] = v
        return y

    def backward(self, g):
        return DiagExtract.apply(g, diagonal=self.attrs["diagonal"])


class DiagExtract(Function):
    """v = diagonal k of X (a copy).   dX = zeros with g on diagonal k."""

    def forward(self, x, diagonal):
        rows, cols = x.shape
        length = max(min(rows + min(diagonal, 0), cols - max(diagonal, 0)), 0)
        return x[_diag_positions(self.xp, length, diagonal)]

    def backward(self, g):
        return DiagEmbed.apply(g, diagonal=self.attrs["diagonal"], shape=self.input_meta[0][0])


def diag(x, diagonal=0):
    """torch.diag: a 1-D input becomes a square matrix with it on diagonal k; a 2-D input gives
    its diagonal k."""
    if not isinstance(diagonal, (int, np.integer)) or isinstance(diagonal, bool):
        raise TypeError(f"diag: diagonal must be an int, got {diagonal!r}")
    k = int(diagonal)
    if x.ndim == 1:
        n = x.shape[0] + abs(k)
        return DiagEmbed.apply(x, diagonal=k, shape=(n, n))
    if x.ndim == 2:
        return DiagExtract.apply(x, diagonal=k)
    raise RuntimeError(f"diag(): Supports 1D or 2D tensors. Got {x.ndim}D (shape {list(x.shape)})")


def unbind(x, dim=0):
    """The slices of x along dim, as a tuple (each a view, through indexing)."""
    d = _wrap_dim(dim, x.ndim, "unbind")
    if x.ndim == 0:
        raise IndexError("unbind: Dimension specified as 0 but tensor has no dimensions")
    return tuple(x[(slice(None),) * d + (i,)] for i in range(x.shape[d]))


def unflatten(x, dim, sizes):
    """Dim `dim` of x reshaped into `sizes` (one entry may be -1)."""
    d = _wrap_dim(dim, x.ndim, "unflatten")
    sizes = _ints(sizes, "unflatten", "sizes")
    if not sizes:
        raise RuntimeError("unflatten: sizes must be non-empty")
    known = int(np.prod([s for s in sizes if s != -1]))
    n = x.shape[d]
    if sizes.count(-1) > 1 or (-1 in sizes and (known == 0 or n % known)) or (-1 not in sizes and known != n):
        raise RuntimeError(f"unflatten: Provided sizes {list(sizes)} don't multiply up to the size "
                           f"of dim {dim} ({n}) in the input tensor of shape {list(x.shape)}")
    sizes = tuple(n // known if s == -1 else s for s in sizes)
    return x.reshape(x.shape[:d] + sizes + x.shape[d + 1:])


def t(x):
    """The transpose of a matrix; a 0-d or 1-D tensor is returned as is."""
    if x.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {x.ndim}D "
                           f"(shape {list(x.shape)})")
    return x.transpose(0, 1) if x.ndim == 2 else x
