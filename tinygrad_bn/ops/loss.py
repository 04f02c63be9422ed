"""Losses: nll_loss, cross_entropy (= nll_loss of log_softmax, plus label smoothing and
class-probability targets), mse_loss, and the elementwise losses binary_cross_entropy,
binary_cross_entropy_with_logits, l1_loss, smooth_l1_loss, huber_loss and kl_div. PyTorch's semantics: class dim 1, K-dim targets of shape
(N, d1, ...), per-class `weight`, `ignore_index`, reduction 'none' | 'mean' | 'sum'.

cross_entropy never exponentiates raw logits: log_softmax subtracts the row maximum first.
NLLLoss and MSELoss are graph nodes with hand-written backward in Tensor ops (double backward)."""
import warnings

import numpy as np

from tinygrad_bn import dtypes
from tinygrad_bn.autograd.function import Function
from tinygrad_bn.ops._helpers import binary_operands, sum_to_shape
from tinygrad_bn.ops.activation import log_softmax, softplus
from tinygrad_bn.ops.elementwise import where
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


# ---- elementwise losses: a pointwise term, then the shared reduction ----------------------------
def _reduce(terms, reduction):
    """'none': the terms; 'sum': their sum; 'mean': their mean (NaN for no elements, as PyTorch)."""
    if reduction == "none":
        return terms
    return terms.sum() if reduction == "sum" else terms.mean()


def _same_shape_operands(input, target, name, must_match=False):
    """(input, target) as Tensors of one float dtype; PyTorch warns (or, must_match, refuses) when
    their shapes differ, since broadcasting them is almost always a mistake."""
    _check_float_input(input, name)
    if not isinstance(target, Tensor):
        raise TypeError(f"{name}: expected target to be a Tensor, got {type(target).__name__}")
    if input.shape != target.shape:
        if must_match:
            raise ValueError(f"{name}: Using a target size ({list(target.shape)}) that is different to "
                             f"the input size ({list(input.shape)}) is deprecated. Please ensure they "
                             f"have the same size.")
        warnings.warn(f"{name}: Using a target size ({list(target.shape)}) that is different to the "
                      f"input size ({list(input.shape)}). This will likely lead to incorrect results due "
                      f"to broadcasting. Please ensure they have the same size.", stacklevel=3)
    return binary_operands(input, target, name)


class BinaryCrossEntropy(Function):
    """l = -[y log(x) + (1 - y) log(1 - x)], each log clamped at -100 (PyTorch's rule: a
    prediction of exactly 0 or 1 gives a finite loss, not inf).

    dx = g (x - y) / max(x (1 - x), 1e-12),   dy = g (log(1 - x) - log(x)) = -g logit(x);
    both written with Tensor ops, so the second derivative comes from double backward."""

    def forward(self, x, y):
        xp = self.xp
        self.save_for_backward(x=x, y=y)
        with np.errstate(divide="ignore"):  # log(0) = -inf, then clamped
            log_x, log_1mx = xp.maximum(xp.log(x), -100), xp.maximum(xp.log1p(-x), -100)
        return -(y * log_x + (1 - y) * log_1mx)

    def backward(self, g):
        x, y = self.saved("x", "y")
        (sx, _), (sy, _) = self.input_meta
        dx = g * (x - y) / (x * (1 - x)).clamp(min=1e-12) if self.needs_input_grad[0] else None
        dy = g * ((1 - x).log() - x.log()) if self.needs_input_grad[1] else None
        return (sum_to_shape(dx, sx) if dx is not None else None,
                sum_to_shape(dy, sy) if dy is not None else None)


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    """torch.nn.functional.binary_cross_entropy: -w [y log x + (1 - y) log(1 - x)] for
    probabilities x in [0, 1] (logs clamped at -100), reduced; weight broadcasts to the input."""
    reduction = _legacy(size_average, reduce, reduction)
    _check_reduction(reduction, "binary_cross_entropy")
    x, y = _same_shape_operands(input, target, "binary_cross_entropy", must_match=True)
    if x.numel() and bool(((x.data < 0) | (x.data > 1)).any()):  # one host sync, as PyTorch's check
        raise RuntimeError(f"binary_cross_entropy: all elements of input should be between 0 and 1, "
                           f"got values in [{float(x.data.min())}, {float(x.data.max())}] (input shape "
                           f"{list(x.shape)}); for logits use binary_cross_entropy_with_logits")
    terms = BinaryCrossEntropy.apply(x, y)
    if weight is not None:
        terms = terms * _broadcast_weight(weight, terms, "binary_cross_entropy", "weight")
    return _reduce(terms, reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None):
    """torch.nn.functional.binary_cross_entropy_with_logits, for logits x:
        l = -w [p y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))]
          = w [(1 - y) softplus(x) + p y softplus(-x)]
    (p the pos_weight, broadcast along the last dim; -log sigmoid(x) = softplus(-x)). Both terms
    are non-negative, so nothing cancels (PyTorch's form (1 - y) x + (1 + (p-1) y) softplus(-x)
    subtracts two numbers near 87 to get 1e-38 at x = -87 in float32), and softplus never
    exponentiates a large x. Composed of Tensor ops, so every derivative comes from the graph."""
    reduction = _legacy(size_average, reduce, reduction)
    _check_reduction(reduction, "binary_cross_entropy_with_logits")
    _check_float_input(input, "binary_cross_entropy_with_logits")
    if isinstance(target, Tensor) and input.shape != target.shape:
        raise ValueError(f"binary_cross_entropy_with_logits: Target size ({list(target.shape)}) must "
                         f"be the same as input size ({list(input.shape)})")
    x, y = _same_shape_operands(input, target, "binary_cross_entropy_with_logits")
    positive = y
    if pos_weight is not None:
        positive = _broadcast_weight(pos_weight, x, "binary_cross_entropy_with_logits", "pos_weight") * y
    no_threshold = float("inf")  # the exact softplus: PyTorch's threshold is for its layer only
    terms = (1 - y) * softplus(x, 1.0, no_threshold) + positive * softplus(-x, 1.0, no_threshold)
    if weight is not None:
        terms = terms * _broadcast_weight(weight, terms, "binary_cross_entropy_with_logits", "weight")
    return _reduce(terms, reduction)


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """torch.nn.functional.l1_loss: |x - y|, reduced. d/dx = sign(x - y) (0 where x = y)."""
    reduction = _legacy(size_average, reduce, reduction)
    _check_reduction(reduction, "l1_loss")
    x, y = _same_shape_operands(input, target, "l1_loss")
    return _reduce((x - y).abs(), reduction)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """torch.nn.functional.smooth_l1_loss, with d = x - y:
        l = d^2 / (2 beta)  where |d| < beta,   |d| - beta / 2  elsewhere   (beta = 0: l1_loss).
    The two pieces meet with equal value and slope at |d| = beta."""
    reduction = _legacy(size_average, reduce, reduction)
    _check_reduction(reduction, "smooth_l1_loss")
    beta = _nonnegative(beta, "beta", "smooth_l1_loss", allow_zero=True)
    x, y = _same_shape_operands(input, target, "smooth_l1_loss")
    d = x - y
    if beta == 0:
        return _reduce(d.abs(), reduction)
    return _reduce(where(d.abs() < beta, 0.5 * d * d / beta, d.abs() - 0.5 * beta), reduction)


def huber_loss(input, target, reduction="mean", delta=1.0):
    """torch.nn.functional.huber_loss, with d = x - y:
        l = d^2 / 2  where |d| < delta,   delta (|d| - delta / 2)  elsewhere
    (= delta * smooth_l1_loss with beta = delta)."""
    _check_reduction(reduction, "huber_loss")
    delta = _nonnegative(delta, "delta", "huber_loss", allow_zero=False)
    x, y = _same_shape_operands(input, target, "huber_loss")
    d = x - y
    return _reduce(where(d.abs() < delta, 0.5 * d * d, delta * (d.abs() - 0.5 * delta)), reduction)


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """torch.nn.functional.kl_div, input = log q (log-probabilities), target = p:
        l = p (log p - log q), with p log p = 0 where p = 0   (log_target: l = e^t (t - log q)).
    'batchmean' divides the sum by the batch size input.shape[0] (the KL divergence per sample);
    'mean' divides by the number of elements, as PyTorch does (and warns about)."""
    reduction = _legacy(size_average, reduce, reduction)
    if reduction not in REDUCTIONS + ("batchmean",):
        raise ValueError(f"kl_div: {reduction!r} is not a valid value for reduction; expected 'none', "
                         f"'batchmean', 'mean' or 'sum'")
    if not isinstance(log_target, bool):
        raise TypeError(f"kl_div: log_target must be a bool, got {type(log_target).__name__}")
    x, y = _same_shape_operands(input, target, "kl_div")
    if log_target:
        terms = y.exp() * (y - x)
    else:
        positive = y > 0
        terms = where(positive, y * where(positive, y, 1).log(), 0) - y * x
    if reduction == "mean":
        warnings.warn("kl_div: reduction: 'mean' divides the total loss by both the batch size and the "
                      "support size. 'batchmean' divides only by the batch size, and aligns with the KL "
                      "div math definition.", stacklevel=2)
    if reduction == "batchmean":
        return terms.sum() / (x.shape[0] if x.ndim else 1)
    return _reduce(terms, reduction)


def _legacy(size_average, reduce, reduction):
    """PyTorch's deprecated size_average / reduce flags, mapped onto `reduction`."""
    if size_average is None and reduce is None:
        return reduction
    warnings.warn("size_average and reduce args will be deprecated, please use reduction instead.",
                  stacklevel=3)
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    return "none" if not reduce else ("mean" if size_average else "sum")


def _broadcast_weight(weight, like, name, what):
    if not isinstance(weight, Tensor):
        raise TypeError(f"{name}: {what} must be a Tensor or None, got {type(weight).__name__}")
    try:
        np.broadcast_shapes(tuple(weight.shape), tuple(like.shape))
    except ValueError:
        raise RuntimeError(f"{name}: {what} of shape {list(weight.shape)} cannot be broadcast to the "
                           f"input's shape {list(like.shape)}") from None
    if weight.device != like.device:
        raise RuntimeError(f"{name}: {what} is on {weight.device} but input is on {like.device}")
    return weight


def _nonnegative(value, what, name, allow_zero):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: {what} must be a number, got {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero):
        raise RuntimeError(f"{name} does not support {'negative' if allow_zero else 'non-positive'} "
                           f"values for {what}, got {what}={value}")
    return float(value)


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
