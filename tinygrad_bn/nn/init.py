"""tinygrad_bn.nn.init: PyTorch's weight initialisations, in place and outside the graph.

Every function writes new values into `tensor.data` (no graph is recorded, as under no_grad),
bumps the tensor's version counter, and returns the tensor. Random values come from the seeded
generator of the tensor's own device (`tinygrad_bn.backend.generator`), so
`tinygrad_bn.manual_seed(s)` makes initialisation reproducible on every backend.

    fan_in  = size(1) * receptive field,  fan_out = size(0) * receptive field
    kaiming: std = gain / sqrt(fan)                 (uniform bound = sqrt(3) * std)
    xavier:  std = gain * sqrt(2 / (fan_in + fan_out))
"""
import math
import warnings

from tinygrad_bn import backend
from tinygrad_bn.tensor import Tensor

_LINEAR_FNS = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
               "conv_transpose3d")


def calculate_gain(nonlinearity, param=None):
    """The recommended gain for a nonlinearity (the factor that keeps activations' variance)."""
    if nonlinearity in _LINEAR_FNS or nonlinearity == "sigmoid":
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            negative_slope = 0.01
        elif not isinstance(param, bool) and isinstance(param, (int, float)):
            negative_slope = param
        else:
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + negative_slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def _calculate_fan_in_and_fan_out(tensor):
    """(fan_in, fan_out) of a weight of shape (out, in, *kernel)."""
    if tensor.ndim < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 "
                         f"dimensions (got shape {list(tensor.shape)})")
    receptive_field = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive_field, tensor.shape[0] * receptive_field


def _calculate_correct_fan(tensor, mode):
    mode = mode.lower()
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of ['fan_in', 'fan_out']")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


# ---- the primitives: fill tensor.data in place ----------------------------------------------
def _write(tensor, array):
    tensor.data[...] = array
    tensor._version[0] += 1
    return tensor


def _float_draw_dtype(tensor):
    # NumPy/CuPy generators draw float32 or float64; float16 tensors draw in float32
    return tensor.dtype if tensor.dtype.itemsize >= 4 else "float32"


def _check(tensor, name):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"init.{name}: expected a Tensor, got {type(tensor).__name__}")
    if tensor.dtype.kind != "f":
        raise TypeError(f"init.{name}: expected a floating-point tensor, got dtype {tensor.dtype}")


def uniform_(tensor, a=0.0, b=1.0):
    """Fill with values drawn from U(a, b)."""
    _check(tensor, "uniform_")
    u = backend.generator(tensor.device).random(tensor.shape, dtype=_float_draw_dtype(tensor))
    return _write(tensor, u * (b - a) + a)


def normal_(tensor, mean=0.0, std=1.0):
    """Fill with values drawn from N(mean, std^2)."""
    _check(tensor, "normal_")
    z = backend.generator(tensor.device).standard_normal(tensor.shape, dtype=_float_draw_dtype(tensor))
    return _write(tensor, z * std + mean)


def constant_(tensor, val):
    """Fill with `val`."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"init.constant_: expected a Tensor, got {type(tensor).__name__}")
    return _write(tensor, val)


def ones_(tensor):
    return constant_(tensor, 1)


def zeros_(tensor):
    return constant_(tensor, 0)


# ---- the scaled initialisations -------------------------------------------------------------
def _no_op_if_empty(tensor):
    if 0 in tensor.shape:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=3)
        return True
    return False


def xavier_uniform_(tensor, gain=1.0):
    """U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio, 2010)."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    bound = math.sqrt(3.0) * gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor, gain=1.0):
    """N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / float(fan_in + fan_out)))


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """U(-bound, bound) with bound = gain * sqrt(3 / fan) (He et al., 2015); a is the
    negative slope of leaky_relu."""
    if _no_op_if_empty(tensor):
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(_calculate_correct_fan(tensor, mode))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """N(0, std^2) with std = gain / sqrt(fan)."""
    if _no_op_if_empty(tensor):
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(_calculate_correct_fan(tensor, mode))
    return normal_(tensor, 0.0, std)
