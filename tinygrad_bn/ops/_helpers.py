"""Small helpers shared by the op files: operand conversion, dtype promotion, broadcasting."""
import numpy as np

from tinygrad_bn import backend, dtypes
from tinygrad_bn.tensor import Tensor


def log_sum_exp_shifted(xp, z, axis):
    """log(sum(exp(z))) along axis (keepdims) for z = x - max(x), so that z <= 0 and the maximum is 0.

    As log1p(q), q = the sum less the 1 that each maximum contributes (plus 1 per extra tie): when
    one element dominates, q is tiny and log(1 + q) would round it away in float32 (log_softmax of
    the winning class, a confident cross-entropy), while log1p keeps its relative precision."""
    is_max = z == 0
    q = xp.where(is_max, 0, xp.exp(z)).sum(axis=axis, keepdims=True)
    q += (is_max.sum(axis=axis, keepdims=True) - 1).astype(q.dtype)
    return xp.log1p(q)


def as_tensor(value, like, dtype=None):
    """A constant Tensor on `like`'s device (for Python scalars and arrays mixed into an op)."""
    if isinstance(value, Tensor):
        return value
    xp = backend.xp_of(like.data)
    if backend.is_array(value):
        return Tensor._make(value if dtype is None else value.astype(dtype))
    if dtype is None:
        dtype = dtypes.scalar_dtype(value) if np.isscalar(value) else None
    host = np.asarray(value, dtype=dtype)
    if host.dtype.kind == "f" and dtype is None:
        host = host.astype(dtypes.get_default_dtype())
    if isinstance(like.data, np.ndarray):
        return Tensor._make(host)
    return Tensor._make(xp.asarray(host))


def _is_scalar(value):
    return not isinstance(value, Tensor) and not backend.is_array(value)


def binary_operands(a, b, opname, check_broadcast=True):
    """Two Tensors of the promoted dtype, on one device, with broadcastable shapes."""
    a_scalar, b_scalar = _is_scalar(a), _is_scalar(b)
    if a_scalar and b_scalar:
        raise TypeError(f"{opname}: expected at least one Tensor operand")
    ref = b if a_scalar else a
    if not isinstance(ref, Tensor):
        ref = Tensor(ref)
    if a_scalar or not isinstance(a, Tensor):
        a = as_tensor(a, ref, None if not a_scalar else _scalar_target(a, ref.dtype))
    if b_scalar or not isinstance(b, Tensor):
        b = as_tensor(b, ref, None if not b_scalar else _scalar_target(b, ref.dtype))
    if a.data.dtype != b.data.dtype:
        target = dtypes.promote(a.data.dtype, b.data.dtype,
                                a_scalar or (a.ndim == 0 and b.ndim > 0),
                                b_scalar or (b.ndim == 0 and a.ndim > 0),
                                scalar_is_python=a_scalar or b_scalar)
        from tinygrad_bn.ops.elementwise import cast
        a, b = cast(a, target), cast(b, target)
    if check_broadcast and a.data.shape != b.data.shape:
        broadcast_shape(a.shape, b.shape, opname)
    return a, b


def _scalar_target(value, tensor_dtype):
    """The dtype a Python scalar takes next to a tensor: the tensor's, unless its category is higher."""
    return dtypes.promote(dtypes.scalar_dtype(value), tensor_dtype, True, False)


def broadcast_shape(a, b, opname):
    try:
        return tuple(np.broadcast_shapes(tuple(a), tuple(b)))
    except ValueError:
        raise RuntimeError(f"{opname}: shapes {list(a)} and {list(b)} are not broadcastable "
                           f"(each dimension must match or be 1, aligned from the right)") from None


def sum_to_shape(grad, shape):
    """Undo broadcasting in backward: sum `grad` down to `shape` (a differentiable Tensor op)."""
    shape = tuple(shape)
    if tuple(grad.shape) == shape:
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                      if n == 1 and grad.shape[lead + i] != 1)
    out = grad.sum(dim=axes) if axes else grad
    return out.reshape(shape) if tuple(out.shape) != shape else out


def _index_of_0d(dim):
    """A 0-d integer Tensor used as a dim reads as its int, as in PyTorch (Tensor.__index__); any
    other Tensor stays as it is, to be refused with a TypeError (iterating it would read "no dims")."""
    if isinstance(dim, Tensor) and dim.ndim == 0 and dim.dtype.kind in "iu":
        return dim.__index__()
    return dim


def normalize_dims(dim, ndim, opname):
    """dim (None, int or sequence) -> a sorted tuple of non-negative axes, checked."""
    if dim is None:
        return tuple(range(ndim))
    dim = _index_of_0d(dim)
    if not isinstance(dim, (int, np.integer, list, tuple)):  # a 0-d Tensor would iterate as "no dims"
        raise TypeError(f"{opname}: dim must be an int or a tuple of ints, got {type(dim).__name__}")
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    n = max(ndim, 1)
    out = []
    for d in map(_index_of_0d, dims):
        if not isinstance(d, (int, np.integer)) or isinstance(d, bool):
            raise TypeError(f"{opname}: dim must be an int or a tuple of ints, got {dim!r}")
        if not -n <= d < n:
            raise IndexError(f"{opname}: Dimension out of range (expected to be in range of "
                             f"[{-n}, {n - 1}], but got {d})")
        d = d % n if ndim > 0 else 0
        if d in out:
            raise RuntimeError(f"{opname}: dim {d} appears multiple times in the list of dims")
        out.append(d)
    return tuple(sorted(out)) if ndim > 0 else ()


def check_float(tensor, opname):
    if not dtypes.is_floating(tensor.dtype):
        raise TypeError(f"{opname}: expected a floating-point tensor, got dtype {tensor.dtype}")
