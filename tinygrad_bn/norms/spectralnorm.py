"""Spectral normalization (Miyato et al. 2018, arXiv 1802.05957): the graph node, the
parametrization module, the old hook-based API and the registry entries.

The weight is divided by an estimate of its largest singular value:

    W_sn = W / sigma,   sigma = u^T W_mat v

W_mat is W with axis `dim` moved to the front and the rest flattened: (h, w). u (h) and v (w) are
buffers kept from call to call and refined by power iteration, in place and outside the graph:

    u = normalize(W_mat v),   v = normalize(W_mat^T u),   normalize(a) = a / max(||a||, eps)

15 iterations when the parametrization is registered (from u, v ~ N(0, 1), normalized), then
n_power_iterations on every access in training mode and none in eval mode. A 1-D weight is just
W / max(||W||, eps). For a convolution this is the norm of the reshaped matrix, not the operator
norm of the convolution (pytorch#99149).

Backward, with u and v constants (PyTorch's choice: the gradient does not flow into the power
iteration) and C = u v^T laid out like W:

    sigma = <C, W>                      (the same number as u^T W_mat v)
    dW = G / sigma - (<G, W> / sigma^2) * C

Derivation: d(W/sigma) = dW/sigma - W dsigma/sigma^2 and dsigma = <C, dW>, so the vector-Jacobian
product with G is G/sigma - <G, W>/sigma^2 * C.

The node (SpectralNormBackward) saves W (its input: a reference) and copies of u and v (constants,
h + w numbers); backward rebuilds C from them and is written with Tensor ops of W and G, so double
backward works. u and v are cloned before the node sees them, so a later training-mode access
(which updates the buffers in place) never invalidates a pending backward.
"""
from tinygrad_bn import backend, creation
from tinygrad_bn.autograd.function import Function
from tinygrad_bn.nn.module import Module
from tinygrad_bn.nn.parameter import Parameter
from tinygrad_bn.norms._base import NormSpec, remove_reparametrization_hook, tensor_attribute
from tinygrad_bn.tensor import Tensor


def _as_matrix(xp, w, dim):
    """W_mat: axis `dim` first, the others flattened in order: (W.shape[dim], rest)."""
    moved = w if dim == 0 else xp.moveaxis(w, dim, 0)
    return moved.reshape(w.shape[dim], -1)


def _outer_like(xp, u, v, shape, dim):
    """C = u v^T, laid out like the weight (the inverse of _as_matrix)."""
    rest = tuple(n for i, n in enumerate(shape) if i != dim)
    c = xp.outer(u, v).reshape((shape[dim],) + rest)
    return c if dim == 0 else xp.moveaxis(c, 0, dim)


def _normalize_array(xp, a, eps):
    """a / max(||a||, eps) on a raw vector (F.normalize(a, dim=0, eps=eps))."""
    return a / xp.maximum(xp.sqrt((a * a).sum()), eps)


class SpectralNorm(Function):
    """W / sigma with sigma = u^T W_mat v, u and v constants (see the module docstring)."""

    node_name = "SpectralNormBackward"

    def forward(self, weight, u, v, *, dim):
        sigma = u @ (_as_matrix(self.xp, weight, dim) @ v)
        self.save_for_backward(weight=weight, u=u, v=v)
        return weight / sigma

    def backward(self, grad):
        weight = self.saved("weight")
        c = Tensor._make(_outer_like(self.xp, self.saved_array("u"), self.saved_array("v"),
                                     weight.shape, self.attrs["dim"]))
        sigma = (weight * c).sum()
        return grad / sigma - ((grad * weight).sum() / (sigma * sigma)) * c, None, None


def spectral_normalize(weight, u, v, dim=0):
    """W / (u^T W_mat v) as one graph node; u and v are copied (they get no gradient)."""
    if weight.ndim < 2:
        raise ValueError(f"spectral_normalize: expected a weight with at least 2 dims, got shape "
                         f"{list(weight.shape)}")
    if not -weight.ndim <= dim < weight.ndim:
        raise IndexError(f"spectral_normalize: dim={dim} is out of range for a weight of shape "
                         f"{list(weight.shape)}")
    dim %= weight.ndim
    rows, cols = weight.shape[dim], weight.numel() // max(weight.shape[dim], 1)
    if u.shape != (rows,) or v.shape != (cols,):
        raise ValueError(f"spectral_normalize: for a weight of shape {list(weight.shape)} and dim={dim}, "
                         f"u must have shape [{rows}] and v [{cols}]; got {list(u.shape)} and "
                         f"{list(v.shape)}")
    u = Tensor._make(u.data.astype(weight.dtype, copy=True))
    v = Tensor._make(v.data.astype(weight.dtype, copy=True))
    return SpectralNorm.apply(weight, u, v, dim=dim)


def _check_args(ndim, dim, n_power_iterations):
    if dim >= ndim or dim < -ndim:
        raise IndexError(f"Dimension out of range (expected to be in range of [-{ndim}, {ndim - 1}] "
                         f"but got {dim})")
    if n_power_iterations <= 0:
        raise ValueError(f"Expected n_power_iterations to be positive, but got "
                         f"n_power_iterations={n_power_iterations}")


class _SpectralNorm(Module):
    """The parametrization: forward(W) = W / sigma(W), power iteration on buffers _u and _v."""

    def __init__(self, weight, n_power_iterations=1, dim=0, eps=1e-12):
        super().__init__()
        ndim = weight.ndim
        _check_args(ndim, dim, n_power_iterations)
        self.dim = dim if dim >= 0 else dim + ndim
        self.eps = eps
        self.n_power_iterations = n_power_iterations
        if ndim > 1:
            xp = weight.xp
            matrix = _as_matrix(xp, weight.data, self.dim)
            h, w = matrix.shape
            # u then v from the weight's device generator (seeded by manual_seed), as PyTorch does
            u = creation.randn(h, dtype=weight.dtype, device=weight.device)
            v = creation.randn(w, dtype=weight.dtype, device=weight.device)
            self.register_buffer("_u", Tensor._make(_normalize_array(xp, u.data, eps)))
            self.register_buffer("_v", Tensor._make(_normalize_array(xp, v.data, eps)))
            self._power_method(matrix, 15)

    def _power_method(self, matrix, n_power_iterations):
        """n steps of u = normalize(W v), v = normalize(W^T u), in place on the buffers' arrays."""
        xp = backend.xp_of(matrix)
        u, v = self._u.data, self._v.data
        for _ in range(n_power_iterations):
            u[...] = _normalize_array(xp, matrix @ v, self.eps)
            v[...] = _normalize_array(xp, matrix.T @ u, self.eps)
        self._u._version[0] += 1
        self._v._version[0] += 1

    def forward(self, weight):
        if weight.ndim == 1:
            return weight / (weight * weight).sum().sqrt().clamp(min=self.eps)
        if self.training:
            self._power_method(_as_matrix(weight.xp, weight.data, self.dim), self.n_power_iterations)
        return spectral_normalize(weight, self._u, self._v, self.dim)

    def right_inverse(self, value):
        return value


# ---- the old API: tinygrad_bn.nn.utils.spectral_norm -----------------------------------------
class SpectralNormHook:
    """Forward pre-hook of the old API: module.<name> = <name>_orig / sigma before every forward,
    with buffers <name>_u and <name>_v. Unlike the parametrization it iterates v first, then u,
    has no warm start, and iterates only in the training-mode pre-hook."""

    def __init__(self, name="weight", n_power_iterations=1, dim=0, eps=1e-12):
        if n_power_iterations <= 0:
            raise ValueError(f"Expected n_power_iterations to be positive, but got "
                             f"n_power_iterations={n_power_iterations}")
        self.name, self.dim, self.n_power_iterations, self.eps = name, dim, n_power_iterations, eps

    def compute_weight(self, module, do_power_iteration):
        weight = getattr(module, self.name + "_orig")
        u, v = getattr(module, self.name + "_u"), getattr(module, self.name + "_v")
        xp = weight.xp
        matrix = _as_matrix(xp, weight.data, self.dim)
        if do_power_iteration:
            for _ in range(self.n_power_iterations):
                v.data[...] = _normalize_array(xp, matrix.T @ u.data, self.eps)
                u.data[...] = _normalize_array(xp, matrix @ v.data, self.eps)
            u._version[0] += 1
            v._version[0] += 1
        return SpectralNorm.apply(weight, Tensor._make(u.data.copy()), Tensor._make(v.data.copy()),
                                  dim=self.dim)

    @staticmethod
    def apply(module, name, n_power_iterations, dim, eps):
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, SpectralNormHook) and hook.name == name:
                raise RuntimeError(f"Cannot register two spectral_norm hooks on the same parameter {name}")
        fn = SpectralNormHook(name, n_power_iterations, dim, eps)
        weight = module._parameters.get(name)
        if weight is None:
            raise ValueError(f"`SpectralNorm` cannot be applied as parameter `{name}` is None")
        xp = weight.xp
        h, w = _as_matrix(xp, weight.data, dim).shape
        u = creation.randn(h, dtype=weight.dtype, device=weight.device)
        v = creation.randn(w, dtype=weight.dtype, device=weight.device)
        delattr(module, name)
        module.register_parameter(name + "_orig", weight)
        setattr(module, name, weight.detach())
        module.register_buffer(name + "_u", Tensor._make(_normalize_array(xp, u.data, eps)))
        module.register_buffer(name + "_v", Tensor._make(_normalize_array(xp, v.data, eps)))
        module.register_forward_pre_hook(fn)
        return fn

    def remove(self, module):
        weight = self.compute_weight(module, do_power_iteration=False).detach()
        delattr(module, self.name)
        delattr(module, self.name + "_u")
        delattr(module, self.name + "_v")
        delattr(module, self.name + "_orig")
        module.register_parameter(self.name, Parameter(weight))

    def __call__(self, module, inputs):
        setattr(module, self.name, self.compute_weight(module, do_power_iteration=module.training))


def _is_conv_transpose(module):
    """ConvTranspose1d/2d/3d (by name: tinygrad_bn.nn may not have them yet) or any module that
    declares `transposed = True` (its weight is laid out (in, out/groups, *kernel))."""
    return (type(module).__name__ in ("ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d")
            or getattr(module, "transposed", False) is True)


def default_dim(module):
    """spectral_norm's dim=None: 1 for transposed convolutions (output channels are axis 1 of
    their weight), 0 for everything else."""
    return 1 if _is_conv_transpose(module) else 0


def spectral_norm_parametrization(module, name="weight", n_power_iterations=1, eps=1e-12, dim=None):
    """Spectral normalization as a parametrization, tinygrad_bn.nn.utils.parametrizations.spectral_norm
    (PyTorch's name): module.<name> = W / sigma(W), sigma estimated by power iteration.

    u, v (buffers parametrizations.<name>.0._u / _v) start random (the weight device's seeded
    generator), normalized, then 15 iterations; in training mode every access runs
    n_power_iterations more (in place, no gradient); eval mode never iterates. dim=None means 0,
    or 1 for transposed convolutions. A 1-D weight becomes W / max(||W||, eps). Returns the module."""
    weight = tensor_attribute(module, name)
    if dim is None:
        dim = default_dim(module)
    from tinygrad_bn.nn.utils.parametrize import register_parametrization  # not at the top: nn/utils/__init__ imports this file
    register_parametrization(module, name, _SpectralNorm(weight, n_power_iterations, dim, eps))
    return module


def spectral_norm(module, name="weight", n_power_iterations=1, eps=1e-12, dim=None):
    """Old API: parameters <name>_orig, buffers <name>_u and <name>_v, the weight recomputed by a
    forward pre-hook. Prefer tinygrad_bn.nn.utils.parametrizations.spectral_norm."""
    SpectralNormHook.apply(module, name, n_power_iterations, default_dim(module) if dim is None else dim,
                           eps)
    return module


def remove_spectral_norm(module, name="weight"):
    """Undo the old spectral_norm: <name> becomes a Parameter holding W/sigma (no iteration)."""
    return remove_reparametrization_hook(module, name, SpectralNormHook, "spectral_norm")


# ---- registry entries (tests/norms/test_matrix.py runs each) --------------------------------
# The matrix gradchecks in training mode too, where every call re-runs the power iteration on the
# perturbed weight, so u and v are functions of W that backward (by design, as in PyTorch) treats
# as constants. That is exact only when the iteration has converged: for an (h=1) weight one
# iteration is exact (u = +-1, v = W/||W||), for a square one we run enough iterations. The
# gradient of the gradient still sees dC/dW, so double backward is checked in eval mode, in
# tests/norms/test_spectralnorm.py.
def _linear(c, **kwargs):
    from tinygrad_bn.nn.layers import Linear
    return spectral_norm_parametrization(Linear(c, c), **kwargs)


def _conv(c, **kwargs):
    from tinygrad_bn.nn.layers import Conv2d
    return spectral_norm_parametrization(Conv2d(c, 1, 3, padding=1), **kwargs)


def _torch(torch, layer, **kwargs):
    return torch.nn.utils.parametrizations.spectral_norm(layer, **kwargs)


_CONVERGED = 60  # power iterations per access for the square weight: converged to ~1e-12

SPECS = [
    NormSpec(name="SpectralNorm-Linear", make=lambda c: _linear(c, n_power_iterations=_CONVERGED),
             input_shape=lambda c: (4, c),
             torch_make=lambda torch, c: _torch(torch, torch.nn.Linear(c, c),
                                                n_power_iterations=_CONVERGED),
             test_options={"channels": 3, "double_backward": False},
             description="spectral_norm(Linear): W / sigma_max(W), power iteration in training"),
    NormSpec(name="SpectralNorm-Conv2d-1out", make=lambda c: _conv(c),
             input_shape=lambda c: (2, c, 3, 3),
             torch_make=lambda torch, c: _torch(torch, torch.nn.Conv2d(c, 1, 3, padding=1)),
             test_options={"channels": 2, "double_backward": False},
             description="spectral_norm(Conv2d) with one output channel (one power iteration is exact)"),
]
