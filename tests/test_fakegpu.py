"""fakegpu is strict: it offers only the names CuPy has, so NumPy-only code fails in CI too."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn import _cupy_names
from tinygrad_bn.autograd import Function
from tinygrad_bn._fakegpu import CUPY_NAMES, CUPY_VERSION, fakegpu


def test_a_numpy_only_function_fails_on_fakegpu_naming_it():
    assert hasattr(np, "vecdot") and "vecdot" not in CUPY_NAMES["cupy"]  # NumPy 2 has it, CuPy not
    with pytest.raises(AttributeError, match=rf"CuPy {CUPY_VERSION} has no cupy.vecdot"):
        fakegpu.vecdot
    assert not hasattr(fakegpu, "vecdot")  # so `hasattr(xp, ...)` fallbacks take the CuPy path


@pytest.mark.parametrize("use, missing", [
    (lambda a: a.resize, "cupy.ndarray.resize"),            # a NumPy-only array method
    (lambda a: fakegpu.random.default_rng(0).normal, "cupy.random.Generator.normal"),
    (lambda a: fakegpu.multiply.at, "cupy.ufunc.at.multiply"),  # CuPy's .at: scatter ufuncs only
    (lambda a: fakegpu.linalg.matrix_norm, "cupy.linalg.matrix_norm"),
    (lambda a: fakegpu.fft.fft, "cupy.fft.fft"),        # a submodule without a list refuses all
])
def test_numpy_only_methods_and_submodule_functions_fail(use, missing):
    a = fakegpu.zeros((2, 3))
    with pytest.raises(AttributeError, match=missing.replace(".", r"\.")):
        use(a)


def test_the_names_cupy_has_still_work():
    a = fakegpu.arange(6.0).reshape(2, 3)
    assert float(fakegpu.sqrt(a).sum()) == pytest.approx(np.sqrt(np.arange(6.0)).sum())
    assert fakegpu.linalg.eigh(fakegpu.eye(2))[0].shape == (2,)
    assert fakegpu.random.default_rng(0).standard_normal((3,)).shape == (3,)
    target = fakegpu.zeros(3)
    fakegpu.add.at(target, fakegpu.asarray([0, 0, 2]), 1.0)
    np.testing.assert_array_equal(target.get(), [2.0, 0.0, 1.0])
    assert a.T.shape == (3, 2) and a.astype(np.float32).dtype == np.float32


class VecDot(Function):
    """A student's op written with a NumPy-only function (CuPy 14 has no vecdot)."""

    def forward(self, a, b):
        return self.xp.vecdot(a, b)

    def backward(self, dy):
        raise NotImplementedError


def test_a_tensor_op_calling_a_numpy_only_function_fails_on_fakegpu_not_on_cpu():
    x = tg.ones(3)
    assert float(VecDot.apply(x, x).item()) == 3.0
    xg = tg.ones(3, device="fakegpu")
    with pytest.raises(AttributeError, match=r"cupy\.vecdot, so this would fail on a GPU"):
        VecDot.apply(xg, xg)


def test_the_list_names_its_cupy_version_and_holds_the_core_names():
    sections, version = _cupy_names.load()
    assert version == CUPY_VERSION and version[0].isdigit()
    for section, must in {"cupy": {"einsum", "take_along_axis", "float16", "cuda", "linalg"},
                          "cupy.ndarray": {"reshape", "astype", "get", "sum", "T"},
                          "cupy.ufunc": {"reduce", "at"}, "cupy.ufunc.at": {"add"},
                          "cupy.random.Generator": {"standard_normal", "uniform"}}.items():
        assert must <= sections[section], (section, must - sections[section])


def test_the_generator_reads_module_names_leaving_out_raising_shims_and_private_names():
    source = '''
from __future__ import annotations
import numpy as _np
import numpy
from numpy import pi, inf as infinity
from cupy._core import ndarray  # NOQA
if True:
    from numpy import bool
else:
    def removed(*a):
        """gone"""
        raise RuntimeError("removed in NumPy 2")
def kept(x):
    return x
_private = 1
alias = kept
'''
    assert _cupy_names.module_names(source) == {"pi", "infinity", "ndarray", "bool", "kept", "alias"}


def test_the_generator_reads_class_members_and_scatter_ufuncs():
    pyx = '''
cdef class _ndarray_base:
    cdef readonly object dtype
    def __init__(self):
        pass
    cpdef _ndarray_base astype(self, dtype):
        pass
    cdef inline bint is_host_accessible(self) except*:
        pass
    property shape:
        def __get__(self):
            pass
    def reshape(self, *shape):
        pass

cdef class other:
    def not_mine(self):
        pass
'''
    assert _cupy_names.class_members(pyx, r"^cdef class _ndarray_base\b.*:$") == {"astype", "shape", "reshape"}
    kernels = '''
cdef create_arithmetic(name, op, scatter_op=None):
    return create_ufunc(name, scatter_op=scatter_op)

_add = create_arithmetic(
    'add', '+', '|',
    cutensor_op=('OP_ADD', 1, 1), scatter_op='add')

_multiply = create_arithmetic(
    'multiply', '*', '&')

cdef _bitwise_and = _create_bit_op(
    'bitwise_and', '&', False,
    scatter_op='and')
'''
    assert _cupy_names.scatter_ufuncs([kernels]) == {"add", "bitwise_and"}
