"""Padding modules (torch.nn.modules.padding): thin wrappers over F.pad with a fixed mode.

`padding` is an int (the same on every side) or a tuple of (left, right[, top, bottom[, front,
back]]) as in F.pad; a negative width crops."""
from tinygrad_bn.nn.module import Module
from tinygrad_bn.ops.shape import pad


def _expand_padding(padding, n, name):
    if isinstance(padding, int) and not isinstance(padding, bool):
        return (padding,) * (2 * n)
    padding = tuple(padding) if isinstance(padding, (tuple, list)) else (padding,)
    if len(padding) != 2 * n or not all(isinstance(p, int) and not isinstance(p, bool) for p in padding):
        raise ValueError(f"{name}: padding must be an int or a tuple of {2 * n} ints, got {padding!r}")
    return padding


class _PadNd(Module):
    """y = F.pad(x, padding, mode): reflect, replicate and circular take (n+1)-D or (n+2)-D input;
    constant padding takes any input with at least n dims, as in PyTorch."""

    mode, n_dims = "constant", 1

    def __init__(self, padding, value=0.0):
        super().__init__()
        self.padding = _expand_padding(padding, self.n_dims, type(self).__name__)
        self.value = value

    def forward(self, input):
        if self.mode == "constant":
            return pad(input, self.padding, "constant", self.value)
        if input.ndim not in (self.n_dims + 1, self.n_dims + 2):
            raise NotImplementedError(f"{type(self).__name__}: expected {self.n_dims + 1}D or {self.n_dims + 2}D "
                                      f"input, got input of shape {list(input.shape)}")
        return pad(input, self.padding, self.mode)

    def extra_repr(self):
        return f"{self.padding}"


class _ConstantPadNd(_PadNd):
    def __init__(self, padding, value):
        super().__init__(padding, value)

    def extra_repr(self):
        return f"padding={self.padding}, value={self.value}"


class _ZeroPadNd(_PadNd):
    def __init__(self, padding):
        super().__init__(padding, 0.0)


class ConstantPad1d(_ConstantPadNd):
    n_dims = 1


class ConstantPad2d(_ConstantPadNd):
    n_dims = 2


class ConstantPad3d(_ConstantPadNd):
    n_dims = 3


class ZeroPad1d(_ZeroPadNd):
    n_dims = 1


class ZeroPad2d(_ZeroPadNd):
    n_dims = 2


class ZeroPad3d(_ZeroPadNd):
    n_dims = 3


class ReflectionPad1d(_PadNd):
    mode, n_dims = "reflect", 1


class ReflectionPad2d(_PadNd):
    mode, n_dims = "reflect", 2


class ReflectionPad3d(_PadNd):
    mode, n_dims = "reflect", 3


class ReplicationPad1d(_PadNd):
    mode, n_dims = "replicate", 1


class ReplicationPad2d(_PadNd):
    mode, n_dims = "replicate", 2


class ReplicationPad3d(_PadNd):
    mode, n_dims = "replicate", 3


class CircularPad1d(_PadNd):
    mode, n_dims = "circular", 1


class CircularPad2d(_PadNd):
    mode, n_dims = "circular", 2


class CircularPad3d(_PadNd):
    mode, n_dims = "circular", 3


__all__ = ["ConstantPad1d", "ConstantPad2d", "ConstantPad3d", "ZeroPad1d", "ZeroPad2d", "ZeroPad3d",
           "ReflectionPad1d", "ReflectionPad2d", "ReflectionPad3d", "ReplicationPad1d", "ReplicationPad2d",
           "ReplicationPad3d", "CircularPad1d", "CircularPad2d", "CircularPad3d"]
