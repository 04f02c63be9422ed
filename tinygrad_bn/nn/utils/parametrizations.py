"""weight_norm and spectral_norm as parametrizations (torch.nn.utils.parametrizations).

    from tinygrad_bn.nn.utils.parametrizations import weight_norm, spectral_norm
    conv = weight_norm(nn.Conv2d(16, 32, 3))      # parametrizations.weight.original0 (g), original1 (v)
    lin = spectral_norm(nn.Linear(64, 1))         # parametrizations.weight.original, ...weight.0._u/_v

The maths and the graph nodes live in tinygrad_bn/norms/weightnorm.py and spectralnorm.py; the
mechanism (how `module.weight` becomes computed) in tinygrad_bn/nn/utils/parametrize.py.
"""
from tinygrad_bn.nn.utils import parametrize
from tinygrad_bn.norms.spectralnorm import _SpectralNorm, default_dim
from tinygrad_bn.norms.weightnorm import _WeightNorm
from tinygrad_bn.tensor import Tensor

__all__ = ["weight_norm", "spectral_norm"]


def _tensor(module, name):
    """module.<name> when it is a tensor (parameter, buffer or parametrized), else None."""
    try:
        value = getattr(module, name)
    except AttributeError:
        return None
    return value if isinstance(value, Tensor) else None


def weight_norm(module, name="weight", dim=0):
    """Weight normalization: module.<name> = g * v / ||v||, the norm over every axis but `dim`.

    g (parametrizations.<name>.original0) starts at ||w|| and v (original1) at w, so the weight is
    unchanged at first. dim=None (or -1) uses one norm for the whole tensor (g of shape []).
    No eps: v = 0 gives NaN, as in PyTorch. Returns the module."""
    if _tensor(module, name) is None:
        raise ValueError(f"Module '{module}' has no parameter or buffer with name '{name}'")
    parametrize.register_parametrization(module, name, _WeightNorm(dim), unsafe=True)
    return module


def spectral_norm(module, name="weight", n_power_iterations=1, eps=1e-12, dim=None):
    """Spectral normalization: module.<name> = W / sigma(W), sigma estimated by power iteration.

    u, v (buffers parametrizations.<name>.0._u / _v) start random (the weight device's seeded
    generator), normalized, then 15 iterations; in training mode every access runs
    n_power_iterations more (in place, no gradient); eval mode never iterates. dim=None means 0,
    or 1 for transposed convolutions. A 1-D weight becomes W / max(||W||, eps). Returns the module."""
    weight = _tensor(module, name)
    if weight is None:
        raise ValueError(f"Module '{module}' has no parameter or buffer with name '{name}'")
    if dim is None:
        dim = default_dim(module)
    parametrization = _SpectralNorm(weight, n_power_iterations, dim, eps)
    parametrize.register_parametrization(module, name, parametrization)
    return module
