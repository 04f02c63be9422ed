"""Group normalization (Wu & He 2018): GroupNorm and F.group_norm.

The C channels are split into G groups of C/G consecutive channels. Per (sample n, group g), over
the M = (C/G) * prod(spatial) values of that group:

    mu     = mean(x)                       var = mean((x - mu)^2)          (biased)
    x_hat  = (x - mu) / sqrt(var + eps)
    y      = x_hat * w[c] + b[c]           (w, b per channel, shape (C,))

G = 1 is LayerNorm over (C, *spatial) with a per-channel affine; G = C is InstanceNorm with an
affine. Training and eval are identical; no running statistics, no batch dependence.

Backward, with g_hat = dy * w[c] and means over the M values of each (n, g):

    dx = invstd * (g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat))
    dw[c] = sum over (n, spatial) of dy * x_hat,      db[c] = sum over (n, spatial) of dy

The graph node is the shared mean/variance kernel (norms/_meanvar.py) on the view
(N, G, C/G * spatial) with statistics over axis 2 and the parameters broadcast as (1, C, 1, ...),
named GroupNormBackward. It saves x (the one full-size array), the per-(n, g) mean and invstd,
and w.
"""
import math
import numbers

from tinygrad_bn import dtypes
from tinygrad_bn.nn.module import Module
from tinygrad_bn.norms._base import NormSpec, check_channel_count, register_affine, reset_affine
from tinygrad_bn.norms._meanvar import normalize
from tinygrad_bn.norms.layernorm import shape_list


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """F.group_norm: normalize each (sample, group of C/num_groups channels), then the
    per-channel affine when weight/bias are given."""
    if input.ndim < 2:
        raise RuntimeError(f"Expected at least 2 dimensions for input tensor but received {input.ndim}")
    if not isinstance(num_groups, numbers.Integral) or isinstance(num_groups, bool):
        raise TypeError(f"group_norm: num_groups must be an int, got {num_groups!r}")
    if num_groups <= 0:
        raise RuntimeError(f"Expected num groups to be greater than 0, got {num_groups}")
    shape = input.shape
    n, c, spatial = shape[0], shape[1], shape[2:]
    # PyTorch's check, on the sizes it prints: [N*C//G, G, *spatial] must hold more than one value
    sizes = [n * c // num_groups, num_groups] + list(spatial)
    if sizes[0] * math.prod(spatial) == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {sizes}")
    if c % num_groups:
        raise RuntimeError(f"Expected number of channels in input to be divisible by num_groups, but got "
                           f"input of shape {shape_list(shape)} and num_groups={num_groups}")
    for name, param in (("weight", weight), ("bias", bias)):
        if param is not None and (param.ndim != 1 or param.numel() != c):
            raise RuntimeError(f"Expected {name} to be a vector of size equal to the number of channels "
                               f"in input, but got {name} of shape {shape_list(param.shape)} and input "
                               f"of shape {shape_list(shape)}")
    if not dtypes.is_floating(input.dtype):
        raise TypeError(f"group_norm: expected a floating-point input, got {input.dtype}")
    if input.numel() == 0:
        return input * 1.0
    # the view (N, G, C/G, HW): statistics over its last two axes, w and b along G and C/G
    # (with G == C each group is one channel, and the kernel's per-group fast path applies)
    group_shape = (n, num_groups, c // num_groups, math.prod(spatial))
    param_shape = (1, c) + (1,) * len(spatial)
    param_group_shape = (1, num_groups, c // num_groups, 1)
    y, _, _ = normalize(input, weight, bias,
                        group_shape=group_shape, axes=(2, 3), param_shape=param_shape, eps=eps,
                        node_name="GroupNormBackward", param_group_shape=param_group_shape,
                        num_groups=num_groups)
    return y


class GroupNorm(Module):
    """Group normalization of (N, C, *) inputs: statistics per sample over groups of C/G channels,
    then a per-channel affine."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None, *,
                 bias=True):
        super().__init__()
        for name, value in (("num_groups", num_groups), ("num_channels", num_channels)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
                raise ValueError(f"GroupNorm: {name} must be a non-negative int, got {value!r}")
        if num_groups == 0:
            raise ValueError(f"GroupNorm: num_groups must be positive, got 0 (num_channels={num_channels})")
        if num_channels % num_groups != 0:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups = int(num_groups)
        self.num_channels = int(num_channels)
        self.eps = eps
        self.affine = affine
        register_affine(self, self.num_channels, affine, bias, device=device, dtype=dtype)

    def reset_parameters(self):
        reset_affine(self)

    def forward(self, input):
        if self.affine:  # without weight and bias, any channel count divisible by the groups runs
            check_channel_count(f"GroupNorm({self.num_groups}, {self.num_channels})", self.num_channels, input)
        return group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")


def groups_for_conv(channels, preferred=32):
    """The usual GroupNorm grouping for conv maps: 32 groups (Wu & He's default), or the largest
    number of groups up to that which divides the channel count."""
    return math.gcd(preferred, channels)


SPECS = [
    NormSpec(name="GroupNorm", make=lambda c: GroupNorm(2, c), input_shape=lambda c: (3, c, 2),
             make_for_conv=lambda c, hw: GroupNorm(groups_for_conv(c), c),
             torch_make=lambda torch, c: torch.nn.GroupNorm(2, c),
             description="statistics per sample over groups of channels; per-channel affine"),
    NormSpec(name="GroupNorm-1-group-no-bias", make=lambda c: GroupNorm(1, c, bias=False),
             input_shape=lambda c: (2, c, 2, 2),
             torch_make=lambda torch, c: torch.nn.GroupNorm(1, c, bias=False),
             description="G = 1: LayerNorm over (C, H, W) with a per-channel weight"),
    NormSpec(name="GroupNorm-C-groups", make=lambda c: GroupNorm(c, c), input_shape=lambda c: (2, c, 3),
             torch_make=lambda torch, c: torch.nn.GroupNorm(c, c),
             description="G = C: InstanceNorm with a per-channel affine"),
    NormSpec(name="GroupNorm-2D-no-affine", make=lambda c: GroupNorm(c // 2, c, eps=1e-3, affine=False),
             input_shape=lambda c: (3, c),
             torch_make=lambda torch, c: torch.nn.GroupNorm(c // 2, c, eps=1e-3, affine=False),
             description="(N, C) input, groups of two features, no parameters"),
]
