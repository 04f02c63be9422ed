"""tinygrad_bn.nn.functional: the stateless form of every layer, with PyTorch's names and
signatures (`import tinygrad_bn.nn.functional as F`).

Mostly re-exports of tinygrad_bn.ops. Two things live here: `linear` (one graph node, defined
below) and thin wrappers for convolution and pooling, whose ops (ops/conv.py, ops/pool.py) are
imported when first called (they were written alongside this file)."""
import math

from tinygrad_bn.autograd.function import Function
from tinygrad_bn.ops.activation import leaky_relu, log_softmax, softmax  # noqa: F401
from tinygrad_bn.ops.dropout import dropout, dropout2d  # noqa: F401
from tinygrad_bn.ops.elementwise import sigmoid, tanh  # noqa: F401
from tinygrad_bn.ops.elementwise import relu as _relu
from tinygrad_bn.ops.loss import cross_entropy, mse_loss, nll_loss  # noqa: F401
from tinygrad_bn.ops.loss import (binary_cross_entropy, binary_cross_entropy_with_logits,  # noqa: F401
                                huber_loss, kl_div, l1_loss, smooth_l1_loss)
from tinygrad_bn.ops.activation import softplus  # noqa: F401
from tinygrad_bn.ops.shape import pad  # noqa: F401
from tinygrad_bn.ops.pool import adaptive_avg_pool1d, adaptive_max_pool1d, adaptive_max_pool2d  # noqa: F401
from tinygrad_bn.ops.upsample import interpolate  # noqa: F401
from tinygrad_bn.tensor import Tensor
from tinygrad_bn.ops.activation import elu, gelu, hardtanh, prelu, relu6, silu  # noqa: F401
from tinygrad_bn.ops.embedding import embedding, one_hot  # noqa: F401
from tinygrad_bn.ops.linalg import normalize  # noqa: F401

__all__ = ["linear", "relu", "relu_", "leaky_relu", "sigmoid", "tanh", "softmax", "log_softmax",
           "dropout", "dropout2d", "conv1d", "conv2d", "max_pool2d", "avg_pool2d",
           "adaptive_avg_pool2d", "cross_entropy", "nll_loss", "mse_loss", "pad"]
__all__ += ["gelu", "silu", "elu", "relu6", "hardtanh", "prelu", "one_hot", "normalize", "embedding"]
__all__ += ["interpolate", "adaptive_max_pool2d", "adaptive_max_pool1d", "adaptive_avg_pool1d"]


# ---- linear ---------------------------------------------------------------------------------
class Linear(Function):
    """y = x W^T + b   for x of shape (*, in), W (out, in), b (out,) or absent.

    dx = g W,   dW = g^T x (summed over the leading dims of x),   db = g summed over them."""

    def forward(self, x, weight, bias=None):
        self.save_for_backward(x=x, weight=weight)
        y = x @ weight.T
        if bias is not None:
            y += bias
        return y

    def backward(self, g):
        x, weight = self.saved("x", "weight")
        out_features, in_features = weight.shape
        g_rows = g.reshape(-1, out_features)  # every leading dim is a batch dim
        dx = g @ weight if self.needs_input_grad[0] else None
        dw = g_rows.T @ x.reshape(-1, in_features) if self.needs_input_grad[1] else None
        if len(self.input_meta) == 2:  # no bias
            return dx, dw
        return dx, dw, g_rows.sum(0) if self.needs_input_grad[2] else None


def linear(input, weight, bias=None):
    """torch.nn.functional.linear: input @ weight.T + bias."""
    for name, t in (("input", input), ("weight", weight), ("bias", bias)):
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(f"linear: {name} must be a Tensor, got {type(t).__name__}")
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got shape "
                         f"{list(weight.shape)}")
    if input.ndim == 0 or input.shape[-1] != weight.shape[1]:
        rows = math.prod(input.shape[:-1]) if input.ndim else 1
        raise RuntimeError(f"linear: mat1 and mat2 shapes cannot be multiplied ({rows}x"
                           f"{input.shape[-1] if input.ndim else 0} and {weight.shape[1]}x"
                           f"{weight.shape[0]}); input shape {list(input.shape)}, weight shape "
                           f"{list(weight.shape)}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: bias must have shape [{weight.shape[0]}] (out_features), got "
                         f"{list(bias.shape)}")
    if input.dtype != weight.dtype or (bias is not None and bias.dtype != weight.dtype):
        raise RuntimeError(f"linear: mat1 and mat2 must have the same dtype, but got "
                           f"{input.dtype} (input), {weight.dtype} (weight)"
                           f"{'' if bias is None else f' and {bias.dtype} (bias)'}")
    if bias is None:
        return Linear.apply(input, weight)
    return Linear.apply(input, weight, bias)


# ---- activations ----------------------------------------------------------------------------
def relu(input, inplace=False):
    """torch.nn.functional.relu: max(x, 0)."""
    return input.relu_() if inplace else _relu(input)


def relu_(input):
    return input.relu_()


# ---- convolution and pooling (ops/conv.py, ops/pool.py; imported on first use) --------------
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d; padding may also be 'valid' or 'same'."""
    from tinygrad_bn.ops.conv import conv2d as conv
    return conv(input, weight, bias, stride, padding, dilation, groups)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv1d; padding may also be 'valid' or 'same'."""
    from tinygrad_bn.ops.conv import conv1d as conv
    return conv(input, weight, bias, stride, padding, dilation, groups)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv3d; padding may also be 'valid' or 'same'."""
    from tinygrad_bn.ops.conv import conv3d as conv
    return conv(input, weight, bias, stride, padding, dilation, groups)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """torch.nn.functional.conv_transpose1d: weight (C_in, C_out/groups, K)."""
    from tinygrad_bn.ops.conv import conv_transpose1d as conv
    return conv(input, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """torch.nn.functional.conv_transpose2d: weight (C_in, C_out/groups, kH, kW)."""
    from tinygrad_bn.ops.conv import conv_transpose2d as conv
    return conv(input, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """torch.nn.functional.conv_transpose3d: weight (C_in, C_out/groups, kD, kH, kW)."""
    from tinygrad_bn.ops.conv import conv_transpose3d as conv
    return conv(input, weight, bias, stride, padding, output_padding, groups, dilation)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """torch.nn.functional.max_pool2d; with return_indices, also each maximum's flat position."""
    from tinygrad_bn.ops.pool import max_pool2d as pool
    return pool(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """torch.nn.functional.avg_pool2d."""
    from tinygrad_bn.ops.pool import avg_pool2d as pool
    return pool(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def adaptive_avg_pool2d(input, output_size):
    """torch.nn.functional.adaptive_avg_pool2d."""
    from tinygrad_bn.ops.pool import adaptive_avg_pool2d as pool
    return pool(input, output_size)


# ---- normalizers (defined in tinygrad_bn/norms/, one file each) --------------------------------
from tinygrad_bn.norms.batchnorm import batch_norm  # noqa: E402,F401
from tinygrad_bn.norms.batchrenorm import batch_renorm  # noqa: E402,F401
from tinygrad_bn.norms.ghostbn import ghost_batch_norm  # noqa: E402,F401
from tinygrad_bn.norms.syncbn import sync_batch_norm  # noqa: E402,F401
from tinygrad_bn.norms.adain import adaptive_instance_norm  # noqa: E402,F401
from tinygrad_bn.norms.decorrelated import decorrelated_batch_norm  # noqa: E402,F401
from tinygrad_bn.norms.frn import filter_response_norm, tlu  # noqa: E402,F401
from tinygrad_bn.norms.groupnorm import group_norm  # noqa: E402,F401
from tinygrad_bn.norms.instancenorm import instance_norm  # noqa: E402,F401
from tinygrad_bn.norms.layernorm import layer_norm  # noqa: E402,F401
from tinygrad_bn.norms.rmsnorm import rms_norm  # noqa: E402,F401
__all__ += ["binary_cross_entropy", "binary_cross_entropy_with_logits", "l1_loss", "smooth_l1_loss",
            "huber_loss", "kl_div", "softplus"]
__all__ += ["conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"]
