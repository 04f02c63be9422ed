"""Weight normalization (Salimans & Kingma 2016, arXiv 1602.07868): the graph node, the
parametrization module, the old hook-based API and the registry entries.

A weight is written as a magnitude g times a direction v:

    w = g * v / ||v||        ||v|| over every axis except `dim` (kept as size-1 axes), so g has
                             shape (out, 1) for a Linear and (out, 1, 1, 1) for a Conv2d;
                             dim=None or dim=-1: one norm over the whole tensor, g of shape []

Backward, per slice (fixed index along `dim`), with s = <G, v> / ||v||:

    dg = s
    dv = (g / ||v||) * (G - s * v / ||v||)

Derivation: w = g v/n with n = ||v||, dn/dv = v/n. So dw/dg = v/n gives dg = <G, v>/n = s, and
dw/dv = (g/n) I - (g v/n^2)(v/n)^T gives dv = (g/n) G - (g/n) (<G, v>/n) v/n. The gradient of v is
G with its component along v removed (then scaled): weight norm never changes ||v|| to first order.

The node (WeightNormBackward) saves g and v only (its inputs: references, no copies); backward
recomputes ||v|| from v with Tensor ops, so that it is differentiable (double backward). There is
no eps, as in PyTorch: v = 0 gives NaN.

Where it is used: `weight_norm_parametrization(module)` below (PyTorch's name for it is
`tinygrad_bn.nn.utils.parametrizations.weight_norm`) registers the
_WeightNorm module below as a parametrization (parameters `parametrizations.weight.original0` = g,
`original1` = v); the old `tinygrad_bn.nn.utils.weight_norm` (parameters weight_g, weight_v,
recomputed by a forward pre-hook) uses the same node.
"""
import warnings

from tinygrad_bn.autograd.function import Function
from tinygrad_bn.autograd.grad_mode import no_grad
from tinygrad_bn.nn.module import Module
from tinygrad_bn.nn.parameter import Parameter
from tinygrad_bn.norms._base import NormSpec, remove_reparametrization_hook, tensor_attribute
from tinygrad_bn.tensor import Tensor


def _norm_axes(ndim, dim):
    """The axes ||v|| runs over: every axis but `dim`; None means the whole tensor (dim None or -1,
    as in PyTorch's norm_except_dim, where -1 means "no dim", not "the last axis")."""
    if dim is None or dim == -1:
        return None
    if not -ndim <= dim < ndim:
        raise IndexError(f"Dimension out of range (expected to be in range of [-{ndim}, {ndim - 1}], "
                         f"but got {dim})")
    dim %= ndim
    return tuple(i for i in range(ndim) if i != dim)


def _slice_sum_array(a, axes):
    """Raw-array sum per slice: whole tensor (0-d) when axes is None, else keepdims."""
    return a.sum() if axes is None else a.sum(axis=axes, keepdims=True)


def _slice_sum(t, axes):
    """The same on Tensors (differentiable)."""
    if axes is None:
        return t.sum()
    return t.sum(axes, keepdim=True) if axes else t


class WeightNorm(Function):
    """w = v * (g / ||v||), the norm per slice along `dim` (see the module docstring)."""

    node_name = "WeightNormBackward"

    def forward(self, v, g, *, dim):
        axes = _norm_axes(v.ndim, dim)
        norm = self.xp.sqrt(_slice_sum_array(v * v, axes))
        self.save_for_backward(v=v, g=g)
        return v * (g / norm)

    def backward(self, grad):
        v, g = self.saved("v", "g")
        axes = _norm_axes(v.ndim, self.attrs["dim"])
        norm = _slice_sum(v * v, axes).sqrt()
        s = _slice_sum(grad * v, axes) / norm                  # <G, v> / ||v||, per slice
        dv = (g / norm) * (grad - s * v / norm) if self.needs_input_grad[0] else None
        dg = s.reshape(g.shape) if self.needs_input_grad[1] else None
        return dv, dg


def norm_except_dim(v, pow=2, dim=0):
    """||v||_2 over every axis but `dim`, keeping them as size-1 axes (shape [] for dim=-1/None):
    torch.norm_except_dim, the g that makes weight_norm start at the unchanged weight."""
    if pow != 2:
        raise NotImplementedError(f"norm_except_dim: only pow=2 is supported, got pow={pow}")
    return _slice_sum(v * v, _norm_axes(v.ndim, dim)).sqrt()


def _weight_norm(v, g, dim=0):
    """torch._weight_norm(v, g, dim): v * (g / ||v||), one graph node."""
    for name, t in (("v", v), ("g", g)):
        if not isinstance(t, Tensor):
            raise TypeError(f"weight_norm: {name} must be a Tensor, got {type(t).__name__}")
    axes = _norm_axes(v.ndim, dim)
    expected = () if axes is None else tuple(1 if i in axes else n for i, n in enumerate(v.shape))
    if g.shape != expected:
        raise ValueError(f"weight_norm: g must have shape {list(expected)} for v of shape "
                         f"{list(v.shape)} and dim={dim}, got {list(g.shape)}")
    return WeightNorm.apply(v, g, dim=-1 if dim is None else dim)


class _WeightNorm(Module):
    """The parametrization: forward(g, v) = g v/||v||; right_inverse(w) = (||w||, w)."""

    def __init__(self, dim=0):
        super().__init__()
        self.dim = -1 if dim is None else dim

    def forward(self, weight_g, weight_v):
        return _weight_norm(weight_v, weight_g, self.dim)

    def right_inverse(self, weight):
        """Split a weight into (g, v) with g v/||v|| == weight: g = ||weight||, v = weight."""
        return norm_except_dim(weight, 2, self.dim), weight

    def _upgrade_state_dict(self, state_dict, prefix, tensor_name):
        """Checkpoints of the old API (weight_g, weight_v) load into original0/original1."""
        g_key, v_key = f"{prefix}{tensor_name}_g", f"{prefix}{tensor_name}_v"
        if g_key in state_dict and v_key in state_dict:
            state_dict[f"{prefix}parametrizations.{tensor_name}.original0"] = state_dict.pop(g_key)
            state_dict[f"{prefix}parametrizations.{tensor_name}.original1"] = state_dict.pop(v_key)


def weight_norm_parametrization(module, name="weight", dim=0):
    """Weight normalization as a parametrization, tinygrad_bn.nn.utils.parametrizations.weight_norm
    (PyTorch's name): module.<name> = g * v / ||v||, the norm over every axis but `dim`.

    g (parametrizations.<name>.original0) starts at ||w|| and v (original1) at w, so the weight is
    unchanged at first. dim=None (or -1) uses one norm for the whole tensor (g of shape []).
    No eps: v = 0 gives NaN, as in PyTorch. Returns the module."""
    tensor_attribute(module, name)  # it must exist
    from tinygrad_bn.nn.utils.parametrize import register_parametrization  # not at the top: nn/utils/__init__ imports this file
    register_parametrization(module, name, _WeightNorm(dim), unsafe=True)
    return module


# ---- the old API: tinygrad_bn.nn.utils.weight_norm (deprecated in PyTorch too) ---------------
class WeightNormHook:
    """Forward pre-hook of the old API: before every forward, module.<name> = g v/||v|| from the
    parameters <name>_g and <name>_v (a plain attribute, recomputed each call)."""

    def __init__(self, name, dim):
        self.name = name
        self.dim = -1 if dim is None else dim

    def compute_weight(self, module):
        return _weight_norm(getattr(module, self.name + "_v"), getattr(module, self.name + "_g"),
                            self.dim)

    @staticmethod
    def apply(module, name, dim):
        warnings.warn("`tinygrad_bn.nn.utils.weight_norm` is deprecated in favor of "
                      "`tinygrad_bn.nn.utils.parametrizations.weight_norm`.", FutureWarning,
                      stacklevel=3)
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, WeightNormHook) and hook.name == name:
                raise RuntimeError(f"Cannot register two weight_norm hooks on the same parameter {name}")
        fn = WeightNormHook(name, dim)
        weight = module._parameters.get(name)
        if weight is None:
            raise ValueError(f"weight_norm: module {type(module).__name__} has no parameter named "
                             f"{name!r}")
        with no_grad():
            g = norm_except_dim(weight, 2, fn.dim)
        del module._parameters[name]
        module.register_parameter(name + "_g", Parameter(g))
        module.register_parameter(name + "_v", Parameter(weight.data))
        setattr(module, name, fn.compute_weight(module))
        module.register_forward_pre_hook(fn)
        return fn

    def remove(self, module):
        weight = self.compute_weight(module)
        delattr(module, self.name)
        del module._parameters[self.name + "_g"]
        del module._parameters[self.name + "_v"]
        setattr(module, self.name, Parameter(weight.data))

    def __call__(self, module, inputs):
        setattr(module, self.name, self.compute_weight(module))


def weight_norm(module, name="weight", dim=0):
    """Old API (FutureWarning): parameters <name>_g and <name>_v, the weight recomputed by a
    forward pre-hook. Prefer tinygrad_bn.nn.utils.parametrizations.weight_norm."""
    WeightNormHook.apply(module, name, dim)
    return module


def remove_weight_norm(module, name="weight"):
    """Undo the old weight_norm: <name> becomes a Parameter again, holding g v/||v||."""
    return remove_reparametrization_hook(module, name, WeightNormHook, "weight_norm")


# ---- registry entries (tests/norms/test_matrix.py runs each) --------------------------------
def _conv(c, **kwargs):
    from tinygrad_bn.nn.layers import Conv2d
    return weight_norm_parametrization(Conv2d(c, c, 3, padding=1), **kwargs)


def _linear(c, **kwargs):
    from tinygrad_bn.nn.layers import Linear
    return weight_norm_parametrization(Linear(c, c + 1), **kwargs)


def _torch(torch, layer, **kwargs):
    return torch.nn.utils.parametrizations.weight_norm(layer, **kwargs)


SPECS = [
    NormSpec(name="WeightNorm-Conv2d", make=lambda c: _conv(c), input_shape=lambda c: (2, c, 3, 3),
             torch_make=lambda torch, c: _torch(torch, torch.nn.Conv2d(c, c, 3, padding=1)),
             test_options={"channels": 2},
             description="weight_norm(Conv2d): w = g v/||v|| per output channel"),
    NormSpec(name="WeightNorm-Linear", make=lambda c: _linear(c), input_shape=lambda c: (4, c),
             torch_make=lambda torch, c: _torch(torch, torch.nn.Linear(c, c + 1)),
             test_options={"channels": 3},
             description="weight_norm(Linear): g of shape (out, 1)"),
    NormSpec(name="WeightNorm-Linear-whole-tensor", make=lambda c: _linear(c, dim=None),
             input_shape=lambda c: (4, c),
             torch_make=lambda torch, c: _torch(torch, torch.nn.Linear(c, c + 1), dim=None),
             test_options={"channels": 3},
             description="weight_norm(Linear, dim=None): one norm for the whole weight, g of shape []"),
]
