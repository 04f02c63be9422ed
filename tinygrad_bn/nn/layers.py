"""Layers as Modules: Linear, Conv1d/2d/3d, ConvTranspose1d/2d/3d, pooling, activations, dropout, Flatten, Identity.

Each keeps its hyperparameters and parameters and calls its function in nn.functional; names,
arguments, defaults, parameter shapes and initialisation are PyTorch's, so torch weights load
directly and reprs read the same."""
import math

from tinygrad_bn import creation
from tinygrad_bn.nn import functional as F
from tinygrad_bn.nn import init
from tinygrad_bn.nn.module import Module
from tinygrad_bn.nn.parameter import Parameter
from tinygrad_bn.ops.shape import pad


def _ntuple(value, n, what, name):
    """An int or a sequence of n ints -> a tuple of n ints (kernel_size=3 -> (3, 3))."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * n
    value = tuple(value)
    if len(value) != n or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{name}: {what} must be an int or a tuple of {n} ints, got {value!r}")
    return value


def _fan_in_bias_init(bias, weight):
    """PyTorch's bias init for Linear and Conv: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    fan_in, _ = init._calculate_fan_in_and_fan_out(weight)
    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
    init.uniform_(bias, -bound, bound)


# ---- Linear ---------------------------------------------------------------------------------
class Linear(Module):
    """y = x W^T + b, weight (out_features, in_features), bias (out_features,).

    Init (PyTorch's): W ~ kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in)); b likewise."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        for what, n in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise ValueError(f"Linear: {what} must be a non-negative int, got {n!r}")
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(creation.empty(out_features, in_features, device=device, dtype=dtype))
        if bias:
            self.bias = Parameter(creation.empty(out_features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            _fan_in_bias_init(self.bias, self.weight)

    def forward(self, input):
        if input.ndim == 0 or input.shape[-1] != self.in_features:
            raise RuntimeError(f"{self!r}: expected input with last dimension {self.in_features}, "
                               f"got input of shape {list(input.shape)}")
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


# ---- convolution ----------------------------------------------------------------------------
class _ConvNd(Module):
    """Shared by Conv1d/2d/3d: weight (out, in/groups, *kernel), bias (out,); and by the
    transposed ones, whose weight is (in, out/groups, *kernel) (the weight of the convolution
    they are the gradient of)."""

    _spatial = None      # number of spatial dims, set by the subclass
    _functional = None   # F.conv1d / F.conv2d / ..., set by the subclass
    _transposed = False

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        name, n = type(self).__name__, self._spatial
        if not isinstance(groups, int) or groups <= 0:
            raise ValueError(f"{name}: groups must be a positive integer, got {groups!r}")
        if in_channels % groups != 0:
            raise ValueError(f"{name}: in_channels ({in_channels}) must be divisible by groups ({groups})")
        if out_channels % groups != 0:
            raise ValueError(f"{name}: out_channels ({out_channels}) must be divisible by groups ({groups})")
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"{name}: padding_mode must be one of ['zeros', 'reflect', 'replicate', "
                             f"'circular'], but got padding_mode={padding_mode!r}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _ntuple(kernel_size, n, "kernel_size", name)
        self.stride = _ntuple(stride, n, "stride", name)
        self.dilation = _ntuple(dilation, n, "dilation", name)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"{name}: Invalid padding string {padding!r}, should be one of "
                                 f"{{'valid', 'same'}}")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(f"{name}: padding='same' is not supported for strided convolutions")
            self.padding = padding
        else:
            self.padding = _ntuple(padding, n, "padding", name)
        self.output_padding = (0,) * n
        self.padding_mode = padding_mode
        if self._transposed:
            shape = (in_channels, out_channels // groups) + self.kernel_size
        else:
            shape = (out_channels, in_channels // groups) + self.kernel_size
        self.weight = Parameter(creation.empty(*shape, device=device, dtype=dtype))
        if bias:
            self.bias = Parameter(creation.empty(out_channels, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            _fan_in_bias_init(self.bias, self.weight)

    def _check_input(self, input):
        n = self._spatial
        if input.ndim not in (n + 1, n + 2) or input.shape[-n - 1] != self.in_channels:
            layout = {1: "L", 2: "H, W", 3: "D, H, W"}[n]
            raise RuntimeError(f"{self!r}: expected input of shape (N, {self.in_channels}, {layout}) "
                               f"or ({self.in_channels}, {layout}), got {list(input.shape)}")

    def forward(self, input):
        self._check_input(input)
        padding = self.padding
        if self.padding_mode != "zeros":  # PyTorch: pad in that mode first, then a convolution without padding
            input = pad(input, self._reversed_padding_repeated_twice(), self.padding_mode)
            padding = 0
        return type(self)._functional(input, self.weight, self.bias, self.stride, padding,
                                      self.dilation, self.groups)

    def _reversed_padding_repeated_twice(self):
        """F.pad's (left, right) pairs from the last dim; 'same' puts the odd extra on the right."""
        widths = []
        for i in reversed(range(self._spatial)):
            if self.padding == "valid":
                widths += [0, 0]
            elif self.padding == "same":
                total = self.dilation[i] * (self.kernel_size[i] - 1)
                widths += [total // 2, total - total // 2]
            else:
                widths += [self.padding[i]] * 2
        return tuple(widths)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * len(self.kernel_size):
            s += f", padding={self.padding}"
        if self.dilation != (1,) * len(self.dilation):
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * len(self.output_padding):
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class Conv2d(_ConvNd):
    """2-D convolution over (N, C_in, H, W); weight (C_out, C_in/groups, kH, kW). PyTorch's init:
    kaiming_uniform(a=sqrt(5)) on the weight, U(+-1/sqrt(fan_in)) on the bias."""

    _spatial = 2
    _functional = staticmethod(F.conv2d)


class Conv1d(_ConvNd):
    """1-D convolution over (N, C_in, L); weight (C_out, C_in/groups, k)."""

    _spatial = 1
    _functional = staticmethod(F.conv1d)


class Conv3d(_ConvNd):
    """3-D convolution over (N, C_in, D, H, W); weight (C_out, C_in/groups, kD, kH, kW)."""

    _spatial = 3
    _functional = staticmethod(F.conv3d)


class _ConvTransposeNd(_ConvNd):
    """The gradient of a convolution with respect to its input, as a layer: output size
    (L - 1) stride - 2 padding + dilation (k - 1) + output_padding + 1 per spatial dim.
    forward(input, output_size) picks the output_padding that gives that size, as PyTorch does."""

    _transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
                 groups=1, bias=True, dilation=1, padding_mode="zeros", device=None, dtype=None):
        name = type(self).__name__
        if padding_mode != "zeros":
            raise ValueError(f'{name}: Only "zeros" padding mode is supported, got padding_mode={padding_mode!r}')
        if isinstance(padding, str):
            raise ValueError(f"{name}: padding must be an int or a tuple of ints, got {padding!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        self.output_padding = _ntuple(output_padding, self._spatial, "output_padding", name)
        if any(op < 0 or (op >= s and op >= d)
               for op, s, d in zip(self.output_padding, self.stride, self.dilation)):
            raise ValueError(f"{name}: output padding must be non-negative and smaller than either stride "
                             f"or dilation, got output_padding={self.output_padding}, stride={self.stride}, "
                             f"dilation={self.dilation}")

    def _output_padding(self, input, output_size):
        """output_padding for a requested output_size (the last n entries count), checked."""
        if output_size is None:
            return self.output_padding
        n = self._spatial
        requested = tuple(int(v) for v in output_size)
        if len(requested) not in (n, n + 2):
            raise ValueError(f"{self!r}: output_size must have {n} or {n + 2} elements, got "
                             f"{list(output_size)}")
        requested = requested[-n:]  # (N, C, *size): the batch and channel entries do not count
        low = [(size - 1) * s - 2 * p + d * (k - 1) + 1 for size, s, p, d, k in
               zip(input.shape[-n:], self.stride, self.padding, self.dilation, self.kernel_size)]
        high = [m + s - 1 for m, s in zip(low, self.stride)]
        if any(not lo <= r <= hi for r, lo, hi in zip(requested, low, high)):
            raise ValueError(f"{self!r}: requested an output size of {list(requested)}, but valid sizes "
                             f"range from {low} to {high} (for an input of {list(input.shape[-n:])})")
        return tuple(r - lo for r, lo in zip(requested, low))

    def forward(self, input, output_size=None):
        self._check_input(input)
        output_padding = self._output_padding(input, output_size)
        return type(self)._functional(input, self.weight, self.bias, self.stride, self.padding,
                                      output_padding, self.groups, self.dilation)


class ConvTranspose1d(_ConvTransposeNd):
    """Transposed 1-D convolution over (N, C_in, L); weight (C_in, C_out/groups, k)."""

    _spatial = 1
    _functional = staticmethod(F.conv_transpose1d)


class ConvTranspose2d(_ConvTransposeNd):
    """Transposed 2-D convolution over (N, C_in, H, W); weight (C_in, C_out/groups, kH, kW)."""

    _spatial = 2
    _functional = staticmethod(F.conv_transpose2d)


class ConvTranspose3d(_ConvTransposeNd):
    """Transposed 3-D convolution over (N, C_in, D, H, W); weight (C_in, C_out/groups, kD, kH, kW)."""

    _spatial = 3
    _functional = staticmethod(F.conv_transpose3d)


# ---- pooling --------------------------------------------------------------------------------
class MaxPool2d(Module):
    """Max over each kernel_size window (stride defaults to kernel_size); with return_indices,
    forward returns (values, flat indices of the maxima) as PyTorch does."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def forward(self, input):
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """Mean over each kernel_size window (stride defaults to kernel_size)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.ceil_mode = padding, ceil_mode
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def forward(self, input):
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Mean pooling to a fixed output_size (H_out, W_out), whatever the input size."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, input):
        return F.adaptive_avg_pool2d(input, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


# ---- activations ----------------------------------------------------------------------------
class ReLU(Module):
    """max(x, 0)."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, input):
        return F.relu(input, inplace=self.inplace)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class LeakyReLU(Module):
    """x if x > 0 else negative_slope * x."""

    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def forward(self, input):
        return F.leaky_relu(input, self.negative_slope, self.inplace)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class Sigmoid(Module):
    """1 / (1 + exp(-x))."""

    def forward(self, input):
        return F.sigmoid(input)


class Tanh(Module):
    """tanh(x)."""

    def forward(self, input):
        return F.tanh(input)


class Softmax(Module):
    """exp(x) / sum(exp(x)) along dim."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return F.softmax(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """x - logsumexp(x) along dim."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return F.log_softmax(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


# ---- dropout --------------------------------------------------------------------------------
class _DropoutNd(Module):
    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace = p, inplace

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Dropout(_DropoutNd):
    """In training, zero each element with probability p and scale the rest by 1/(1-p);
    identity in eval mode."""

    def forward(self, input):
        return F.dropout(input, self.p, self.training, self.inplace)


class Dropout2d(_DropoutNd):
    """In training, zero whole channels of (N, C, H, W) or (C, H, W) with probability p and
    scale the rest by 1/(1-p); identity in eval mode."""

    def forward(self, input):
        return F.dropout2d(input, self.p, self.training, self.inplace)


# ---- shape ----------------------------------------------------------------------------------
class Flatten(Module):
    """Merge dims start_dim..end_dim into one (by default: all but the batch dim)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input):
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Identity(Module):
    """Returns its input unchanged (any constructor arguments are ignored, as in PyTorch)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


# ---- resampling and adaptive max pooling (ops/upsample.py, ops/pool.py) ----------------------
class Upsample(Module):
    """Resample to `size` or by `scale_factor` (F.interpolate): modes 'nearest', 'linear', 'bilinear'."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        from tinygrad_bn.ops.upsample import MODES
        if mode not in MODES:
            raise NotImplementedError(f"Upsample: mode {mode!r} is not supported; supported modes are "
                                      f"'nearest', 'linear' and 'bilinear'")
        if (size is None) == (scale_factor is None):
            raise ValueError(f"Upsample: exactly one of size or scale_factor should be defined, got "
                             f"size={size!r} and scale_factor={scale_factor!r}")
        self.name = type(self).__name__
        self.size = size
        if isinstance(scale_factor, tuple):
            self.scale_factor = tuple(float(s) for s in scale_factor)
        else:
            self.scale_factor = float(scale_factor) if scale_factor else None
        self.mode = mode
        self.align_corners = align_corners
        self.recompute_scale_factor = recompute_scale_factor

    def forward(self, input):
        return F.interpolate(input, self.size, self.scale_factor, self.mode, self.align_corners,
                             recompute_scale_factor=self.recompute_scale_factor)

    def extra_repr(self):
        info = f"scale_factor={self.scale_factor!r}" if self.scale_factor is not None else f"size={self.size!r}"
        return info + f", mode={self.mode!r}"


class AdaptiveMaxPool2d(Module):
    """Max pooling to a fixed output_size (H_out, W_out), whatever the input size."""

    def __init__(self, output_size, return_indices=False):
        super().__init__()
        self.output_size, self.return_indices = output_size, return_indices

    def forward(self, input):
        return F.adaptive_max_pool2d(input, self.output_size, self.return_indices)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveMaxPool1d(AdaptiveMaxPool2d):
    """Max pooling of (N, C, L) or (C, L) to a fixed length output_size."""

    def forward(self, input):
        return F.adaptive_max_pool1d(input, self.output_size, self.return_indices)


class AdaptiveAvgPool1d(Module):
    """Mean pooling of (N, C, L) or (C, L) to a fixed length output_size."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, input):
        return F.adaptive_avg_pool1d(input, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"
