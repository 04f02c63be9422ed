"""Root mean square layer normalization (Zhang & Sennrich 2019): RMSNorm and F.rms_norm.

Per sample, over the last k = len(normalized_shape) dims (D values), with no centring and no bias:

    r      = 1 / sqrt(mean(x^2) + eps)
    x_hat  = x * r
    y      = x_hat * w                     (w shaped normalized_shape, starts at 1)

eps=None means the machine epsilon of the computation type: float32's (1.1920929e-07) for float32
and float16 inputs, float64's (2.220446e-16) for float64 - as PyTorch does.

Backward, with g_hat = dy * w and the mean over the D values of each sample:

    dx = r * (g_hat - x_hat * mean(g_hat * x_hat))
    dw = sum over the leading dims of dy * x_hat

(the LayerNorm formula without the mean(g_hat) term: there is no mean to subtract).

Training and eval are identical. The graph node is the shared kernel (norms/_meanvar.py) with
center=False on the view (prod(leading dims), D), named RMSNormBackward. It saves x, the
per-sample r (as invstd) and w.
"""

import numpy as np

from tinygrad_bn import dtypes
from tinygrad_bn.autograd.grad_mode import no_grad
from tinygrad_bn.creation import ones
from tinygrad_bn.nn.module import Module
from tinygrad_bn.nn.parameter import Parameter
from tinygrad_bn.norms._base import NormSpec
from tinygrad_bn.norms._meanvar import normalize
from tinygrad_bn.norms.layernorm import (check_normalized_shape, check_param_shape,
                                         module_normalized_shape, shape_list, trailing_geometry)


def default_eps(dtype):
    """eps=None: the epsilon of the type the statistics are computed in (float32 unless float64)."""
    return float(np.finfo(np.float64 if dtype == np.float64 else np.float32).eps)


def rms_norm(input, normalized_shape, weight=None, eps=None):
    """F.rms_norm: y = x / sqrt(mean(x^2 over the trailing dims) + eps) * weight."""
    normalized_shape = check_normalized_shape(normalized_shape, "rms_norm")
    check_param_shape("weight", weight, normalized_shape)
    k = len(normalized_shape)
    if input.ndim < k:
        raise ValueError(f"Input tensor must have at least {k} dimensions, but got {input.ndim}")
    if tuple(input.shape[input.ndim - k:]) != normalized_shape:
        # sic: PyTorch's rms_norm message has no ", " after the "*"
        raise RuntimeError(f"Given normalized_shape={shape_list(normalized_shape)}, expected input with "
                           f"shape [*{', '.join(str(n) for n in normalized_shape)}], but got input "
                           f"of size{shape_list(input.shape)}")
    if not dtypes.is_floating(input.dtype):
        raise TypeError(f"rms_norm: expected a floating-point input, got {input.dtype}")
    if eps is None:
        eps = default_eps(input.dtype)
    if input.numel() == 0:
        return input * 1.0
    group_shape, axes, param_shape = trailing_geometry(input.shape, normalized_shape)
    y, _, _ = normalize(input, weight, None, group_shape=group_shape, axes=axes, param_shape=param_shape,
                        eps=eps, center=False, param_group_shape=(1, group_shape[1]),
                        node_name="RMSNormBackward",
                        normalized_shape=normalized_shape)
    return y


class RMSNorm(Module):
    """RMS normalization over the trailing dims `normalized_shape`; a weight, no bias."""

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None, dtype=None):
        super().__init__()
        self.normalized_shape = module_normalized_shape(normalized_shape, "RMSNorm")
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(ones(self.normalized_shape, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)

    def reset_parameters(self):
        if self.elementwise_affine:
            with no_grad():
                self.weight.fill_(1)

    def forward(self, x):
        return rms_norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


SPECS = [
    NormSpec(name="RMSNorm", make=lambda c: RMSNorm(c), input_shape=lambda c: (3, 2, c),
             make_for_conv=lambda c, hw: RMSNorm([c, hw, hw]),
             torch_make=lambda torch, c: torch.nn.RMSNorm(c),
             description="x / rms(x) over the last dim, times a weight; eps=None is the dtype's eps"),
    NormSpec(name="RMSNorm-CHW-no-affine",
             make=lambda c: RMSNorm([c, 2, 2], eps=1e-6, elementwise_affine=False),
             input_shape=lambda c: (2, c, 2, 2),
             torch_make=lambda torch, c: torch.nn.RMSNorm([c, 2, 2], eps=1e-6, elementwise_affine=False),
             description="RMSNorm([C, H, W]) without weight"),
]
