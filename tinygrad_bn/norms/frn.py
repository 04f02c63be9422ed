"""Filter Response Normalization + Thresholded Linear Unit (Singh & Krishnan 2020, arXiv 1911.09737):
FilterResponseNorm2d, TLU, F.filter_response_norm and F.tlu.

Per sample n and channel c, over the H*W positions (no batch statistics, no running buffers):

    nu2   = mean_{H,W}(x^2)
    r     = 1 / sqrt(nu2 + eps)          eps = |eps|             (fixed, default 1e-6)
                                         eps = eps + |eps_l|     (learned_epsilon=True, eps_l init 1e-4)
    x_hat = x * r
    y     = gamma * x_hat + beta
    z     = max(y, tau)                  (TLU; gamma, beta, tau of shape (1, C, 1, 1), init 1, 0, 0)

Backward (RMS-type norm; g_hat = dy * gamma, means over H,W):

    dx     = r * (g_hat - x_hat * mean(g_hat * x_hat))
    dgamma = sum(dy * x_hat),   dbeta = sum(dy)                   (over N, H, W)
    deps_l = -1/2 * sign(eps_l) * sum(g_hat * x * r^3)            (over everything: eps_l is a scalar)
    TLU:   dy = dz * 1[y > tau],   dtau = sum(dz * 1[y < tau]);   at y == tau each gets half (torch.max)

Graph: two nodes. FRN itself is one node: with a fixed eps it is the shared RMS kernel
(norms/_meanvar.py, center=False; it saves x and the per-(n, c) r), with a learned eps it is
`FilterResponseNormLearnedEps` below (eps_l is a differentiable input; its backward is written in
Tensor ops, so double backward comes for free). TLU is a second node that saves a one-byte code
per element (2: y > tau, 1: tie, 0: y < tau) rather than y. Keeping TLU separate lets it be used
on its own (the paper pairs it with FRN, but also studies it after other norms) and lets
FilterResponseNorm2d(tlu=False) be followed by any activation.
"""
import numpy as np

from tinygrad_bn import dtypes
from tinygrad_bn.autograd.function import Function
from tinygrad_bn.creation import full, ones, zeros
from tinygrad_bn.nn.module import Module
from tinygrad_bn.nn.parameter import Parameter
from tinygrad_bn.norms._base import NormSpec
from tinygrad_bn.norms._meanvar import Normalize
from tinygrad_bn.ops._helpers import sum_to_shape
from tinygrad_bn.tensor import Tensor

LEARNED_EPS_INIT = 1e-4


# ---- TLU ----------------------------------------------------------------------------------------
class ThresholdedLinearUnit(Function):
    """z = max(y, tau), tau broadcast over y.   dy = dz * s,  dtau = sum(dz * (1 - s)),
    with s = 1 where y > tau, 1/2 where y == tau, 0 where y < tau (torch.max's tie rule)."""

    node_name = "TLUBackward"

    def forward(self, y, tau):
        xp = self.xp
        # 2 / 1 / 0 for y above / at / below tau: a byte per element instead of a copy of y
        code = (y > tau).astype(xp.uint8)
        code += y >= tau
        self.save_for_backward(code=code)
        return xp.maximum(y, tau)

    def backward(self, dz):
        share = Tensor._make(self.saved_array("code").astype(dz.dtype) * 0.5)
        tau_shape = self.input_meta[1][0]
        dy = dz * share if self.needs_input_grad[0] else None
        dtau = sum_to_shape(dz * (1 - share), tau_shape) if self.needs_input_grad[1] else None
        return dy, dtau


def tlu(input, tau):
    """Thresholded linear unit: max(input, tau), tau broadcast against input (e.g. (1, C, 1, 1))."""
    for name, t in (("input", input), ("tau", tau)):
        if not isinstance(t, Tensor):
            raise TypeError(f"tlu: {name} must be a Tensor, got {type(t).__name__}")
    try:
        shape = np.broadcast_shapes(tuple(input.shape), tuple(tau.shape))
    except ValueError:
        shape = None
    if shape != tuple(input.shape):
        raise ValueError(f"tlu: tau of shape {list(tau.shape)} must broadcast to the input's shape "
                         f"{list(input.shape)} (e.g. (1, C, 1, 1) for (N, C, H, W))")
    if input.dtype != tau.dtype:
        raise TypeError(f"tlu: input and tau must have the same dtype, got {input.dtype} and {tau.dtype}")
    return ThresholdedLinearUnit.apply(input, tau)


# ---- FRN: learned epsilon (its own node) and fixed epsilon (the shared kernel) ---------------
class FilterResponseNormLearnedEps(Function):
    """y = x * rsqrt(mean_{H,W}(x^2) + eps + |eps_l|) * gamma + beta; see the module docstring.

    Inputs: x, eps_l, then gamma and/or beta when present. Saves x, eps_l, gamma (inputs, so that
    backward gets them graph-connected) and nothing else: backward recomputes r from them in
    Tensor ops, which is what makes the second derivative with respect to x and eps_l exact."""

    node_name = "FilterResponseNormBackward"

    def forward(self, x, eps_l, *params, eps, has_weight, has_bias):
        xp = self.xp
        weight = params[0] if has_weight else None
        bias = params[-1] if has_bias else None
        nu2 = (x * x).mean(axis=(2, 3), keepdims=True)
        r = (1.0 / xp.sqrt(nu2 + (eps + xp.abs(eps_l)).reshape(1, 1, 1, 1))).astype(x.dtype, copy=False)
        y = x * r
        if weight is not None:
            y *= weight
        if bias is not None:
            y += bias
        self.save_for_backward(x=x, eps_l=eps_l, **({"weight": weight} if weight is not None else {}))
        return y

    def backward(self, dy):
        x, eps_l = self.saved("x", "eps_l")
        has_weight, has_bias = self.attrs["has_weight"], self.attrs["has_bias"]
        weight = self.saved("weight") if has_weight else None
        eps = (eps_l.abs() + self.attrs["eps"]).reshape(1, 1, 1, 1)
        r = ((x * x).mean((2, 3), keepdim=True) + eps).rsqrt()
        x_hat = x * r
        g_hat = dy * weight if weight is not None else dy
        need = self.needs_input_grad
        dx = r * (g_hat - x_hat * (g_hat * x_hat).mean((2, 3), keepdim=True)) if need[0] else None
        deps_l = None
        if need[1]:
            # d r / d eps = -r^3 / 2, and d|eps_l| / d eps_l = sign(eps_l)
            deps_l = ((g_hat * x_hat * r * r).sum() * -0.5 * eps_l.sign()).reshape(eps_l.shape)
        out = [dx, deps_l]
        if has_weight:
            out.append(sum_to_shape(dy * x_hat, weight.shape) if need[2] else None)
        if has_bias:
            out.append(sum_to_shape(dy, self.input_meta[-1][0]) if need[-1] else None)
        return tuple(out)


# ---- functional ---------------------------------------------------------------------------------
def _check_frn_input(input, weight, bias, eps_l, opname):
    if not isinstance(input, Tensor):
        raise TypeError(f"{opname}: input must be a Tensor, got {type(input).__name__}")
    if input.ndim != 4:
        raise ValueError(f"{opname}: expected 4D input (N, C, H, W) (got {input.ndim}D input of shape "
                         f"{list(input.shape)}); for (N, C) activations use x.reshape(N, C, 1, 1) "
                         f"with learned_epsilon=True")
    if not dtypes.is_floating(input.dtype):
        raise TypeError(f"{opname}: expected a floating-point input, got {input.dtype}")
    channels = input.shape[1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.numel() != channels:
            raise RuntimeError(f"{opname}: {name} should contain {channels} elements (the input's "
                               f"channels, shape {list(input.shape)}) not {t.numel()}")
    if eps_l is not None and eps_l.numel() != 1:
        raise ValueError(f"{opname}: learned_eps must hold one value, got shape {list(eps_l.shape)}")


def filter_response_norm(input, weight=None, bias=None, eps=1e-6, learned_eps=None):
    """FRN without the TLU: x * rsqrt(mean_{H,W}(x^2) + eps) * weight + bias, per (n, c).

    eps is used as |eps|. With `learned_eps` (a one-element Tensor eps_l) the epsilon is
    |eps| + |eps_l| and eps_l gets a gradient. weight and bias: C elements each (any shape that
    holds them, e.g. (1, C, 1, 1)), or None."""
    _check_frn_input(input, weight, bias, learned_eps, "filter_response_norm")
    n, c, h, w = input.shape
    eps = abs(float(eps))
    if learned_eps is not None:
        params = [p.reshape(1, c, 1, 1) for p in (weight, bias) if p is not None]  # no-op if already
        return FilterResponseNormLearnedEps.apply(input, learned_eps, *params, eps=eps,
                                                  has_weight=weight is not None,
                                                  has_bias=bias is not None)
    params = [p for p in (weight, bias) if p is not None]
    y, _, _ = Normalize.apply(input, *params, group_shape=(n, c, h * w), axes=(2,),
                               param_shape=(1, c, 1, 1), eps=eps, center=False,
                               has_weight=weight is not None, has_bias=bias is not None,
                               mean=None, invstd=None, node_name="FilterResponseNormBackward")
    return y


# ---- modules ------------------------------------------------------------------------------------
class TLU(Module):
    """Thresholded linear unit max(x, tau) with a learned per-channel tau of shape (1, C, 1, 1), init 0."""

    def __init__(self, num_features, device=None, dtype=None):
        super().__init__()
        if not isinstance(num_features, (int, np.integer)) or num_features <= 0:
            raise ValueError(f"TLU: num_features must be a positive int, got {num_features!r}")
        self.num_features = int(num_features)
        self.tau = Parameter(zeros(1, self.num_features, 1, 1, device=device, dtype=dtype))

    def reset_parameters(self):
        self.tau.data[...] = 0

    def forward(self, input):
        if input.ndim < 2 or input.shape[1] != self.num_features:
            raise ValueError(f"TLU: expected input's size at dim=1 to match num_features "
                             f"({self.num_features}), but got input of shape {list(input.shape)}")
        tau = self.tau if input.ndim == 4 else self.tau.reshape((1, self.num_features) + (1,) * (input.ndim - 2))
        return tlu(input, tau)

    def extra_repr(self):
        return f"{self.num_features}"


class FilterResponseNorm2d(Module):
    """Filter response normalization followed by a TLU, for (N, C, H, W) inputs.

    z = max(x * rsqrt(mean_{H,W}(x^2) + eps) * weight + bias, tau); see the module docstring.

    Parameters (state_dict order): weight, bias, tau - each (1, C, 1, 1), init 1, 0, 0 - and, with
    learned_epsilon=True, eps_l of shape (1,), init 1e-4 (epsilon = eps + |eps_l|).
    tlu=False leaves out tau and the TLU. No buffers; train and eval are identical."""

    def __init__(self, num_features, eps=1e-6, learned_epsilon=False, *, tlu=True, device=None, dtype=None):
        super().__init__()
        if not isinstance(num_features, (int, np.integer)) or num_features <= 0:
            raise ValueError(f"FilterResponseNorm2d: num_features must be a positive int, got {num_features!r}")
        if not eps >= 0:
            raise ValueError(f"FilterResponseNorm2d: eps must be non-negative, but got {eps}")
        self.num_features = int(num_features)
        self.eps = eps
        self.learned_epsilon = bool(learned_epsilon)
        self.tlu = bool(tlu)
        factory = {"device": device, "dtype": dtype}
        shape = (1, self.num_features, 1, 1)
        self.weight = Parameter(ones(*shape, **factory))
        self.bias = Parameter(zeros(*shape, **factory))
        if self.tlu:
            self.tau = Parameter(zeros(*shape, **factory))
        else:
            self.register_parameter("tau", None)
        if self.learned_epsilon:
            self.eps_l = Parameter(full((1,), LEARNED_EPS_INIT, **factory))
        else:
            self.register_parameter("eps_l", None)

    def reset_parameters(self):
        self.weight.data[...] = 1
        self.bias.data[...] = 0
        if self.tau is not None:
            self.tau.data[...] = 0
        if self.eps_l is not None:
            self.eps_l.data[...] = LEARNED_EPS_INIT

    def forward(self, input):
        if isinstance(input, Tensor) and input.ndim != 4:
            raise ValueError(f"FilterResponseNorm2d: expected 4D input (got {input.ndim}D input)")
        if isinstance(input, Tensor) and input.shape[1] != self.num_features:
            raise ValueError(f"FilterResponseNorm2d: expected input's size at dim=1 to match "
                             f"num_features ({self.num_features}), but got: {input.shape[1]}.")
        y = filter_response_norm(input, self.weight, self.bias, self.eps, self.eps_l)
        return tlu(y, self.tau) if self.tau is not None else y

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, learned_epsilon={self.learned_epsilon}"
                + ("" if self.tlu else ", tlu=False"))


def reference(layer, x, params, buffers, training):
    """The module docstring's equations (Singh & Krishnan 2020, eq. 1-3) in plain NumPy; no
    buffers, train and eval alike."""
    eps = abs(layer.eps) + (np.abs(params["eps_l"]) if params.get("eps_l") is not None else 0.0)
    nu2 = (x * x).mean(axis=(2, 3), keepdims=True)
    y = params["weight"] * x / np.sqrt(nu2 + eps) + params["bias"]
    return (np.maximum(y, params["tau"]) if params.get("tau") is not None else y), dict(buffers)


SPECS = [
    NormSpec(name="FilterResponseNorm2d", make=lambda c: FilterResponseNorm2d(c),
             input_shape=lambda c: (2, c, 2, 2),
             make_for_conv=lambda c, hw: FilterResponseNorm2d(c),
             batch_independent_eval=True, reference=reference,
             description="per-sample, per-channel mean square (no centring) + TLU; no batch statistics"),
    NormSpec(name="FilterResponseNorm2d-learned-eps",
             make=lambda c: FilterResponseNorm2d(c, learned_epsilon=True),
             input_shape=lambda c: (2, c, 1, 2),
             make_for_conv=lambda c, hw: FilterResponseNorm2d(c, learned_epsilon=True),
             batch_independent_eval=True, reference=reference,
             description="FRN with epsilon = 1e-6 + |eps_l| learned (for 1x1 / small activations)"),
]
