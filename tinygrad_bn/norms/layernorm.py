"""Layer normalization (Ba, Kiros & Hinton 2016): LayerNorm and F.layer_norm.

Per sample, over the last k = len(normalized_shape) dims (D = prod(normalized_shape) values):

    mu     = mean(x)                       var = mean((x - mu)^2)          (biased)
    x_hat  = (x - mu) / sqrt(var + eps)
    y      = x_hat * w + b                 (w, b shaped normalized_shape: one per element)

Training and eval are the same computation: no running statistics, no batch dependence, and a
batch of one is fine. A normalized size of 1 gives x_hat = 0, so y == b.

Backward, with g_hat = dy * w and means over the D values of each sample:

    dx = invstd * (g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat))
    dw = sum over the leading dims of dy * x_hat,      db = sum over the leading dims of dy

(the two means are the projections of g_hat on the constant vector and on x_hat: normalizing
removes exactly those two directions).

The graph node is the shared mean/variance kernel (norms/_meanvar.py) on the view
(prod(leading dims), D) with statistics over axis 1, named LayerNormBackward. It saves x (the
one full-size array), the per-sample mean and invstd, and w.
"""
import math
import numbers

from tinygrad_bn import dtypes
from tinygrad_bn.nn.module import Module
from tinygrad_bn.norms._base import NormSpec, register_affine, reset_affine
from tinygrad_bn.norms._meanvar import normalize


def shape_list(shape):
    """`[2, 5, 4]`, as PyTorch's C++ messages print shapes."""
    return f"[{', '.join(str(n) for n in shape)}]"


def check_normalized_shape(normalized_shape, op):
    """normalized_shape as a tuple of ints; PyTorch's errors for an int or an empty shape."""
    if isinstance(normalized_shape, numbers.Integral) or not isinstance(normalized_shape, (tuple, list)):
        raise TypeError(f"{op}(): argument 'normalized_shape' (position 2) must be tuple of ints, "
                        f"not {type(normalized_shape).__name__}")
    if not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in normalized_shape):
        raise TypeError(f"{op}(): argument 'normalized_shape' (position 2) must be tuple of ints, "
                        f"got {list(normalized_shape)}")
    shape = tuple(int(n) for n in normalized_shape)
    if not shape:
        raise RuntimeError("Expected normalized_shape to be at least 1-dimensional, i.e., containing "
                           "at least one element, but got normalized_shape = []")
    return shape


def module_normalized_shape(normalized_shape, name):
    """A module's normalized_shape: an int means (int,) (the functional forms refuse it, as
    PyTorch's do), then the functional's checks, and no size may be negative."""
    if isinstance(normalized_shape, numbers.Integral):
        normalized_shape = (normalized_shape,)
    shape = check_normalized_shape(tuple(normalized_shape), name)
    if any(n < 0 for n in shape):
        raise ValueError(f"{name}: normalized_shape must not be negative, got {list(shape)}")
    return shape


def check_param_shape(name, param, normalized_shape):
    if param is not None and tuple(param.shape) != normalized_shape:
        raise RuntimeError(f"Expected {name} to be of same shape as normalized_shape, but got {name} "
                           f"of shape {shape_list(param.shape)} and normalized_shape = "
                           f"{shape_list(normalized_shape)}")


def trailing_geometry(shape, normalized_shape):
    """The kernel's view for statistics over the trailing dims: (rows, D), axes (1,), and the
    parameters broadcast as normalized_shape."""
    k = len(normalized_shape)
    return (math.prod(shape[:len(shape) - k]), math.prod(normalized_shape)), (1,), normalized_shape


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """F.layer_norm: normalize over the trailing dims given by normalized_shape (see the module
    docstring), then the elementwise affine when weight/bias are given."""
    normalized_shape = check_normalized_shape(normalized_shape, "layer_norm")
    check_param_shape("weight", weight, normalized_shape)
    check_param_shape("bias", bias, normalized_shape)
    k = len(normalized_shape)
    if input.ndim < k or tuple(input.shape[input.ndim - k:]) != normalized_shape:
        raise RuntimeError(f"Given normalized_shape={shape_list(normalized_shape)}, expected input with "
                           f"shape [*, {', '.join(str(n) for n in normalized_shape)}], but got input "
                           f"of size{shape_list(input.shape)}")
    if not dtypes.is_floating(input.dtype):
        raise TypeError(f"layer_norm: expected a floating-point input, got {input.dtype}")
    if input.numel() == 0:  # nothing to normalize (and no statistics of empty sets)
        return input * 1.0
    group_shape, axes, param_shape = trailing_geometry(input.shape, normalized_shape)
    y, _, _ = normalize(input, weight, bias,
                        group_shape=group_shape, axes=axes, param_shape=param_shape, eps=eps,
                        param_group_shape=(1, group_shape[1]),  # w, b along the D of (rows, D)
                        node_name="LayerNormBackward", normalized_shape=normalized_shape)
    return y


class LayerNorm(Module):
    """Layer normalization over the trailing dims `normalized_shape` of each sample.

    LayerNorm(C) on (N, C) normalizes the features of each sample; on conv maps (N, C, H, W) use
    LayerNorm([C, H, W]) to normalize each sample across channels and positions."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None,
                 dtype=None):
        super().__init__()
        self.normalized_shape = module_normalized_shape(normalized_shape, "LayerNorm")
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        register_affine(self, self.normalized_shape, elementwise_affine, bias, device=device,
                        dtype=dtype)

    def reset_parameters(self):
        reset_affine(self)

    def forward(self, input):
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


SPECS = [
    NormSpec(name="LayerNorm", make=lambda c: LayerNorm(c), input_shape=lambda c: (3, 2, c),
             make_for_conv=lambda c, hw: LayerNorm([c, hw, hw]),
             torch_make=lambda torch, c: torch.nn.LayerNorm(c),
             description="statistics over the last dim (on conv maps: LayerNorm([C, H, W]))"),
    NormSpec(name="LayerNorm-CHW", make=lambda c: LayerNorm([c, 2, 2]), input_shape=lambda c: (2, c, 2, 2),
             torch_make=lambda torch, c: torch.nn.LayerNorm([c, 2, 2]),
             description="LayerNorm([C, H, W]): each sample across channels and positions"),
    NormSpec(name="LayerNorm-no-bias", make=lambda c: LayerNorm([2, c], bias=False),
             input_shape=lambda c: (3, 2, c),
             torch_make=lambda torch, c: torch.nn.LayerNorm([2, c], bias=False),
             description="two normalized dims, weight only"),
    NormSpec(name="LayerNorm-no-affine", make=lambda c: LayerNorm(c, elementwise_affine=False, eps=1e-3),
             input_shape=lambda c: (5, c),
             torch_make=lambda torch, c: torch.nn.LayerNorm(c, elementwise_affine=False, eps=1e-3),
             description="no parameters"),
]
