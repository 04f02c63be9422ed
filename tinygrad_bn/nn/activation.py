"""Activation modules: GELU, SiLU, ELU, Hardtanh, ReLU6, PReLU (PyTorch's names, arguments,
defaults and reprs). Each calls its function in nn.functional; PReLU owns its learnable slope.
(ReLU, LeakyReLU, Sigmoid, Tanh, Softmax and LogSoftmax live in layers.py.)"""
import warnings

from tinygrad_bn import creation
from tinygrad_bn.nn import functional as F
from tinygrad_bn.nn import init
from tinygrad_bn.nn.module import Module
from tinygrad_bn.nn.parameter import Parameter

__all__ = ["GELU", "SiLU", "ELU", "Hardtanh", "ReLU6", "PReLU"]


class GELU(Module):
    """x Phi(x), Phi the standard normal CDF; approximate='tanh' for the tanh approximation."""

    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, input):
        return F.gelu(input, approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class SiLU(Module):
    """x * sigmoid(x)."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, input):
        return F.silu(input, inplace=self.inplace)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class ELU(Module):
    """x if x > 0 else alpha (exp(x) - 1)."""

    def __init__(self, alpha=1.0, inplace=False):
        super().__init__()
        self.alpha, self.inplace = alpha, inplace

    def forward(self, input):
        return F.elu(input, self.alpha, self.inplace)

    def extra_repr(self):
        return f"alpha={self.alpha}" + (", inplace=True" if self.inplace else "")


class Hardtanh(Module):
    """x clipped to [min_val, max_val] (min_value/max_value: PyTorch's deprecated spellings)."""

    def __init__(self, min_val=-1.0, max_val=1.0, inplace=False, min_value=None, max_value=None):
        super().__init__()
        if min_value is not None:
            warnings.warn("keyword argument `min_value` is deprecated and renamed to `min_val`",
                          FutureWarning, stacklevel=2)
            min_val = min_value
        if max_value is not None:
            warnings.warn("keyword argument `max_value` is deprecated and renamed to `max_val`",
                          FutureWarning, stacklevel=2)
            max_val = max_value
        self.min_val, self.max_val, self.inplace = min_val, max_val, inplace
        if self.max_val <= self.min_val:
            raise AssertionError(f"{type(self).__name__}: max_val ({self.max_val}) must be greater "
                                 f"than min_val ({self.min_val})")

    def forward(self, input):
        return F.hardtanh(input, self.min_val, self.max_val, self.inplace)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}" + (", inplace=True" if self.inplace else "")


class ReLU6(Hardtanh):
    """min(max(x, 0), 6)."""

    def __init__(self, inplace=False):
        super().__init__(0.0, 6.0, inplace)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class PReLU(Module):
    """max(0, x) + a * min(0, x), with a learnable a: one for all channels, or one per channel
    (dim 1 of the input) when num_parameters = C. Init: a = init (0.25)."""

    def __init__(self, num_parameters=1, init=0.25, device=None, dtype=None):
        super().__init__()
        if not isinstance(num_parameters, int) or isinstance(num_parameters, bool):
            raise TypeError(f"PReLU: num_parameters must be an int (1, or the number of channels), got "
                            f"{type(num_parameters).__name__} {num_parameters!r}")
        if num_parameters < 0:
            raise RuntimeError(f"PReLU: num_parameters must be non-negative (1, or the number of "
                               f"channels), got {num_parameters}")
        self.num_parameters, self.init = num_parameters, init
        self.weight = Parameter(creation.empty(num_parameters, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self):
        init.constant_(self.weight, self.init)

    def forward(self, input):
        return F.prelu(input, self.weight)

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"
