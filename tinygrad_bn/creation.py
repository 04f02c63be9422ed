"""Tensor creation: tensor, zeros/ones/full/empty/arange/linspace/eye, rand/randn/randint, *_like.

Random tensors come from the seeded generator of their device (see `manual_seed`)."""
import numpy as np

from tinygrad_bn import backend, dtypes
from tinygrad_bn.tensor import Tensor


def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new leaf tensor from a list, scalar, NumPy/CuPy array or Tensor (always a copy)."""
    if isinstance(data, Tensor):
        data = data.data
    if backend.is_array(data) and (device is None or backend.as_device(device) == backend.device_of(data)):
        data = data.copy()
    return Tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)


def _size(size, opname):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    for n in size:
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
            raise ValueError(f"{opname}: sizes must be non-negative ints, got {list(size)}")
    return tuple(int(n) for n in size)


def _make(fill, size, dtype, device, requires_grad, opname, default=None):
    device = backend.as_device(device)
    dtype = dtypes.to_dtype(dtype, opname) or default or dtypes.get_default_dtype()
    xp = backend.array_module(device)
    with backend.device_scope(device):
        array = fill(xp, _size(size, opname), dtype)
    t = Tensor._make(array)
    return t.requires_grad_(True) if requires_grad else t


def zeros(*size, dtype=None, device=None, requires_grad=False):
    return _make(lambda xp, s, dt: xp.zeros(s, dtype=dt), size, dtype, device, requires_grad, "zeros")


def ones(*size, dtype=None, device=None, requires_grad=False):
    return _make(lambda xp, s, dt: xp.ones(s, dtype=dt), size, dtype, device, requires_grad, "ones")


def empty(*size, dtype=None, device=None, requires_grad=False):
    return _make(lambda xp, s, dt: xp.empty(s, dtype=dt), size, dtype, device, requires_grad, "empty")


def full(size, fill_value, dtype=None, device=None, requires_grad=False):
    if dtype is None:
        dtype = dtypes.scalar_dtype(fill_value)
    return _make(lambda xp, s, dt: xp.full(s, fill_value, dtype=dt), (tuple(size),), dtype, device,
                 requires_grad, "full")


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    return _make(lambda xp, s, dt: xp.eye(n, n if m is None else m, dtype=dt), (), dtype, device,
                 requires_grad, "eye")


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("arange: step must be nonzero")
    if dtype is None:
        is_float = any(isinstance(v, float) for v in (start, end, step))
        dtype = dtypes.get_default_dtype() if is_float else dtypes.int64
    return _make(lambda xp, s, dt: xp.arange(start, end, step, dtype=dt), (), dtype, device,
                 requires_grad, "arange")


def _endpoint(value, name):
    """A 0-d Tensor endpoint as a Python number, so that `dtype` alone decides the precision."""
    from tinygrad_bn.tensor import Tensor
    if isinstance(value, Tensor):
        if value.ndim != 0:
            raise RuntimeError(f"linspace: {name} must be a 0-dimensional tensor, got shape {list(value.shape)}")
        return value.item()
    return value


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False):
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"linspace: number of steps must be a non-negative int, got {steps!r}")
    start, end = _endpoint(start, "start"), _endpoint(end, "end")
    return _make(lambda xp, s, dt: xp.linspace(start, end, steps, dtype=dt), (), dtype, device,
                 requires_grad, "linspace")


def rand(*size, dtype=None, device=None, requires_grad=False):
    """Uniform on [0, 1)."""
    def fill(xp, s, dt):
        return backend.generator(device).random(s, dtype=dt if dt != np.float16 else np.float32).astype(dt, copy=False)
    return _make(fill, size, dtype, device, requires_grad, "rand")


def randn(*size, dtype=None, device=None, requires_grad=False):
    """Standard normal."""
    def fill(xp, s, dt):
        g = backend.generator(device)
        return g.standard_normal(s, dtype=dt if dt != np.float16 else np.float32).astype(dt, copy=False)
    return _make(fill, size, dtype, device, requires_grad, "randn")


def randint(low, high=None, size=(), dtype=None, device=None):
    """Integers uniform on [low, high)."""
    if isinstance(high, (tuple, list)) and size == ():  # PyTorch's randint(high, size) form
        low, high, size = 0, low, high
    if high is None:
        low, high = 0, low
    for name, v in (("low", low), ("high", high)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise TypeError(f"randint: {name} must be an int, got {v!r}")
    if high <= low:
        raise ValueError(f"randint: expected low < high, got low={low}, high={high}")
    return _make(lambda xp, s, dt: backend.generator(device).integers(low, high, size=s).astype(dt),
                 (tuple(size),), dtype, device, False, "randint", default=dtypes.int64)


def randperm(n, device=None):
    return _make(lambda xp, s, dt: backend.generator(device).permutation(n).astype(dt), (), dtypes.int64,
                 device, False, "randperm")


def _like(fn):
    def like(t, dtype=None, device=None, requires_grad=False, **kwargs):
        return fn(*t.shape, dtype=dtype or t.dtype, device=device or t.device,
                  requires_grad=requires_grad, **kwargs)
    like.__name__ = fn.__name__ + "_like"
    return like


zeros_like = _like(zeros)
ones_like = _like(ones)
empty_like = _like(empty)
rand_like = _like(rand)
randn_like = _like(randn)


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False):
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device or t.device,
                requires_grad=requires_grad)


def from_numpy(ndarray):
    """A CPU tensor sharing the NumPy array's memory (writes show through both ways)."""
    if not isinstance(ndarray, np.ndarray):
        raise TypeError(f"from_numpy: expected np.ndarray (got {type(ndarray).__name__})")
    if ndarray.dtype not in dtypes.SUPPORTED:
        raise TypeError(f"from_numpy: can't convert np.ndarray of type {ndarray.dtype}; the "
                        f"supported types are: {', '.join(str(np.dtype(d)) for d in dtypes.SUPPORTED)}")
    return Tensor._make(ndarray)


def as_tensor(data, dtype=None, device=None):
    """data as a tensor, without a copy where it already is one (or an array) of that dtype and
    device; a Tensor keeps its graph (a dtype or device change is a differentiable .to)."""
    if isinstance(data, Tensor):
        return data.to(*(a for a in (device, dtype) if a is not None))
    if backend.is_array(data):
        t = Tensor(data, dtype=dtype, device=device)
        return t
    return Tensor(data, dtype=dtype, device=device)


def is_tensor(obj):
    """True if obj is a tinygrad_bn Tensor."""
    return isinstance(obj, Tensor)
