"""More elementwise math: sin, cos; the rounding family (floor, ceil, round, trunc), whose
gradient is zero wherever it exists; and the float tests isnan, isinf (no gradient)."""
from tinygrad_bn import dtypes
from tinygrad_bn.autograd.function import Function
from tinygrad_bn.ops.elementwise import _as_float
from tinygrad_bn.tensor import Tensor


class Sin(Function):
    """y = sin x.   dx = g * cos x."""

    def forward(self, x):
        self.save_for_backward(x=x)
        return self.xp.sin(x)

    def backward(self, g):
        return g * cos(self.saved("x"))


class Cos(Function):
    """y = cos x.   dx = -g * sin x."""

    def forward(self, x):
        self.save_for_backward(x=x)
        return self.xp.cos(x)

    def backward(self, g):
        return -g * sin(self.saved("x"))


def sin(x): return Sin.apply(_as_float(x, "sin"))
def cos(x): return Cos.apply(_as_float(x, "cos"))


class Rounding(Function):
    """y = floor(x), ceil(x), trunc(x) or round(x, decimals) (half to even, as PyTorch).
    dx = 0: the function is piecewise constant (PyTorch's gradient is zero too)."""

    def forward(self, x, kind, decimals):
        xp = self.xp
        if kind == "round":
            return xp.round(x, decimals)
        return getattr(xp, kind)(x)

    def backward(self, g):
        return g * 0


def _rounding(x, kind, decimals=0):
    if not isinstance(x, Tensor):
        raise TypeError(f"{kind}: expected a Tensor, got {type(x).__name__}")
    if not isinstance(decimals, int) or isinstance(decimals, bool):
        raise TypeError(f"round: decimals must be an int, got {decimals!r}")
    if x.dtype == dtypes.bool_:
        raise NotImplementedError(f"{kind}: not implemented for a bool tensor, as in PyTorch "
                                  f"(convert it first, e.g. x.float())")
    if not dtypes.is_floating(x.dtype):
        if decimals != 0:
            raise RuntimeError(f"round: decimals={decimals} is only supported for floating-point "
                               f"tensors, got dtype {x.dtype}")
        return Tensor._make(x.data.copy())  # integers are already whole (PyTorch returns a copy)
    return Rounding.apply(x, kind=kind, decimals=decimals)


def floor(x): return _rounding(x, "floor")
def ceil(x): return _rounding(x, "ceil")
def trunc(x): return _rounding(x, "trunc")
def round(x, decimals=0): return _rounding(x, "round", decimals)


def isnan(x):
    """A bool tensor: True where x is nan (never for integer tensors)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"isnan: expected a Tensor, got {type(x).__name__}")
    return Tensor._make(x.xp.isnan(x.data) if dtypes.is_floating(x.dtype) else x.xp.zeros(x.shape, bool))


def isinf(x):
    """A bool tensor: True where x is +inf or -inf."""
    if not isinstance(x, Tensor):
        raise TypeError(f"isinf: expected a Tensor, got {type(x).__name__}")
    return Tensor._make(x.xp.isinf(x.data) if dtypes.is_floating(x.dtype) else x.xp.zeros(x.shape, bool))


__all__ = ["sin", "cos", "floor", "ceil", "trunc", "round", "isnan", "isinf"]
