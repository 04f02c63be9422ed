"""tinygrad_bn.nn: Module, Parameter, layers, losses, `functional` and `init`, with PyTorch's names.

    import tinygrad_bn.nn as nn
    import tinygrad_bn.nn.functional as F
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(...))
"""
from tinygrad_bn.nn import functional, init  # noqa: F401
from tinygrad_bn.nn.containers import ModuleDict, ModuleList, Sequential
from tinygrad_bn.nn.layers import (AdaptiveAvgPool2d, AvgPool2d, Conv1d, Conv2d, Dropout, Dropout2d,
                                   Flatten, Identity, LeakyReLU, Linear, LogSoftmax, MaxPool2d, ReLU,
                                   Sigmoid, Softmax, Tanh)
from tinygrad_bn.nn.loss import CrossEntropyLoss, MSELoss, NLLLoss
from tinygrad_bn.nn.loss import BCELoss, BCEWithLogitsLoss, HuberLoss, KLDivLoss, L1Loss, SmoothL1Loss  # noqa: E402,F401
from tinygrad_bn.nn.module import Module
from tinygrad_bn.nn.parameter import Parameter

__all__ = ["Module", "Parameter", "functional", "init",
           "Sequential", "ModuleList", "ModuleDict",
           "Linear", "Conv1d", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
           "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax",
           "Dropout", "Dropout2d", "Flatten", "Identity",
           "CrossEntropyLoss", "NLLLoss", "MSELoss"]

# ---- normalizers ----------------------------------------------------------------------------
# The normalizer modules (BatchNorm1d/2d, LayerNorm, GroupNorm, InstanceNorm2d, ...) live in
# tinygrad_bn/norms/, one file each, and are re-exported here, e.g.
#     from tinygrad_bn.norms.batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d  # noqa: E402
#     __all__ += ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]
# Keep these imports below everything above: a norms file imports tinygrad_bn.nn.module, which
# is already loaded by then, so there is no import cycle.
from tinygrad_bn.norms.batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d  # noqa: E402

__all__ += ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]
from tinygrad_bn.norms.batchrenorm import BatchRenorm1d, BatchRenorm2d  # noqa: E402
from tinygrad_bn.norms.ghostbn import GhostBatchNorm1d, GhostBatchNorm2d  # noqa: E402
from tinygrad_bn.norms.syncbn import SyncBatchNorm  # noqa: E402

__all__ += ["SyncBatchNorm", "GhostBatchNorm1d", "GhostBatchNorm2d", "BatchRenorm1d", "BatchRenorm2d"]
from tinygrad_bn.norms.adain import AdaIN  # noqa: E402
from tinygrad_bn.norms.decorrelated import DecorrelatedBatchNorm  # noqa: E402
from tinygrad_bn.norms.frn import TLU, FilterResponseNorm2d  # noqa: E402
from tinygrad_bn.norms.meanonly import MeanOnlyBatchNorm2d  # noqa: E402

__all__ += ["FilterResponseNorm2d", "TLU", "AdaIN", "DecorrelatedBatchNorm", "MeanOnlyBatchNorm2d"]

from tinygrad_bn.nn import utils  # noqa: E402,F401

__all__ += ["utils"]
from tinygrad_bn.norms.groupnorm import GroupNorm  # noqa: E402
from tinygrad_bn.norms.instancenorm import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d  # noqa: E402
from tinygrad_bn.norms.layernorm import LayerNorm  # noqa: E402
from tinygrad_bn.norms.rmsnorm import RMSNorm  # noqa: E402

__all__ += ["LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "RMSNorm"]

from tinygrad_bn.nn.padding import (CircularPad1d, CircularPad2d, CircularPad3d, ConstantPad1d,  # noqa: E402
                                    ConstantPad2d, ConstantPad3d, ReflectionPad1d, ReflectionPad2d,
                                    ReflectionPad3d, ReplicationPad1d, ReplicationPad2d, ReplicationPad3d,
                                    ZeroPad1d, ZeroPad2d, ZeroPad3d)
from tinygrad_bn.nn.padding import __all__ as _padding_all  # noqa: E402

__all__ += _padding_all

from tinygrad_bn.nn.activation import ELU, GELU, Hardtanh, PReLU, ReLU6, SiLU  # noqa: E402
from tinygrad_bn.nn.sparse import Embedding  # noqa: E402

__all__ += ["GELU", "SiLU", "ELU", "ReLU6", "Hardtanh", "PReLU", "Embedding"]
__all__ += ["BCELoss", "BCEWithLogitsLoss", "L1Loss", "SmoothL1Loss", "HuberLoss", "KLDivLoss"]

from tinygrad_bn.nn.layers import Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d  # noqa: E402

__all__ += ["Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"]

from tinygrad_bn.nn.layers import AdaptiveAvgPool1d, AdaptiveMaxPool1d, AdaptiveMaxPool2d, Upsample  # noqa: E402

__all__ += ["Upsample", "AdaptiveMaxPool2d", "AdaptiveMaxPool1d", "AdaptiveAvgPool1d"]
