"""sort and topk: the indices come from argsort (no gradient); the values are gather(x, dim,
indices), so their gradient is gather's: each value's gradient goes back to where it came from."""
import collections

import numpy as np

from tinygrad_bn import dtypes
from tinygrad_bn.ops.indexing import gather
from tinygrad_bn.tensor import Tensor, _wrap_dim

SortResult = collections.namedtuple("sort", ["values", "indices"])
TopkResult = collections.namedtuple("topk", ["values", "indices"])


def _argsort(xp, a, dim, descending):
    """Stable argsort along dim; descending keeps tied elements in their original order too:
    sort the reversed array ascending, reverse the result, and map positions back (n-1-i)."""
    if a.dtype == np.bool_:
        a = a.astype(np.int8)
    if not descending:
        return xp.argsort(a, axis=dim, kind="stable")
    n = a.shape[dim]
    return (n - 1) - xp.flip(xp.argsort(xp.flip(a, dim), axis=dim, kind="stable"), dim)


def sort(input, dim=-1, descending=False, stable=False):
    """torch.sort: (values, indices) with values ascending (or descending) along dim. Ties keep
    their order (every sort here is stable). nan sorts as the largest value, as in PyTorch."""
    if not isinstance(input, Tensor):
        raise TypeError(f"sort: expected a Tensor, got {type(input).__name__}")
    d = _wrap_dim(dim, input.ndim, "sort")
    if input.ndim == 0:
        return SortResult(input.clone(), Tensor._make(input.xp.zeros((), dtype=dtypes.int64)))
    idx = Tensor._make(_argsort(input.xp, input.data, d, bool(descending)).astype(dtypes.int64))
    return SortResult(gather(input, d, idx), idx)


def topk(input, k, dim=-1, largest=True, sorted=True):
    """torch.topk: the k largest (or smallest) values along dim and their indices, in order."""
    if not isinstance(input, Tensor):
        raise TypeError(f"topk: expected a Tensor, got {type(input).__name__}")
    d = _wrap_dim(dim, input.ndim, "topk")
    n = input.shape[d] if input.ndim else 1
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise TypeError(f"topk: k must be an int, got {k!r}")
    if not 0 <= k <= n:
        raise RuntimeError(f"topk: selected index k ({k}) out of range for dimension {d} of size "
                           f"{n} (input shape {list(input.shape)})")
    if input.ndim == 0:
        return TopkResult(input.clone(), Tensor._make(input.xp.zeros((), dtype=dtypes.int64)))
    order = _argsort(input.xp, input.data, d, bool(largest))
    idx = Tensor._make(order[(slice(None),) * d + (slice(0, int(k)),)].astype(dtypes.int64))
    return TopkResult(gather(input, d, idx), idx)
