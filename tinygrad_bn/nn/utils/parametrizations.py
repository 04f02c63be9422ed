"""weight_norm and spectral_norm as parametrizations (torch.nn.utils.parametrizations).

    from tinygrad_bn.nn.utils.parametrizations import weight_norm, spectral_norm
    conv = weight_norm(nn.Conv2d(16, 32, 3))      # parametrizations.weight.original0 (g), original1 (v)
    lin = spectral_norm(nn.Linear(64, 1))         # parametrizations.weight.original, ...weight.0._u/_v

These are PyTorch's names for functions that live with their normalizer: the maths, the graph nodes
and these two functions in tinygrad_bn/norms/weightnorm.py and spectralnorm.py; the mechanism (how
`module.weight` becomes computed) in tinygrad_bn/nn/utils/parametrize.py. Imports go one way,
nn -> norms, so the two packages form no import circle (tests/test_layering.py).
"""
from tinygrad_bn.norms.spectralnorm import spectral_norm_parametrization as spectral_norm
from tinygrad_bn.norms.weightnorm import weight_norm_parametrization as weight_norm

__all__ = ["weight_norm", "spectral_norm"]
