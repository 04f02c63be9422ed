"""Losses: nll_loss, cross_entropy (= nll_loss of log_softmax, plus label smoothing and
class-probability targets), mse_loss. PyTorch's semantics: class dim 1, K-dim targets of shape
(N, d1, ...), per-class `weight`, `ignore_index`, reduction 'none' | 'mean' | 'sum'.

cross_entropy never exponentiates raw logits: log_softmax subtracts the row maximum first.
NLLLoss and MSELoss are graph nodes with hand-written backward in Tensor ops (double backward)."""
import warnings

import numpy as np

from tinygrad_bn import dtypes
from tinygrad_bn.autograd.function import Function
from tinygrad_bn.ops._helpers import binary_operands, sum_to_shape
from tinygrad_bn.ops.activation import log_softmax
from tinygrad_bn.tensor import Tensor

REDUCTIONS = ("none", "mean", "sum")


class NLLLoss(Function):
    """Negative log likelihood of class indices t, given log-probabilities x of shape (N, C, *d):

        l_i = -w[t_i] * x[i, t_i]   (0 where t_i == ignore_index)
        'none': l,   'sum': sum_i l_i,   'mean': sum_i l_i / sum_i w[t_i]  (non-ignored i)

    dx[i, c] = -w[t_i] * [c == t_i] * g_i  (divided by sum_i w[t_i] for 'mean'); linear in x, so
    the second derivative is zero and backward is just g times a constant one-hot array."""

    def forward(self, x, target, weight, ignore_index, reduction):
        xp = self.xp
        ignored = target == ignore_index
        safe_target = xp.where(ignored, 0, target)  # any valid index; its weight is zeroed below
        w = weight[safe_target] if weight is not None else xp.ones(target.shape, dtype=x.dtype)
        w = xp.where(ignored, 0, w).astype(x.dtype)
        picked = xp.take_along_axis(x, xp.expand_dims(safe_target, 1), axis=1).squeeze(1)
        losses = -w * picked
        total_weight = w.sum()
        self.save_for_backward(target=safe_target, w=w, total_weight=total_weight)
        if reduction == "none":
            return losses
        if reduction == "sum":
            return losses.sum()
        with np.errstate(invalid="ignore", divide="ignore"):  # all ignored: 0/0 = nan, as PyTorch
            return losses.sum() / total_weight

    def backward(self, g):
        xp = self.xp
        target, w = self.saved_array("target"), self.saved_array("w")
        shape, dtype = self.input_meta[0]
        reduction = self.attrs["reduction"]
        if reduction == "mean":
            total = self.saved_array("total_weight")
            w = w / xp.where(total == 0, 1, total)  # all ignored: every w is 0, so the grad is 0
        classes = xp.arange(shape[1]).reshape((1, -1) + (1,) * (len(shape) - 2))
        coeff = (classes == xp.expand_dims(target, 1)) * -xp.expand_dims(w, 1)
        if reduction == "none":
            g = g.unsqueeze(1)  # (N, *d) -> (N, 1, *d), broadcast over the classes
        return g * Tensor._make(coeff.astype(dtype)), None


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """torch.nn.functional.nll_loss: input holds log-probabilities, (N, C, *d) or (C,)."""
    input, target, unbatched = _check_class_targets(input, target, weight, ignore_index, reduction,
                                                    "nll_loss")
    out = NLLLoss.apply(input, target, weight=None if weight is None else weight.data,
                        ignore_index=ignore_index, reduction=reduction)
    return out.reshape(()) if unbatched and reduction == "none" else out


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0):
    """torch.nn.functional.cross_entropy: nll_loss(log_softmax(input, 1)), with label smoothing.

    Class indices t (shape (N, *d)), smoothing e, C classes, L = log_softmax(input):
        loss = (1 - e) * nll_loss(L, t) + e / C * s,   s_i = -sum_c w_c L[i, c]  (0 if ignored)
    and s is reduced like nll_loss ('mean' divides by the same sum of target weights).
    Class probabilities p (input's shape): loss_i = -sum_c w_c q[i, c] L[i, c] with
    q = (1 - e) p + e / C; 'mean' divides by the number of samples N * prod(d)."""
    name = "cross_entropy"
    if not isinstance(label_smoothing, (int, float)) or not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{name}: label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    if isinstance(target, Tensor) and dtypes.is_floating(target.dtype) and \
            isinstance(input, Tensor) and target.shape == input.shape:
        return _cross_entropy_probabilities(input, target, weight, ignore_index, reduction,
                                            label_smoothing)
    input, target, unbatched = _check_class_targets(input, target, weight, ignore_index, reduction, name)
    log_p = log_softmax(input, 1)
    w = None if weight is None else weight.data
    loss = NLLLoss.apply(log_p, target, weight=w, ignore_index=ignore_index, reduction=reduction)
    if label_smoothing > 0:
        classes = input.shape[1]
        per_class = log_p if weight is None else log_p * _class_view(weight.detach(), input.ndim)
        not_ignored = target.data != ignore_index
        smooth = -per_class.sum(1) * Tensor._make(not_ignored.astype(input.dtype))
        if reduction == "sum":
            smooth = smooth.sum()
        elif reduction == "mean":
            safe = input.xp.where(not_ignored, target.data, 0)
            total = (w[safe] * not_ignored).sum() if w is not None else not_ignored.sum()
            with np.errstate(invalid="ignore", divide="ignore"):
                smooth = smooth.sum() / Tensor._make(total.astype(input.dtype))
        loss = loss * (1 - label_smoothing) + smooth * (label_smoothing / classes)
    return loss.reshape(()) if unbatched and reduction == "none" else loss


def _cross_entropy_probabilities(input, target, weight, ignore_index, reduction, label_smoothing):
    """cross_entropy with class-probability targets (composed of differentiable Tensor ops)."""
    name = "cross_entropy"
    _check_reduction(reduction, name)
    _check_float_input(input, name)
    if ignore_index >= 0:
        raise ValueError(f"{name}: ignore_index is not supported for floating point target "
                         f"(class probabilities); got ignore_index={ignore_index}")
    if target.device != input.device:
        raise RuntimeError(f"{name}: target is on {target.device} but input is on {input.device}")
    unbatched = input.ndim == 1
    if unbatched:
        input, target = input.unsqueeze(0), target.unsqueeze(0)
    classes = input.shape[1]
    _check_weight(weight, input, classes, name)
    q = target * (1 - label_smoothing) + label_smoothing / classes if label_smoothing > 0 else target
    terms = log_softmax(input, 1) * q
    if weight is not None:
        terms = terms * _class_view(weight.detach(), input.ndim)
    if reduction == "none":
        loss = -terms.sum(1)
        return loss.reshape(()) if unbatched else loss
    if reduction == "sum":
        return -terms.sum()
    return -terms.sum() / (input.numel() // classes) if input.numel() else -terms.sum() * float("nan")


def _class_view(weight, ndim):
    """A (C,) weight as (1, C, 1, ...), to broadcast over (N, C, *d)."""
    return weight.reshape((1, -1) + (1,) * (ndim - 2))


class MSELoss(Function):
    """l = (a - b)^2, reduced by 'none' | 'mean' (over all n elements) | 'sum'.

    da = 2 (a - b) g  (times 1/n for 'mean'),   db = -da; both computed from the saved inputs
    with Tensor ops, so the second derivative (2 g, -2 g) comes out of double backward."""

    def forward(self, a, b, reduction):
        self.save_for_backward(a=a, b=b)
        diff = a - b
        squares = diff * diff
        if reduction == "none":
            return squares
        return squares.sum() if reduction == "sum" else squares.mean()

    def backward(self, g):
        a, b = self.saved("a", "b")
        (sa, _), (sb, _) = self.input_meta
        diff = a - b
        scale = 2.0 / max(diff.numel(), 1) if self.attrs["reduction"] == "mean" else 2.0
        grad = diff * (g * scale)
        return (sum_to_shape(grad, sa) if self.needs_input_grad[0] else None,
                sum_to_shape(-grad, sb) if self.needs_input_grad[1] else None)


def mse_loss(input, target, reduction="mean"):
    """torch.nn.functional.mse_loss: mean (or sum, or none) of (input - target)^2."""
    _check_reduction(reduction, "mse_loss")
    if not isinstance(input, Tensor) or not isinstance(target, Tensor):
        raise TypeError(f"mse_loss: expected Tensors, got {type(input).__name__} and "
                        f"{type(target).__name__}")
    if input.shape != target.shape:
        warnings.warn(f"mse_loss: Using a target size ({list(target.shape)}) that is different to "
                      f"the input size ({list(input.shape)}). This will likely lead to incorrect "
                      f"results due to broadcasting. Please ensure they have the same size.",
                      stacklevel=2)
    a, b = binary_operands(input, target, "mse_loss")
    _check_float_input(a, "mse_loss")
    return MSELoss.apply(a, b, reduction=reduction)


# ---- argument checks: raised where the mistake is made, naming the op and the shapes ----------
def _check_reduction(reduction, name):
    if reduction not in REDUCTIONS:
        raise ValueError(f"{name}: {reduction!r} is not a valid value for reduction; expected "
                         f"'none', 'mean' or 'sum'")


def _check_float_input(input, name):
    if not isinstance(input, Tensor):
        raise TypeError(f"{name}: expected a Tensor as input, got {type(input).__name__}")
    if not dtypes.is_floating(input.dtype):
        raise TypeError(f"{name}: expected a floating-point input, got dtype {input.dtype}")


def _check_weight(weight, input, classes, name):
    if weight is None:
        return
    if not isinstance(weight, Tensor):
        raise TypeError(f"{name}: weight must be a Tensor or None, got {type(weight).__name__}")
    if weight.shape != (classes,):
        raise ValueError(f"{name}: weight tensor should be defined either for all {classes} classes "
                         f"or no classes but got weight tensor of shape: {list(weight.shape)}")
    if weight.device != input.device:
        raise RuntimeError(f"{name}: weight is on {weight.device} but input is on {input.device}")


def _check_class_targets(input, target, weight, ignore_index, reduction, name):
    """Validate (input, class-index target); return them batched, and whether they were not."""
    _check_reduction(reduction, name)
    _check_float_input(input, name)
    if not isinstance(target, Tensor):
        raise TypeError(f"{name}: expected target to be a Tensor, got {type(target).__name__}")
    if target.dtype.kind not in "iu":
        hint = ("" if name != "cross_entropy" else
                f"; class-probability targets must be floating point with the input's shape "
                f"{list(input.shape)}, got shape {list(target.shape)}")
        raise TypeError(f"{name}: expected target to hold class indices of an integer dtype "
                        f"(int64), got dtype {target.dtype}{hint}")
    if input.ndim == 0:
        raise ValueError(f"{name}: input must have a class dimension, got a 0-d tensor")
    if target.device != input.device:
        raise RuntimeError(f"{name}: target is on {target.device} but input is on {input.device}")
    unbatched = input.ndim == 1
    if unbatched:
        if target.ndim != 0:
            raise ValueError(f"{name}: an unbatched input of shape {list(input.shape)} needs a 0-d "
                             f"target, got shape {list(target.shape)}")
        input, target = input.unsqueeze(0), target.reshape(1)
    expected = (input.shape[0],) + input.shape[2:]
    if target.shape != expected:
        batch = (f" Expected input batch_size ({input.shape[0]}) to match target batch_size "
                 f"({target.shape[0]})." if target.ndim and target.shape[0] != input.shape[0] else "")
        raise ValueError(f"{name}: expected target of shape {list(expected)} for input of shape "
                         f"{list(input.shape)} (class dim 1), got {list(target.shape)}.{batch}")
    classes = input.shape[1]
    _check_weight(weight, input, classes, name)
    t = target.data
    out_of_range = (t != ignore_index) & ((t < 0) | (t >= classes))
    if bool(out_of_range.any()):  # one host sync: a wrong label must not silently index
        bad = int(t[out_of_range].reshape(-1)[0])
        raise IndexError(f"{name}: Target {bad} is out of bounds: expected class indices in "
                         f"[0, {classes - 1}] for {classes} classes (or ignore_index={ignore_index})")
    return input, target, unbatched
