"""A restricted unpickler for CIFAR-10's python batches: it rebuilds NumPy arrays and nothing else.

A pickle is a program: each global it names (GLOBAL / STACK_GLOBAL opcodes) is looked up through
find_class and may then be called. A real CIFAR-10 batch names exactly three globals, the ones
an ndarray pickles itself with:

    numpy.core.multiarray._reconstruct   (numpy._core.multiarray under NumPy 2)
    numpy.ndarray
    numpy.dtype

Any other global (os.system, builtins.eval, subprocess.Popen, ...) is refused before it can be
called, with UnsafePickleError naming the file and the global.
"""
import io
import pickle

import numpy as np

from tinygrad_bn.data._files import DatasetFileError


class UnsafePickleError(DatasetFileError, pickle.UnpicklingError):
    """The pickle asked for a global that the restricted unpickler does not allow."""


def _reconstruct():
    core = getattr(np, "_core", None) or np.core  # NumPy 2 renamed numpy.core to numpy._core
    return core.multiarray._reconstruct


ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler whose find_class only returns the globals of ALLOWED_GLOBALS."""

    def __init__(self, file, path):
        super().__init__(file, encoding="bytes")  # CIFAR was pickled by Python 2: keep bytes
        self.path = path

    def find_class(self, module, name):
        resolve = ALLOWED_GLOBALS.get((module, name))
        if resolve is None:
            raise UnsafePickleError(f"{self.path}: refusing to unpickle the global '{module}.{name}': "
                                    f"a CIFAR-10 batch only needs numpy array reconstruction "
                                    f"({', '.join(m + '.' + n for m, n in ALLOWED_GLOBALS)}); "
                                    f"this file is not a genuine CIFAR-10 batch and may be malicious")
        return resolve()

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.path}: refusing a persistent id in the pickle")


def restricted_load(raw, path):
    """Unpickle bytes `raw` (from `path`, for messages) with RestrictedUnpickler."""
    try:
        return RestrictedUnpickler(io.BytesIO(raw), path).load()
    except UnsafePickleError:
        raise
    except Exception as e:  # truncated or garbage bytes raise many types inside pickle
        raise DatasetFileError(f"{path}: not a readable pickle (truncated or corrupt?): "
                               f"{type(e).__name__}: {e}") from None
