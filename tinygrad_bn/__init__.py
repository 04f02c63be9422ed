"""tinygrad_bn: a teaching-grade tensor and reverse-mode autograd engine on NumPy (CPU) and
CuPy (GPU), with every layer and normalizer a graph node with a hand-derived backward."""
from tinygrad_bn import cuda, dtypes  # noqa: F401
from tinygrad_bn.autograd import enable_grad, no_grad, set_grad_enabled, is_grad_enabled  # noqa: F401
from tinygrad_bn.backend import Device as device  # noqa: F401
from tinygrad_bn.backend import manual_seed, initial_seed  # noqa: F401
from tinygrad_bn.creation import (arange, empty, empty_like, eye, full, full_like, linspace,  # noqa: F401
                                  ones, ones_like, rand, rand_like, randint, randn, randn_like,
                                  randperm, tensor, zeros, zeros_like)
from tinygrad_bn.dtypes import (bool_, double, float16, float32, float64, get_default_dtype,  # noqa: F401
                                half, int8, int16, int32, int64, long, set_default_dtype, uint8)
from tinygrad_bn.ops.elementwise import (abs, clamp, exp, log, maximum, minimum, relu,  # noqa: F401
                                         rsqrt, sigmoid, sign, sqrt, tanh, where)
from tinygrad_bn.ops.matmul import matmul  # noqa: F401
from tinygrad_bn.ops.reduce import (amax, amin, argmax, argmin, logsumexp, max, mean, min,  # noqa: F401
                                    std, sum, var)
from tinygrad_bn.ops.shape import (cat, chunk, flatten, narrow, pad, permute, reshape, split,  # noqa: F401
                                   squeeze, stack, transpose, unsqueeze)
from tinygrad_bn.tensor import Tensor  # noqa: F401
from tinygrad_bn.tensor import allclose  # noqa: F401
from tinygrad_bn.ops.activation import log_softmax, softmax  # noqa: F401
from tinygrad_bn.ops.linalg import einsum  # noqa: F401
from tinygrad_bn.autograd.grad_mode import inference_mode  # noqa: F401
from tinygrad_bn.creation import as_tensor, from_numpy, is_tensor  # noqa: F401
# the functional forms of the new Tensor methods, under PyTorch's top-level names (torch.gather, ...)
from tinygrad_bn.ops.cumulative import cumprod, cumsum, prod  # noqa: F401
from tinygrad_bn.ops.indexing import gather, index_select, masked_fill, scatter, scatter_add  # noqa: F401
from tinygrad_bn.ops.layout import diag, flip, roll, tril, triu, unbind, unflatten  # noqa: F401
from tinygrad_bn.ops.linalg import bmm, mm, norm, outer  # noqa: F401
from tinygrad_bn.ops.pointwise import ceil, cos, floor, isinf, isnan, round, sin, trunc  # noqa: F401
from tinygrad_bn.ops.sorting import sort, topk  # noqa: F401

bool = bool_  # torch.bool
float = float32  # torch.float
__version__ = "0.1.0"

# Loaded last, in this order: nn re-exports the normalizers, whose files build on nn.module.
from tinygrad_bn import nn, optim  # noqa: E402,F401
from tinygrad_bn.checkpoint import load, save  # noqa: E402,F401
from tinygrad_bn import accelerator  # noqa: E402,F401
