"""dtypes (NumPy's own dtype objects) and PyTorch's type-promotion rules.

Promotion, as in PyTorch: the result takes the highest *category* among the operands
(bool < integer < floating). Inside one category the usual NumPy promotion applies
(float32 + float64 -> float64). A Python scalar, or a 0-d tensor next to a dimensioned one, only
decides the category, never the width: `float32_tensor * 2.0` stays float32, and
`int64_tensor * 2.5` becomes float32 (the default float dtype).
"""
import builtins

import numpy as np

float16 = half = np.dtype("float16")
float32 = float = np.dtype("float32")
float64 = double = np.dtype("float64")
int8 = np.dtype("int8")
uint8 = np.dtype("uint8")
int16 = np.dtype("int16")
int32 = int = np.dtype("int32")
int64 = long = np.dtype("int64")
bool_ = np.dtype("bool")

SUPPORTED = (float16, float32, float64, int8, uint8, int16, int32, int64, bool_)
_default_float = [float32]


def get_default_dtype():
    return _default_float[0]


def set_default_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"set_default_dtype: only floating-point types are supported as the "
                        f"default type, got {dtype}")
    _default_float[0] = dtype


def to_dtype(dtype, where="tensor"):
    """Accept a NumPy dtype, a dtype name or a Python type; refuse anything unsupported."""
    if dtype is None:
        return None
    if dtype is builtins.bool:
        return bool_
    if dtype is builtins.float:
        return get_default_dtype()
    if dtype is builtins.int:
        return int64
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{where}: unsupported dtype {dtype!r}") from None
    if dt not in SUPPORTED:
        raise TypeError(f"{where}: unsupported dtype {dt}; expected one of "
                        f"{', '.join(str(d) for d in SUPPORTED)}")
    return dt


def category(dtype):
    """0 for bool, 1 for integers, 2 for floating point."""
    kind = dtype.kind
    return 2 if kind == "f" else (0 if kind == "b" else 1)


def is_floating(dtype):
    return dtype.kind == "f"


def promote(a, b, a_is_scalar=False, b_is_scalar=False, scalar_is_python=True):
    """The result dtype of a binary op on dtypes a and b (see the module docstring).

    A 0-d *tensor* of a higher category keeps its own dtype (int64 + 0-d float64 -> float64);
    a Python scalar of a higher category gives the default dtype of that category."""
    if a == b:
        return a
    ca, cb = category(a), category(b)
    if a_is_scalar != b_is_scalar:  # a scalar next to a dimensioned tensor
        tensor_dt, tensor_cat, scalar_cat, scalar_dt = (b, cb, ca, a) if a_is_scalar else (a, ca, cb, b)
        if scalar_cat <= tensor_cat:
            return tensor_dt
        if not scalar_is_python:
            return scalar_dt
        return get_default_dtype() if scalar_cat == 2 else (np.dtype("int64") if scalar_dt.kind != "b" else bool_)
    if ca == cb:
        return np.promote_types(a, b)
    return a if ca > cb else b


def scalar_dtype(value):
    """The dtype a Python scalar gets on its own (torch.tensor(2.5).dtype)."""
    if isinstance(value, (builtins.bool, np.bool_)):
        return bool_
    if isinstance(value, (builtins.int, np.integer)):
        return int64
    return get_default_dtype()
