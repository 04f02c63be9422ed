"""Adaptive instance normalization (Huang & Belongie 2017, arXiv 1703.06868): AdaIN and
F.adaptive_instance_norm.

Per sample n and channel c, with statistics over the spatial positions (L of them):

    mu(x)    = mean(x)
    sigma(x) = sqrt(sum((x - mu)^2) / (L - 1) + eps)      (unbiased, as in the reference
                                                           implementation pytorch-AdaIN calc_mean_std;
                                                           unbiased=False divides by L, like
                                                           instance_norm)
    AdaIN(x, s) = sigma(s) * (x - mu(x)) / sigma(x) + mu(s)

x (content) and s (style) share (N, C); their spatial sizes may differ. No parameters, no
running statistics: train and eval are the same.

Backward, with x_hat = (x - mu(x)) / sigma(x), g_hat = dz * sigma(s), D = L - 1 (or L), sums over
the spatial positions of one (n, c):

    dx          = (g_hat - mean(g_hat) - x_hat * sum(g_hat * x_hat) / D_x) / sigma(x)
    dmu(s)      = sum(dz),     dsigma(s) = sum(dz * x_hat)
    ds          = dmu(s) / L_s + dsigma(s) * (s - mu(s)) / (D_s * sigma(s))

Graph: one node (AdaINBackward). It saves x and s (the inputs) and the four per-(n, c)
statistics. Its backward is one fused node too (AdaINBackwardBackward), whose own backward is the
VJP of `composed_backward` (the same formulas in Tensor ops), so any order of derivative works.
"""
import math

from tinygrad_bn import dtypes
from tinygrad_bn.autograd.function import Function
from tinygrad_bn.autograd.grad_mode import enable_grad, is_grad_enabled
from tinygrad_bn.nn.module import Module
from tinygrad_bn.norms._base import torch_size
from tinygrad_bn.norms._meanvar import _fresh
from tinygrad_bn.tensor import Tensor


def _moments(xp, a, unbiased, eps):
    """(mean, sigma) over the trailing axes of `a`, viewed as (N, C, L); kept dims; a's dtype."""
    count = a.shape[2]
    mean = a.mean(axis=2, keepdims=True)
    centred = a - mean
    var = (centred * centred).sum(axis=2, keepdims=True) / (count - 1 if unbiased else count)
    return mean, xp.sqrt(var + eps).astype(a.dtype, copy=False)


class AdaptiveInstanceNorm(Function):
    """z = sigma(s) * (x - mu(x)) / sigma(x) + mu(s); see the module docstring."""

    node_name = "AdaINBackward"

    def forward(self, x, s, eps, unbiased):
        xp = self.xp
        n, c = x.shape[:2]
        xg, sg = x.reshape(n, c, -1), s.reshape(n, c, -1)
        mu_x, sigma_x = _moments(xp, xg, unbiased, eps)
        mu_s, sigma_s = _moments(xp, sg, unbiased, eps)
        z = xg - mu_x
        z *= sigma_s / sigma_x
        z += mu_s
        self.save_for_backward(x=x, s=s, mu_x=mu_x, sigma_x=sigma_x, mu_s=mu_s, sigma_s=sigma_s)
        return z.reshape(x.shape)

    def backward(self, dz):
        x, s = self.saved("x", "s")
        stats = {k: self.saved_array(k) for k in ("mu_x", "sigma_x", "mu_s", "sigma_s")}
        dx, ds = AdaINBackward.apply(dz, x, s, unbiased=self.attrs["unbiased"], eps=self.attrs["eps"],
                                     **stats)
        return (dx if self.needs_input_grad[0] else None, ds if self.needs_input_grad[1] else None)


class AdaINBackward(Function):
    """(dx, ds) of AdaIN as one fused array expression. Inputs dz, x, s; the statistics of the
    forward come as constants. Its backward is the VJP of `composed_backward`."""

    node_name = "AdaINBackwardBackward"

    def forward(self, dz, x, s, unbiased, eps, mu_x, sigma_x, mu_s, sigma_s):
        self.save_for_backward(dz=dz, x=x, s=s)
        n, c = x.shape[:2]
        gz, xg, sg = dz.reshape(n, c, -1), x.reshape(n, c, -1), s.reshape(n, c, -1)
        lx, ls = xg.shape[2], sg.shape[2]
        dof_x, dof_s = (lx - 1, ls - 1) if unbiased else (lx, ls)
        x_hat = (xg - mu_x) / sigma_x
        d_mu_s = gz.sum(axis=2, keepdims=True)
        d_sigma_s = (gz * x_hat).sum(axis=2, keepdims=True)
        g_hat = gz * sigma_s
        # mean(g_hat) = sigma_s * d_mu_s / L and sum(g_hat * x_hat) = sigma_s * d_sigma_s
        dx = g_hat - sigma_s * (d_mu_s / lx + x_hat * (d_sigma_s / dof_x))
        dx /= sigma_x
        ds = (sg - mu_s) * (d_sigma_s / (dof_s * sigma_s))
        ds += d_mu_s / ls
        return dx.reshape(x.shape), ds.reshape(s.shape)

    def backward(self, gdx, gds):
        """VJP of the composed (primitive-op) backward: second derivatives to any order."""
        dz, x, s = self.saved("dz", "x", "s")
        create_graph = is_grad_enabled()
        with enable_grad():
            args = [_fresh(t) for t in (dz, x, s)]
            outs = composed_backward(*args, eps=self.attrs["eps"], unbiased=self.attrs["unbiased"])
            pairs = [(o, g) for o, g in zip(outs, (gdx, gds)) if g is not None and o.requires_grad]
            from tinygrad_bn.autograd import grad
            return grad([o for o, _ in pairs], args, [g for _, g in pairs],
                        create_graph=create_graph, allow_unused=True)


def _composed_moments(a, unbiased, eps):
    count = a.shape[2]
    mean = a.mean(2, keepdim=True)
    centred = a - mean
    var = (centred * centred).sum(2, keepdim=True) * (1.0 / (count - 1 if unbiased else count))
    return mean, centred, (var + eps).sqrt()


def composed_forward(x, s, eps=1e-5, unbiased=True):
    """AdaIN written with primitive Tensor ops: the reference for the fused node's forward."""
    n, c = x.shape[:2]
    _, xc, sigma_x = _composed_moments(x.reshape(n, c, -1), unbiased, eps)
    mu_s, _, sigma_s = _composed_moments(s.reshape(n, c, -1), unbiased, eps)
    return (xc / sigma_x * sigma_s + mu_s).reshape(x.shape)


def composed_backward(dz, x, s, eps=1e-5, unbiased=True):
    """(dx, ds) of AdaIN written with primitive Tensor ops (differentiable to any order); the
    reference the fused AdaINBackward is tested against."""
    n, c = x.shape[:2]
    gz, xg, sg = dz.reshape(n, c, -1), x.reshape(n, c, -1), s.reshape(n, c, -1)
    lx, ls = xg.shape[2], sg.shape[2]
    dof_x, dof_s = (lx - 1, ls - 1) if unbiased else (lx, ls)
    _, xc, sigma_x = _composed_moments(xg, unbiased, eps)
    _, sc, sigma_s = _composed_moments(sg, unbiased, eps)
    x_hat = xc / sigma_x
    g_hat = gz * sigma_s
    dx = (g_hat - g_hat.mean(2, keepdim=True)
          - x_hat * (g_hat * x_hat).sum(2, keepdim=True) * (1.0 / dof_x)) / sigma_x
    d_mu_s = gz.sum(2, keepdim=True)
    d_sigma_s = (gz * x_hat).sum(2, keepdim=True)
    ds = d_mu_s * (1.0 / ls) + d_sigma_s * sc / sigma_s * (1.0 / dof_s)
    return dx.reshape(x.shape), ds.reshape(s.shape)


def adaptive_instance_norm(content, style, eps=1e-5, unbiased=True):
    """AdaIN(content, style) = sigma(style) * (content - mu(content)) / sigma(content) + mu(style),
    statistics per (n, c) over the spatial dims, sigma = sqrt(var + eps) with the unbiased variance
    (pytorch-AdaIN's calc_mean_std) unless unbiased=False. Gradients flow into both inputs."""
    name = "adaptive_instance_norm"
    for what, t in (("content", content), ("style", style)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: {what} must be a Tensor, got {type(t).__name__}")
        if t.ndim < 3:
            raise ValueError(f"{name}: expected {what} of at least 3 dimensions (N, C, *spatial), "
                             f"got shape {list(t.shape)}")
        if not dtypes.is_floating(t.dtype):
            raise TypeError(f"{name}: expected a floating-point {what}, got {t.dtype}")
    if tuple(content.shape[:2]) != tuple(style.shape[:2]):
        raise ValueError(f"{name}: content and style must agree in (N, C), got content shape "
                         f"{list(content.shape)} and style shape {list(style.shape)}")
    if content.dtype != style.dtype:
        raise TypeError(f"{name}: content and style must have the same dtype, got {content.dtype} "
                        f"and {style.dtype}")
    if not eps >= 0:
        raise ValueError(f"{name}: eps must be non-negative, but got {eps}")
    if content.numel() == 0 or style.numel() == 0:
        raise ValueError(f"{name}: got an empty input (content shape {list(content.shape)}, style "
                         f"shape {list(style.shape)})")
    if unbiased:
        for what, t in (("content", content), ("style", style)):
            if math.prod(t.shape[2:]) < 2:
                raise ValueError(f"{name}: the unbiased variance needs more than 1 spatial element, "
                                 f"got {what} size {torch_size(t.shape)} (or pass unbiased=False)")
    return AdaptiveInstanceNorm.apply(content, style, eps=float(eps), unbiased=bool(unbiased))


class AdaIN(Module):
    """Adaptive instance normalization: forward(content, style); no parameters, no buffers.

    AdaIN(x, s) = sigma(s) * (x - mu(x)) / sigma(x) + mu(s); see adaptive_instance_norm."""

    def __init__(self, eps=1e-5, unbiased=True):
        super().__init__()
        if not eps >= 0:
            raise ValueError(f"AdaIN: eps must be non-negative, but got {eps}")
        self.eps = eps
        self.unbiased = bool(unbiased)

    def forward(self, content, style):
        return adaptive_instance_norm(content, style, self.eps, self.unbiased)

    def extra_repr(self):
        return f"eps={self.eps}" + ("" if self.unbiased else ", unbiased=False")


# AdaIN takes two inputs (content, style), so the single-input test matrix does not fit; it is
# tested in full (gradcheck, gradgradcheck, backend parity) in tests/norms/test_adain.py.
SPECS = []
