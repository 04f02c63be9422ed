"""Indexing along one dim: gather, scatter, scatter_add, index_select, masked_fill.

gather and scatter_add are each other's gradient: gather reads y[i][j] = x[i][index[i][j]] (dim=1),
scatter_add writes y[i][index[i][j]] += src[i][j]. Both address x through `_along(index, dim)`,
the full integer key that puts `index` in dim and the positions 0..n-1 in every other dim."""
from tinygrad_bn import backend, dtypes
from tinygrad_bn.autograd.function import Function
from tinygrad_bn.ops._helpers import as_tensor
from tinygrad_bn.tensor import Tensor, _wrap_dim


def _along(xp, index, dim):
    """The advanced-indexing key addressing x[..., index[...], ...] with index in `dim`."""
    key = []
    for d, n in enumerate(index.shape):
        if d == dim:
            key.append(index)
        else:
            shape = [1] * index.ndim
            shape[d] = n
            key.append(xp.arange(n).reshape(shape))
    return tuple(key)


class Gather(Function):
    """y[i][j] = x[i][index[i][j]] (dim=1; likewise for any dim).   dx = scatter_add(0, index, g)."""

    def forward(self, x, dim, index):
        return x[_along(self.xp, index, dim)]

    def backward(self, g):
        zeros = Tensor._make(self.xp.zeros(self.input_meta[0][0], dtype=g.dtype))
        return ScatterAdd.apply(zeros, g, **self.attrs)


class ScatterAdd(Function):
    """y = x;  y[i][index[i][j]] += src[i][j] (dim=1).   dx = g,  dsrc = gather(g, dim, index)."""

    def forward(self, x, src, dim, index):
        y = x.copy()
        backend.scatter_add(y, _along(self.xp, index, dim), src[tuple(slice(0, n) for n in index.shape)])
        return y

    def backward(self, g):
        dsrc = None
        if self.needs_input_grad[1]:
            dsrc = _pad_to(Gather.apply(g, **self.attrs), self.input_meta[1][0])
        return g, dsrc


class Scatter(Function):
    """y = x;  y[i][index[i][j]] = src[i][j] (dim=1).
    dx = g with 0 where written,  dsrc = gather(g, dim, index) (as PyTorch, even for repeats)."""

    def forward(self, x, src, dim, index):
        y = x.copy()
        y[_along(self.xp, index, dim)] = src[tuple(slice(0, n) for n in index.shape)]
        return y

    def backward(self, g):
        xp, dim = self.xp, self.attrs["dim"]
        index = self.attrs["index"]
        dx = dsrc = None
        if self.needs_input_grad[0]:
            keep = xp.ones(g.shape, dtype=g.dtype)
            keep[_along(xp, index, dim)] = 0
            dx = g * Tensor._make(keep)
        if self.needs_input_grad[1]:
            dsrc = _pad_to(Gather.apply(g, dim=dim, index=index), self.input_meta[1][0])
        return dx, dsrc


def _pad_to(t, shape):
    """src may be larger than index: the unread part of src gets a zero gradient."""
    if tuple(t.shape) == tuple(shape):
        return t
    from tinygrad_bn.ops.shape import pad
    widths = []
    for have, want in reversed(list(zip(t.shape, shape))):
        widths += [0, want - have]
    return pad(t, tuple(widths))


def _check_index(x, dim, index, opname, src=None):
    """PyTorch's rules: int64 index of x's ndim, index.size(d) <= x.size(d) for d != dim
    (and <= src.size(d) for every d), values in [-n, n) with n = x.size(dim)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{opname}: expected a Tensor as input, got {type(x).__name__}")
    if not isinstance(index, Tensor):
        raise TypeError(f"{opname}: index must be a Tensor, got {type(index).__name__}")
    if index.dtype != dtypes.int64:
        raise RuntimeError(f"{opname}(): Expected dtype int64 for index, got {index.dtype}")
    d = _wrap_dim(dim, x.ndim, opname)
    if index.device != x.device:
        raise RuntimeError(f"{opname}: index is on {index.device} but input is on {x.device}")
    if max(index.ndim, 1) != max(x.ndim, 1):
        raise RuntimeError(f"{opname}: Index tensor must have the same number of dimensions as "
                           f"input tensor (index shape {list(index.shape)}, input shape {list(x.shape)})")
    xs, idx_shape = x.shape or (1,), index.shape or (1,)
    for i, (a, b) in enumerate(zip(idx_shape, xs)):
        if i != d and a > b:
            raise RuntimeError(f"{opname}: Size does not match at dimension {i}: expected index "
                               f"{list(index.shape)} to be no larger than input {list(x.shape)} "
                               f"apart from dimension {d}")
    if src is not None:
        for i, (a, b) in enumerate(zip(idx_shape, src.shape or (1,))):
            if a > b:
                raise RuntimeError(f"{opname}: Expected index {list(index.shape)} to be no larger "
                                   f"than src {list(src.shape)} in dimension {i}")
    n = xs[d]
    i = index.data.reshape(idx_shape)
    if i.size and bool(((i < -n) | (i >= n)).any()):  # one host sync: never index silently wrong
        bad = int(i[(i < -n) | (i >= n)].reshape(-1)[0])
        raise IndexError(f"{opname}: index {bad} is out of bounds for dimension {d} with size {n}")
    return d, i % n if n else i


def gather(input, dim, index, *, sparse_grad=False):
    """torch.gather: y[i][j][k] = input[i][index[i][j][k]][k] for dim=1."""
    d, idx = _check_index(input, dim, index, "gather")
    x = input if input.ndim else input.reshape(1)
    out = Gather.apply(x, dim=d, index=idx)
    return out.reshape(index.shape) if input.ndim == 0 else out


def _scatter(input, dim, index, src, opname, accumulate):
    if not isinstance(src, Tensor):
        src = Tensor._make(input.xp.full(index.shape, src, dtype=input.dtype))
    elif src.dtype != input.dtype:
        raise RuntimeError(f"{opname}(): Expected self.dtype to be equal to src.dtype (got "
                           f"{input.dtype} and {src.dtype})")
    d, idx = _check_index(input, dim, index, opname, src)
    fn = ScatterAdd if accumulate else Scatter
    x, s = (input, src) if input.ndim else (input.reshape(1), src.reshape(1))
    out = fn.apply(x, s, dim=d, index=idx)
    return out.reshape(()) if input.ndim == 0 else out


def scatter(input, dim, index, src=None, *, value=None, reduce=None):
    """torch.scatter: out = input with out[i][index[i][j]] = src[i][j] (dim=1); src may be a number
    (or pass value=). reduce='add' is scatter_add; 'multiply' is not supported."""
    if (src is None) == (value is None):
        raise TypeError("scatter: give exactly one of src (a Tensor or number) and value")
    src = value if src is None else src
    if reduce is not None and reduce != "add":
        raise RuntimeError(f"scatter: reduce must be None or 'add', got {reduce!r}")
    return _scatter(input, dim, index, src, "scatter", accumulate=reduce == "add")


def scatter_add(input, dim, index, src):
    """torch.scatter_add: out = input with out[i][index[i][j]] += src[i][j] (dim=1)."""
    if not isinstance(src, Tensor):
        raise TypeError(f"scatter_add: src must be a Tensor, got {type(src).__name__}")
    return _scatter(input, dim, index, src, "scatter_add", accumulate=True)


def index_select(input, dim, index):
    """torch.index_select: the entries of input at positions `index` (1-D, int) along dim.
    A thin form of advanced indexing, whose backward adds where an index repeats."""
    if not isinstance(index, Tensor) or index.dtype.kind not in "iu" or index.ndim > 1:
        got = f"{index.dtype} tensor of shape {list(index.shape)}" if isinstance(index, Tensor) else type(index).__name__
        raise IndexError(f"index_select(): Expected a 1-D (or 0-d) int64 index tensor, got {got}")
    d = _wrap_dim(dim, input.ndim, "index_select")
    n = input.shape[d] if input.ndim else 1
    i = index.data.reshape(-1)
    if i.size and bool(((i < 0) | (i >= n)).any()):
        bad = int(i[(i < 0) | (i >= n)][0])
        raise IndexError(f"index_select(): index {bad} is out of bounds for dimension {d} with size {n}")
    from tinygrad_bn.ops.shape import index as index_op
    if input.ndim == 0:  # a 0-d input gives a 0-d result, from exactly one index (PyTorch)
        if i.size != 1:
            raise RuntimeError(f"index_select(): Index to scalar can have only 1 value, got {i.size} value(s)")
        return index_op(input.reshape(1), (Tensor._make(i),)).reshape(())
    return index_op(input, (slice(None),) * d + (Tensor._make(i),))


def masked_fill(input, mask, value):
    """torch.masked_fill: value where mask (bool, broadcastable to input) else input.
    d input = g where not mask;  d value (a 0-d Tensor) = sum of g where mask."""
    from tinygrad_bn.ops.elementwise import where
    from tinygrad_bn.ops._helpers import broadcast_shape
    if not isinstance(mask, Tensor) or mask.dtype != dtypes.bool_:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise RuntimeError(f"masked_fill: expected a bool mask tensor, got {got}")
    if broadcast_shape(mask.shape, input.shape, "masked_fill") != tuple(input.shape):
        raise RuntimeError(f"masked_fill: mask of shape {list(mask.shape)} cannot be broadcast to "
                           f"the input's shape {list(input.shape)}")
    if isinstance(value, Tensor):
        if value.ndim != 0:
            raise RuntimeError(f"masked_fill only supports a 0-dimensional value tensor, but got "
                               f"tensor with {value.ndim} dimension(s)")
        value = value.to(input.dtype)
    else:
        value = as_tensor(value, input, input.dtype)
    return where(mask, value, input)
