"""A stand-in accelerator array module, so CI without a GPU still exercises device dispatch.

`fakegpu` behaves like a tiny CuPy: its arrays (`FakeArray`) live "on the device", NumPy does all
the arithmetic underneath, and - exactly like CuPy - an implicit conversion to a host NumPy array
raises `TypeError`. Any op that calls `np.something(x)` instead of `xp.something(x)`, or that mixes
host and device arrays, therefore fails loudly on this backend, just as it would on a real GPU.

It is strict about names, too: it answers only to the functions, array methods and attributes
that CuPy really has (the list in `_cupy_names.txt`, read from CuPy's source by
`_cupy_names.py`). `xp.vecdot(...)` works on NumPy 2 but not on CuPy 14, so on fakegpu it raises
AttributeError, as it would on a GPU.

Only `backend.py` imports this module; everything else reaches it as `xp` through a tensor's
device string `"fakegpu"`.
"""
import numbers
import operator

import numpy as np

from tinygrad_bn._cupy_names import load as _load_cupy_names

CUPY_NAMES, CUPY_VERSION = _load_cupy_names()


def _require_cupy_name(section, name):
    """Refuse a name that CuPy lacks, with the message a user needs to fix the call."""
    if name not in CUPY_NAMES.get(section, ()):
        raise AttributeError(
            f"fakegpu: CuPy {CUPY_VERSION} has no {section}.{name}, so this would fail on a GPU "
            f"(fakegpu offers only the names CuPy has: tinygrad_bn/_cupy_names.txt); use a "
            f"function both NumPy and CuPy have")


def _unwrap(obj):
    """Replace every FakeArray inside (nested lists/tuples/dicts of) obj by its NumPy array."""
    if isinstance(obj, FakeArray):
        return obj._a
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v) for k, v in obj.items()}
    return obj


def _wrap(obj):
    """Wrap NumPy arrays (and NumPy scalars, which CuPy returns as 0-d arrays) back into FakeArray."""
    if isinstance(obj, np.ndarray):
        return FakeArray(obj)
    if isinstance(obj, np.generic):
        return FakeArray(np.asarray(obj))
    if isinstance(obj, tuple):
        return tuple(_wrap(o) for o in obj)
    if isinstance(obj, list):
        return [_wrap(o) for o in obj]
    return obj


def _check_no_host_arrays(args):
    """CuPy refuses host NumPy arrays as operands; so do we (0-d NumPy scalars are allowed)."""
    for a in args:
        if isinstance(a, np.ndarray) and a.ndim > 0:
            raise TypeError("fakegpu: unsupported operand, a host numpy.ndarray was mixed with a "
                            "device array (CuPy raises here too); move it with .to(device) first")
        if isinstance(a, (list, tuple)):
            _check_no_host_arrays(a)


def _device_function(fn):
    def call(*args, **kwargs):
        _check_no_host_arrays(args)
        return _wrap(fn(*_unwrap(args), **_unwrap(kwargs)))
    call.__name__ = getattr(fn, "__name__", "fn")
    return call


class FakeArray:
    """A device array: a NumPy array that refuses to be implicitly copied to the host."""

    __slots__ = ("_a",)
    __array_ufunc__ = None  # np.exp(fake) raises TypeError instead of silently computing on host

    def __init__(self, array):
        self._a = array

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_function__(self, func, types, args, kwargs):
        raise TypeError(f"fakegpu: numpy.{func.__name__} called on a device array; "
                        "use the backend's array module (xp) instead")

    def get(self):
        """Copy to host, like cupy.ndarray.get()."""
        return self._a.copy()

    # attributes and methods --------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    strides = property(lambda self: self._a.strides)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: FakeArray(self._a.T))
    base = property(lambda self: None if self._a.base is None else FakeArray(self._a.base))

    def __getattr__(self, name):
        if name.startswith("__"):
            # never leak __array_interface__ / __array_struct__ / __dlpack__: NumPy would use them
            # to read the "device" memory directly, which a real GPU array does not allow
            raise AttributeError(name)
        _require_cupy_name("cupy.ndarray", name)
        attr = getattr(self._a, name)
        return _device_function(attr) if callable(attr) else _wrap(attr)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (FakeArray(np.asarray(v)) for v in self._a)

    def __getitem__(self, key):
        return _wrap(self._a[_unwrap(key)])

    def __setitem__(self, key, value):
        if isinstance(value, np.ndarray) and value.ndim > 0:
            raise TypeError("fakegpu: cannot assign a host numpy.ndarray into a device array")
        self._a[_unwrap(key)] = _unwrap(value)

    # Python scalars come out explicitly, as with CuPy (this synchronises on a real GPU)
    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __index__(self):
        return operator.index(self._a)

    def __bool__(self):
        return bool(self._a)

    def __complex__(self):
        return complex(self._a)

    def __repr__(self):
        return "fakegpu." + repr(self._a)

    def __copy__(self):
        return FakeArray(self._a.copy())

    def __deepcopy__(self, memo):
        return FakeArray(self._a.copy())

    def __reduce__(self):
        raise TypeError("fakegpu arrays cannot be pickled; move them to the host first")


def _binary(op, reflected=False):
    def method(self, other):
        if isinstance(other, np.ndarray) and other.ndim > 0:
            raise TypeError("fakegpu: unsupported operand, a host numpy.ndarray was mixed with a "
                            "device array; move it with .to(device) first")
        if not isinstance(other, (FakeArray, numbers.Number, np.generic, np.ndarray)):
            return NotImplemented
        a, b = self._a, _unwrap(other)
        return _wrap(op(b, a) if reflected else op(a, b))
    return method


def _inplace(op):
    def method(self, other):
        if isinstance(other, np.ndarray) and other.ndim > 0:
            raise TypeError("fakegpu: in-place op with a host numpy.ndarray operand")
        op(self._a, _unwrap(other))
        return self
    return method


# The operator table: every Python operator forwards to NumPy's and re-wraps the result.
for _name, _op in [("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
                   ("truediv", operator.truediv), ("floordiv", operator.floordiv),
                   ("mod", operator.mod), ("pow", operator.pow), ("matmul", operator.matmul),
                   ("and", operator.and_), ("or", operator.or_), ("xor", operator.xor)]:
    setattr(FakeArray, f"__{_name}__", _binary(_op))
    setattr(FakeArray, f"__r{_name}__", _binary(_op, reflected=True))
    setattr(FakeArray, f"__i{_name}__", _inplace(getattr(operator, f"i{_name}")))
for _name, _op in [("lt", operator.lt), ("le", operator.le), ("gt", operator.gt),
                   ("ge", operator.ge), ("eq", operator.eq), ("ne", operator.ne)]:
    setattr(FakeArray, f"__{_name}__", _binary(_op))
FakeArray.__neg__ = lambda self: FakeArray(-self._a)
FakeArray.__pos__ = lambda self: FakeArray(+self._a)
FakeArray.__abs__ = lambda self: FakeArray(abs(self._a))
FakeArray.__invert__ = lambda self: FakeArray(~self._a)
FakeArray.__hash__ = None


class _Namespace:
    """A module-like object whose functions are NumPy's, lifted to FakeArray."""

    def __init__(self, numpy_namespace, name, cupy_section):
        self._ns = numpy_namespace
        self.__name__ = name
        self._cupy_section = cupy_section  # where CuPy's list of names for this module lives

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        _require_cupy_name(self._cupy_section, name)
        attr = getattr(self._ns, name)
        if isinstance(attr, type) or isinstance(attr, (np.dtype, numbers.Number)):
            return attr  # dtypes (xp.float32), constants (xp.pi, xp.inf) pass through
        if callable(attr):
            if isinstance(attr, np.ufunc):
                return _Ufunc(attr)
            return _device_function(attr)
        if hasattr(attr, "__dict__") and not isinstance(attr, (np.ndarray,)):
            return _Namespace(attr, f"{self.__name__}.{name}", f"{self._cupy_section}.{name}")
        return _wrap(attr)


class _Ufunc:
    """np.ufunc lifted to FakeArray, including .reduce/.at/.accumulate methods."""

    def __init__(self, ufunc):
        self._u = ufunc
        self.__name__ = ufunc.__name__

    def __call__(self, *args, **kwargs):
        _check_no_host_arrays(args)
        out = kwargs.get("out")
        result = self._u(*_unwrap(args), **_unwrap(kwargs))
        if out is not None:
            return out[0] if isinstance(out, tuple) and len(out) == 1 else out
        return _wrap(result)

    def __getattr__(self, name):
        _require_cupy_name("cupy.ufunc", name)
        if name == "at":  # CuPy's ufunc.at exists only where the ufunc has a scatter operation
            _require_cupy_name("cupy.ufunc.at", self.__name__)
        return _device_function(getattr(self._u, name))


class _Random:
    """cupy.random look-alike: Generators produce device arrays."""

    def default_rng(self, seed=None):
        return _Generator(np.random.default_rng(seed))


class _Generator:
    def __init__(self, gen):
        self._g = gen

    def __getattr__(self, name):
        _require_cupy_name("cupy.random.Generator", name)
        return _device_function(getattr(self._g, name))


class _StrideTricks:
    @staticmethod
    def as_strided(x, shape=None, strides=None):
        return FakeArray(np.lib.stride_tricks.as_strided(x._a, shape=shape, strides=strides))


class _Lib:
    stride_tricks = _StrideTricks()


class FakeGPUModule(_Namespace):
    """The `xp` of the fakegpu device: `xp.exp`, `xp.zeros`, `xp.random.default_rng`, ..."""

    ndarray = FakeArray
    random = _Random()
    lib = _Lib()

    def __init__(self):
        super().__init__(np, "fakegpu", "cupy")

    def asarray(self, obj, dtype=None):
        if isinstance(obj, FakeArray):
            return obj if dtype is None or obj.dtype == dtype else FakeArray(obj._a.astype(dtype))
        return FakeArray(np.asarray(obj, dtype=dtype))

    def array(self, obj, dtype=None, copy=True):
        obj = obj._a if isinstance(obj, FakeArray) else obj
        return FakeArray(np.array(obj, dtype=dtype, copy=copy))

    def asnumpy(self, obj):
        return obj.get() if isinstance(obj, FakeArray) else np.asarray(obj)


fakegpu = FakeGPUModule()
