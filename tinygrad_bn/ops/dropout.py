"""Inverted dropout: zero each element (dropout) or each whole channel (dropout2d) with
probability p during training, and scale the survivors by 1/(1-p) so the expected value is
unchanged; in evaluation (and for p = 0) the input passes through untouched.

The keep mask is drawn from the seeded generator of the input's device
(`tinygrad_bn.backend.generator`, reset by `tinygrad_bn.manual_seed`), so runs are reproducible,
and it is saved so that backward drops exactly the same elements."""
from tinygrad_bn import backend
from tinygrad_bn.autograd.function import Function
from tinygrad_bn.ops._helpers import check_float
from tinygrad_bn.tensor import Tensor


class Dropout(Function):
    """y = x * m,  m = [u >= p] / (1 - p) with u ~ U[0, 1) drawn in `mask_shape` (broadcast over x).
    dx = g * m."""

    def forward(self, x, p, mask_shape):
        if p == 1:  # every element dropped; 1/(1-p) would be inf
            mask = self.xp.zeros(mask_shape, dtype=x.dtype)
        else:
            u = backend.generator(self.device).random(mask_shape, dtype=_random_dtype(x.dtype))
            mask = (u >= p).astype(x.dtype)
            mask *= 1.0 / (1.0 - p)
        self.save_for_backward(mask=mask)
        return x * mask

    def backward(self, g):
        return g * Tensor._make(self.saved_array("mask"))


def _random_dtype(dtype):
    # Generator.random makes float32 or float64 only; float16 inputs draw in float32
    return dtype if dtype.itemsize >= 4 else "float32"


def _check_p(p):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")


def _apply(input, p, training, inplace, mask_shape, name):
    if not isinstance(input, Tensor):
        raise TypeError(f"{name}: expected a Tensor as input, got {type(input).__name__}")
    _check_p(p)
    if not training or p == 0:
        return input
    check_float(input, name)
    out = Dropout.apply(input, p=float(p), mask_shape=mask_shape)
    return input._inplace(out, name + "_") if inplace else out


def dropout(input, p=0.5, training=True, inplace=False):
    """torch.nn.functional.dropout: each element is zeroed independently with probability p."""
    return _apply(input, p, training, inplace, input.shape if isinstance(input, Tensor) else None,
                  "dropout")


def dropout2d(input, p=0.5, training=True, inplace=False):
    """torch.nn.functional.dropout2d: whole channels (N, C, H, W) or (C, H, W) are zeroed.

    The mask has shape (N, C, 1, 1), or (C, 1, 1) for an unbatched (C, H, W) input. (PyTorch
    currently treats a 3-D input as (N, C, L), with a warning that this will change; we already
    follow its documented (C, H, W) meaning.)"""
    if isinstance(input, Tensor) and input.ndim not in (3, 4):
        raise ValueError(f"dropout2d: expected a 4-D (N, C, H, W) or 3-D (C, H, W) input, got "
                         f"shape {list(input.shape)}")
    mask_shape = input.shape[:-2] + (1, 1) if isinstance(input, Tensor) else None
    return _apply(input, p, training, inplace, mask_shape, "dropout2d")
