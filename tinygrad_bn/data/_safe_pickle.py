"""A restricted unpickler for CIFAR-10's python batches: it rebuilds NumPy arrays and nothing else.

A pickle is a program: each global it names (GLOBAL / STACK_GLOBAL opcodes) is looked up through
find_class and may then be called. A real CIFAR-10 batch names exactly three globals, the ones
an ndarray pickles itself with:

    numpy.core.multiarray._reconstruct   (numpy._core.multiarray under NumPy 2)
    numpy.ndarray
    numpy.dtype

Any other global (os.system, builtins.eval, subprocess.Popen, ...) is refused before it can be
called, with UnsafePickleError naming the file and the global. And the three are wrapped so that
every array comes from the file's own bytes: numpy.ndarray cannot be called (it would allocate
uninitialized memory of any shape), _reconstruct only makes the empty placeholder that the array's
data then fills, and dtypes are plain numeric ones.
"""
import io
import pickle
import math
import re

import numpy as np

from tinygrad_bn.data._files import DatasetFileError


class UnsafePickleError(DatasetFileError, pickle.UnpicklingError):
    """The pickle asked for a global that the restricted unpickler does not allow."""


def _numpy_reconstruct():
    core = getattr(np, "_core", None) or np.core  # NumPy 2 renamed numpy.core to numpy._core
    return core.multiarray._reconstruct


class _NdarrayType:
    """Stands for numpy.ndarray inside the pickle. The real class would let the pickle call
    numpy.ndarray((200000, 3072), 'u1'): a few bytes that allocate gigabytes of uninitialized
    memory. A genuine pickle only passes it to _reconstruct, never calls it."""

    def __init__(self, path, budget):
        self.path = path

    def __call__(self, *args, **kwargs):
        raise UnsafePickleError(f"{self.path}: refusing to call numpy.ndarray{args!r} from a pickle: "
                                f"an array must be rebuilt from the file's own bytes "
                                f"(_reconstruct then __setstate__), not allocated")


_PLAIN_DTYPE = re.compile(r"[<>|=]?(b1|[iu][1248]|f[248]|[bBhHiIlLqQefdg?])")


class _PickledArray(np.ndarray):
    """The placeholder _reconstruct makes. BUILD fills it through __setstate__, which checks the
    state before NumPy sees it: a plain dtype, a shape of non-negative ints, and data bytes from
    the file whose length is exactly what the shape and dtype declare. So every array is the
    file's own bytes. A budget of all arrays' bytes (two times the pickle's size) stops one
    memoized bytes object being copied into many arrays. np.asarray() gives the plain array."""

    def __setstate__(self, state):
        path, budget = self._path, self._budget
        if not isinstance(state, tuple) or len(state) != 5:
            raise UnsafePickleError(f"{path}: refusing an array state of {type(state).__name__} "
                                    f"{len(state) if isinstance(state, tuple) else ''}: expected "
                                    f"(version, shape, dtype, is_fortran, data bytes)")
        version, shape, dtype, is_fortran, data = state
        if (not isinstance(shape, tuple) or len(shape) > 32
                or not all(type(d) is int and d >= 0 for d in shape)):
            raise UnsafePickleError(f"{path}: refusing the array shape {shape!r}: expected a tuple "
                                    f"of non-negative ints")
        if not isinstance(dtype, np.dtype):
            raise UnsafePickleError(f"{path}: refusing the array dtype {dtype!r}")
        dtype = _plain_dtype(dtype.str, path)
        nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no wrap-around
        if not isinstance(data, (bytes, bytearray)) or len(data) != nbytes:
            raise UnsafePickleError(f"{path}: array data of {len(data) if isinstance(data, (bytes, bytearray)) else type(data).__name__} "
                                    f"bytes, but its shape {shape} and dtype {dtype} declare {nbytes}")
        budget[0] -= nbytes
        if budget[0] < 0:
            raise UnsafePickleError(f"{path}: the arrays in the pickle add up to more than twice "
                                    f"the file's size; refusing it (a genuine batch holds each "
                                    f"array's bytes once)")
        super().__setstate__((version, shape, dtype, bool(is_fortran), data))


def _safe_reconstruct(path, budget):
    def reconstruct(subtype, shape, typecode):
        """An empty placeholder array; BUILD then fills it (_PickledArray.__setstate__)."""
        if not isinstance(subtype, _NdarrayType) or tuple(shape) != (0,):
            raise UnsafePickleError(f"{path}: refusing _reconstruct({subtype!r}, {shape!r}, ...): a "
                                    f"NumPy array pickles itself as _reconstruct(numpy.ndarray, (0,), "
                                    f"typecode) followed by its data")
        array = _numpy_reconstruct()(_PickledArray, (0,), _plain_dtype(typecode, path))
        array._path, array._budget = path, budget
        return array
    return reconstruct


def _plain_dtype(spec, path):
    text = spec.decode("ascii", "replace") if isinstance(spec, bytes) else spec
    if not isinstance(text, str) or not _PLAIN_DTYPE.fullmatch(text):
        raise UnsafePickleError(f"{path}: refusing the dtype {spec!r} in the pickle: only plain "
                                f"numeric dtypes (u1, i8, f4, ...) make up a CIFAR-10 batch")
    return np.dtype(text)


def _safe_dtype(path, budget):
    def dtype(spec, align=False, copy=True):
        # always a copy: BUILD then calls __setstate__ on it, which must never touch NumPy's own
        # cached uint8 / int64 ... descriptors
        return np.dtype(_plain_dtype(spec, path), align=bool(align), copy=True)
    return dtype


ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy", "ndarray"): _NdarrayType,
    ("numpy", "dtype"): _safe_dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler whose find_class only returns the globals of ALLOWED_GLOBALS."""

    def __init__(self, file, path, size):
        super().__init__(file, encoding="bytes")  # CIFAR was pickled by Python 2: keep bytes
        self.path = path
        self.budget = [2 * size]  # bytes the arrays may still take (see _PickledArray)

    def find_class(self, module, name):
        resolve = ALLOWED_GLOBALS.get((module, name))
        if resolve is None:
            raise UnsafePickleError(f"{self.path}: refusing to unpickle the global '{module}.{name}': "
                                    f"a CIFAR-10 batch only needs numpy array reconstruction "
                                    f"({', '.join(m + '.' + n for m, n in ALLOWED_GLOBALS)}); "
                                    f"this file is not a genuine CIFAR-10 batch and may be malicious")
        return resolve(self.path, self.budget)

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.path}: refusing a persistent id in the pickle")


def restricted_load(raw, path):
    """Unpickle bytes `raw` (from `path`, for messages) with RestrictedUnpickler."""
    try:
        return RestrictedUnpickler(io.BytesIO(raw), path, len(raw)).load()
    except UnsafePickleError:
        raise
    except Exception as e:  # truncated or garbage bytes raise many types inside pickle
        raise DatasetFileError(f"{path}: not a readable pickle (truncated or corrupt?): "
                               f"{type(e).__name__}: {e}") from None
