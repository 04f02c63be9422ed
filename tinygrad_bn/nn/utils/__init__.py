"""tinygrad_bn.nn.utils: parametrizations (weight_norm, spectral_norm), conv/linear + BatchNorm
fusion for inference, and the old hook-based weight_norm / spectral_norm APIs (torch.nn.utils).

    from tinygrad_bn.nn.utils.parametrizations import weight_norm, spectral_norm
    from tinygrad_bn.nn.utils import fuse_bn, fuse_conv_bn_eval
    from tinygrad_bn.nn.utils import update_bn_stats   # exact population statistics ("precise BN")
    from tinygrad_bn.nn.utils import clip_grad_norm_, clip_grad_value_, parameters_to_vector
"""
from tinygrad_bn.nn.utils import fusion, parametrizations, parametrize  # noqa: F401
from tinygrad_bn.nn.utils.fusion import (fuse_bn, fuse_conv_bn_eval, fuse_conv_bn_weights,  # noqa: F401
                                         fuse_linear_bn_eval, fuse_linear_bn_weights)
from tinygrad_bn.nn.utils.precise_bn import update_bn_stats  # noqa: F401
from tinygrad_bn.norms.spectralnorm import remove_spectral_norm, spectral_norm  # noqa: F401
from tinygrad_bn.norms.weightnorm import remove_weight_norm, weight_norm  # noqa: F401

__all__ = ["parametrize", "parametrizations", "fusion",
           "fuse_bn", "fuse_conv_bn_eval", "fuse_conv_bn_weights", "fuse_linear_bn_eval",
           "fuse_linear_bn_weights", "update_bn_stats",
           "weight_norm", "remove_weight_norm", "spectral_norm", "remove_spectral_norm"]

from tinygrad_bn.nn.utils.clip_grad import clip_grad_norm_, clip_grad_value_  # noqa: E402
from tinygrad_bn.nn.utils.convert_parameters import parameters_to_vector, vector_to_parameters  # noqa: E402

__all__ += ["clip_grad_norm_", "clip_grad_value_", "parameters_to_vector", "vector_to_parameters"]
