"""cross_entropy, nll_loss, mse_loss: PyTorch parity (reductions, weight, ignore_index, label
smoothing, K-dim and probability targets), gradcheck + gradgradcheck, stability, errors."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn.ops.activation import log_softmax
from tinygrad_bn.ops.loss import cross_entropy, mse_loss, nll_loss
from tests.helpers import check_grads, check_torch, needs_torch, torch

TF = torch.nn.functional
REDUCTIONS = ["none", "sum", "mean"]
WEIGHT = np.array([0.2, 1.0, 3.0, 0.5])


def _ce(device, weight=None, **kw):
    """(ours, theirs) cross_entropy with a constant class weight on the right device."""
    ours_w = None if weight is None else tg.tensor(weight, device=device)
    theirs_w = None if weight is None else torch.tensor(weight)
    return (lambda x, t: cross_entropy(x, t, weight=ours_w, **kw),
            lambda x, t: TF.cross_entropy(x, t, weight=theirs_w, **kw))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight", [None, WEIGHT])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_parity(device, reduction, weight, label_smoothing):
    target = np.array([1, 0, 3, 2, 1])
    ours, theirs = _ce(device, weight, reduction=reduction, label_smoothing=label_smoothing)
    check_torch(ours, theirs, [(5, 4), target], device=device)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight", [None, WEIGHT])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cross_entropy_ignore_index(device, reduction, weight, label_smoothing):
    target = np.array([1, -100, 3, 2, -100])
    ours, theirs = _ce(device, weight, reduction=reduction, label_smoothing=label_smoothing)
    check_torch(ours, theirs, [(5, 4), target], device=device)
    ours, theirs = _ce(device, weight, reduction=reduction, ignore_index=2,
                       label_smoothing=label_smoothing)
    check_torch(ours, theirs, [(5, 4), np.array([1, 2, 3, 2, 0])], device=device)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_k_dim_targets(device, reduction):
    rng = np.random.default_rng(1)
    target = rng.integers(0, 4, size=(2, 3, 2))
    target[0, 1, 1] = -100
    ours, theirs = _ce(device, WEIGHT, reduction=reduction, label_smoothing=0.1)
    check_torch(ours, theirs, [(2, 4, 3, 2), target], device=device)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_unbatched(device, reduction):
    ours, theirs = _ce(device, reduction=reduction, label_smoothing=0.1)
    check_torch(ours, theirs, [(4,), np.array(2)], device=device)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight", [None, WEIGHT])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
def test_cross_entropy_probability_targets(device, reduction, weight, label_smoothing):
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(4), size=(3, 2)).transpose(0, 2, 1)  # (N=3, C=4, d=2)
    ours, theirs = _ce(device, weight, reduction=reduction, label_smoothing=label_smoothing)
    check_torch(ours, theirs, [(3, 4, 2), probs], device=device)


def test_cross_entropy_float32(device):
    ours, theirs = _ce(device, WEIGHT.astype(np.float32), label_smoothing=0.1)
    check_torch(ours, theirs, [(6, 4), np.array([0, 1, 2, 3, 0, 1])], device=device,
                dtype=np.float32, atol=1e-5, rtol=1e-4)


def test_cross_entropy_huge_logits_are_stable(device):
    x = np.array([[1e4, 0.0, -1e4], [0.0, 2e4, 0.0]], dtype=np.float32)
    check_torch(lambda x, t: cross_entropy(x, t), lambda x, t: TF.cross_entropy(x, t),
                [x.shape, (2,)], arrays=[x, np.array([1, 1])], device=device, dtype=np.float32)


def test_all_targets_ignored_gives_nan_and_zero_grad(device):
    x = tg.randn(3, 4, device=device, requires_grad=True)
    loss = cross_entropy(x, tg.tensor([-100, -100, -100], device=device))
    assert np.isnan(loss.item())  # 0 / 0, as in PyTorch
    loss.backward()
    assert not x.grad.numpy().any()


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_parity(device, reduction):
    w_ours, w_theirs = tg.tensor(WEIGHT, device=device), torch.tensor(WEIGHT)
    target = np.array([3, 0, -100, 1])
    check_torch(lambda x, t: nll_loss(log_softmax(x, 1), t, weight=w_ours, reduction=reduction),
                lambda x, t: TF.nll_loss(torch.log_softmax(x, 1), t, weight=w_theirs, reduction=reduction),
                [(4, 4), target], device=device)
    check_torch(lambda x, t: nll_loss(x, t, reduction=reduction),
                lambda x, t: TF.nll_loss(x, t, reduction=reduction),
                [(2, 4, 3), np.array([[0, 3, 1], [2, 2, -100]])], device=device)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_loss_parity(device, reduction):
    check_torch(lambda a, b: mse_loss(a, b, reduction=reduction),
                lambda a, b: TF.mse_loss(a, b, reduction=reduction), [(3, 4), (3, 4)], device=device)


def test_mse_loss_broadcast_warns_like_pytorch(device):
    with pytest.warns(UserWarning, match="Using a target size"):
        check_torch(lambda a, b: mse_loss(a, b), lambda a, b: TF.mse_loss(a, b), [(3, 1), (3,)],
                    device=device)


# ---- gradcheck and double backward (float64) --------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_grads(device, reduction):
    w = tg.tensor(WEIGHT, device=device)
    check_grads(lambda x, t: cross_entropy(x, t, weight=w, reduction=reduction, ignore_index=0,
                                           label_smoothing=0.1),
                [(3, 4), np.array([1, 0, 3])], device=device)


def test_cross_entropy_k_dim_grads(device):
    check_grads(lambda x, t: cross_entropy(x, t), [(2, 3, 2), np.array([[0, 2], [1, 1]])],
                device=device)


def test_cross_entropy_probability_target_grads(device):
    probs = np.random.default_rng(3).dirichlet(np.ones(3), size=2)
    check_grads(lambda x, p: cross_entropy(x, p, label_smoothing=0.2), [(2, 3), probs], device=device)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_grads(device, reduction):
    check_grads(lambda x, t: nll_loss(x, t, reduction=reduction), [(3, 4), np.array([1, -100, 3])],
                device=device)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_loss_grads(device, reduction):
    check_grads(lambda a, b: mse_loss(a, b, reduction=reduction), [(2, 3), (2, 3)], device=device)


def test_losses_are_single_graph_nodes():
    x = tg.randn(3, 4, requires_grad=True)
    assert nll_loss(x, tg.tensor([0, 1, 2])).grad_fn.name == "NLLLossBackward"
    assert mse_loss(x, tg.zeros(3, 4)).grad_fn.name == "MSELossBackward"
    node = cross_entropy(x, tg.tensor([0, 1, 2])).grad_fn
    assert node.name == "NLLLossBackward" and node.next_edges[0][0].name == "LogSoftmaxBackward"


# ---- errors -----------------------------------------------------------------------------------
def test_float_labels_are_rejected():
    with pytest.raises(TypeError, match=r"cross_entropy: .*integer dtype .*got dtype float32"):
        cross_entropy(tg.randn(3, 4), tg.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(TypeError, match=r"nll_loss: .*got dtype float32"):
        nll_loss(tg.randn(3, 4), tg.tensor([0.0, 1.0, 2.0]))


@pytest.mark.parametrize("bad", [7, -1])
def test_label_out_of_range(bad):
    with pytest.raises(IndexError, match=rf"cross_entropy: Target {bad} is out of bounds.*4 classes"):
        cross_entropy(tg.randn(3, 4), tg.tensor([0, bad, 2]))


def test_ignored_label_is_not_out_of_range():
    cross_entropy(tg.randn(3, 4), tg.tensor([0, 9, 2]), ignore_index=9)


def test_batch_size_mismatch():
    with pytest.raises(ValueError, match=r"Expected input batch_size \(3\) to match target batch_size \(2\)"):
        cross_entropy(tg.randn(3, 4), tg.tensor([0, 1]))


def test_k_dim_shape_mismatch():
    with pytest.raises(ValueError, match=r"expected target of shape \[2, 5\] .* got \[2, 4\]"):
        cross_entropy(tg.randn(2, 3, 5), tg.zeros(2, 4, dtype=tg.int64))


@pytest.mark.parametrize("fn, args", [
    (cross_entropy, lambda: (tg.randn(2, 3), tg.tensor([0, 1]))),
    (nll_loss, lambda: (tg.randn(2, 3), tg.tensor([0, 1]))),
    (mse_loss, lambda: (tg.randn(2, 3), tg.randn(2, 3))),
])
def test_bad_reduction(fn, args):
    with pytest.raises(ValueError, match="'avg' is not a valid value for reduction"):
        fn(*args(), reduction="avg")


def test_bad_weight_shape():
    with pytest.raises(ValueError, match=r"weight tensor should be defined either for all 4 classes"):
        cross_entropy(tg.randn(2, 4), tg.tensor([0, 1]), weight=tg.ones(3))


def test_bad_label_smoothing():
    with pytest.raises(ValueError, match="label_smoothing must be between 0.0 and 1.0. Got: 1.5"):
        cross_entropy(tg.randn(2, 4), tg.tensor([0, 1]), label_smoothing=1.5)


def test_probability_targets_refuse_ignore_index():
    with pytest.raises(ValueError, match="ignore_index is not supported for floating point target"):
        cross_entropy(tg.randn(2, 3), tg.ones(2, 3) / 3, ignore_index=1)


def test_mse_loss_shape_mismatch():
    with pytest.raises(RuntimeError, match="mse_loss: shapes"), pytest.warns(UserWarning):
        mse_loss(tg.randn(2, 3), tg.randn(4))


def test_integer_logits_are_rejected():
    with pytest.raises(TypeError, match="cross_entropy: expected a floating-point input, got dtype int64"):
        cross_entropy(tg.tensor([[1, 2]]), tg.tensor([0]))


# ---- the elementwise losses (issue 15) -----------------------------------------------------------
import warnings  # noqa: E402

from tinygrad_bn.ops.loss import (binary_cross_entropy, binary_cross_entropy_with_logits,  # noqa: E402
                                  huber_loss, kl_div, l1_loss, smooth_l1_loss)

_rng = np.random.default_rng(7)
PROBS = _rng.uniform(0.05, 0.95, (3, 4))
SOFT_TARGETS = _rng.uniform(0.0, 1.0, (3, 4))
LOGITS = _rng.standard_normal((3, 4)) * 3
ROW_WEIGHT = _rng.uniform(0.5, 2.0, (4,))
LOG_Q = np.log(_rng.dirichlet(np.ones(4), 3))
P = _rng.dirichlet(np.ones(4), 3)

#: name -> (ours, PyTorch's, inputs); the first two inputs get gradients, the rest are constants
ELEMENTWISE = {
    "bce": (binary_cross_entropy, TF.binary_cross_entropy, [PROBS, SOFT_TARGETS]),
    "bce_weight": (binary_cross_entropy, TF.binary_cross_entropy, [PROBS, SOFT_TARGETS, ROW_WEIGHT]),
    "bce_logits": (binary_cross_entropy_with_logits, TF.binary_cross_entropy_with_logits, [LOGITS, SOFT_TARGETS]),
    "bce_logits_weight_pos_weight": (
        lambda x, y, w, p, **k: binary_cross_entropy_with_logits(x, y, w, pos_weight=p, **k),
        lambda x, y, w, p, **k: TF.binary_cross_entropy_with_logits(x, y, w, pos_weight=p, **k),
        [LOGITS, SOFT_TARGETS, ROW_WEIGHT, ROW_WEIGHT[::-1].copy()]),
    "l1": (l1_loss, TF.l1_loss, [LOGITS, SOFT_TARGETS]),
    "smooth_l1_beta0": (lambda x, y, **k: smooth_l1_loss(x, y, beta=0.0, **k),
                        lambda x, y, **k: TF.smooth_l1_loss(x, y, beta=0.0, **k), [LOGITS, SOFT_TARGETS]),
    "smooth_l1": (smooth_l1_loss, TF.smooth_l1_loss, [LOGITS, SOFT_TARGETS]),
    "smooth_l1_beta2": (lambda x, y, **k: smooth_l1_loss(x, y, beta=2.0, **k),
                        lambda x, y, **k: TF.smooth_l1_loss(x, y, beta=2.0, **k), [LOGITS, SOFT_TARGETS]),
    "huber": (huber_loss, TF.huber_loss, [LOGITS, SOFT_TARGETS]),
    "huber_delta05": (lambda x, y, **k: huber_loss(x, y, delta=0.5, **k),
                      lambda x, y, **k: TF.huber_loss(x, y, delta=0.5, **k), [LOGITS, SOFT_TARGETS]),
    "kl_div": (kl_div, TF.kl_div, [LOG_Q, P]),
    "kl_div_log_target": (lambda x, y, **k: kl_div(x, y, log_target=True, **k),
                          lambda x, y, **k: TF.kl_div(x, y, log_target=True, **k), [LOG_Q, np.log(P)]),
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_elementwise_loss_matches_torch(device, name, reduction):
    ours, theirs, arrays = ELEMENTWISE[name]
    x, y, *constants = arrays
    ours_c = [tg.tensor(c, device=device) for c in constants]
    theirs_c = [torch.tensor(c) for c in constants]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # kl_div's 'mean' warning, in both frameworks
        check_torch(lambda a, b: ours(a, b, *ours_c, reduction=reduction),
                    lambda a, b: theirs(a, b, *theirs_c, reduction=reduction), [x.shape, y.shape],
                    device=device, arrays=[x, y], atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_elementwise_loss_gradcheck_and_double_backward(device, name):
    ours, _, arrays = ELEMENTWISE[name]
    x, y, *constants = arrays
    constants = [tg.tensor(c, device=device) for c in constants]
    if name.startswith(("l1", "smooth_l1_beta0")):
        y = x + np.sign(x - y) * 0.5   # keep |x - y| away from 0, where |.| has a kink
    check_grads(lambda a, b: ours(a, b, *constants, reduction="sum"), [x.shape, y.shape], device=device,
                arrays=[x, y])


@pytest.mark.parametrize("name", ["smooth_l1", "smooth_l1_beta2", "huber", "huber_delta05"])
def test_piecewise_losses_gradcheck_away_from_the_switch(name):
    ours, _, _ = ELEMENTWISE[name]
    x = np.array([[-3.0, -0.2, 0.1], [0.7, 1.9, 4.0]])
    check_grads(lambda a, b: ours(a, b, reduction="sum"), [x.shape, x.shape], arrays=[x, np.zeros_like(x) + 0.05])


def test_kl_div_batchmean_against_numpy():
    """batchmean = sum_i sum_k p log(p / q) / N, the KL divergence per sample; p = 0 terms are 0."""
    p = np.array([[0.5, 0.5, 0.0], [0.1, 0.2, 0.7]])
    q = np.array([[0.25, 0.25, 0.5], [0.3, 0.3, 0.4]])
    terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1) / q), 0)
    got = kl_div(tg.tensor(np.log(q)), tg.tensor(p), reduction="batchmean").item()
    assert got == pytest.approx(terms.sum() / 2, rel=1e-14)


@needs_torch
def test_bce_at_the_edges_matches_torch():
    """x of exactly 0 or 1: the logs are clamped at -100 (finite loss), the input gradient is
    (x - y) / max(x (1 - x), 1e-12); logits of 0, +-800: softplus neither overflows nor loses 1/2."""
    x, y = np.array([0.0, 1.0, 0.5, 1e-20]), np.array([1.0, 0.0, 0.5, 1.0])
    check_torch(lambda a, b: binary_cross_entropy(a, b, reduction="sum"),
                lambda a, b: TF.binary_cross_entropy(a, b, reduction="sum"), [x.shape, y.shape],
                arrays=[x, y], grad=False)
    a = tg.tensor(x, requires_grad=True)
    binary_cross_entropy(a, tg.tensor(y), reduction="sum").backward()
    np.testing.assert_allclose(a.grad.numpy(), [-1e12, 1e12, 0.0, -1e12], rtol=1e-9)
    logits, t = np.array([0.0, 0.0, 800.0, -800.0]), np.array([1.0, 0.0, 0.0, 1.0])
    check_torch(lambda a, b: binary_cross_entropy_with_logits(a, b, reduction="none"),
                lambda a, b: TF.binary_cross_entropy_with_logits(a, b, reduction="none"), [(4,), (4,)],
                arrays=[logits, t])


def test_bce_with_logits_at_zero_logits_has_the_true_slope():
    """d/dx at x = 0 is sigmoid(0) - y = 0.5 - y; composing relu and abs would give 0 - y."""
    x = tg.tensor(np.zeros(2), requires_grad=True)
    binary_cross_entropy_with_logits(x, tg.tensor([1.0, 0.0]), reduction="sum").backward()
    np.testing.assert_allclose(x.grad.numpy(), [-0.5, 0.5], rtol=1e-15)


@pytest.mark.parametrize("fn, exc, pattern", [
    (lambda: binary_cross_entropy(tg.tensor([0.5, 1.2]), tg.tensor([0.0, 1.0])), RuntimeError,
     r"binary_cross_entropy: all elements of input should be between 0 and 1, got values in \[0.5, 1.2"),
    (lambda: binary_cross_entropy(tg.tensor([0.5, 0.2]), tg.tensor([[0.0, 1.0]])), ValueError,
     r"binary_cross_entropy: Using a target size \(\[1, 2\]\) that is different to the input size \(\[2\]\)"),
    (lambda: binary_cross_entropy(tg.tensor([0.5]), tg.tensor([1.0]), reduction="avg"), ValueError,
     r"binary_cross_entropy: 'avg' is not a valid value for reduction"),
    (lambda: binary_cross_entropy(tg.tensor([0.5, 0.5]), tg.tensor([1.0, 0.0]), weight=tg.ones(3)), RuntimeError,
     r"binary_cross_entropy: weight of shape \[3\] cannot be broadcast to the input's shape \[2\]"),
    (lambda: binary_cross_entropy_with_logits(tg.ones(2, 3), tg.ones(2)), ValueError,
     r"binary_cross_entropy_with_logits: Target size \(\[2\]\) must be the same as input size \(\[2, 3\]\)"),
    (lambda: binary_cross_entropy_with_logits(tg.ones(2, 3), tg.ones(2, 3), pos_weight=tg.ones(2)), RuntimeError,
     r"binary_cross_entropy_with_logits: pos_weight of shape \[2\] cannot be broadcast to the input's shape \[2, 3\]"),
    (lambda: binary_cross_entropy_with_logits(tg.tensor([1, 0]), tg.tensor([1.0, 0.0])), TypeError,
     r"binary_cross_entropy_with_logits: expected a floating-point input, got dtype int64"),
    (lambda: l1_loss(tg.ones(2), [1.0, 2.0]), TypeError, r"l1_loss: expected target to be a Tensor, got list"),
    (lambda: l1_loss([1.0], tg.ones(1)), TypeError, r"l1_loss: expected a Tensor as input, got list"),
    (lambda: smooth_l1_loss(tg.ones(2), tg.ones(2), beta=-1.0), RuntimeError,
     r"smooth_l1_loss does not support negative values for beta, got beta=-1.0"),
    (lambda: huber_loss(tg.ones(2), tg.ones(2), delta=0.0), RuntimeError,
     r"huber_loss does not support non-positive values for delta, got delta=0.0"),
    (lambda: huber_loss(tg.ones(2), tg.ones(2), delta="1"), TypeError, r"huber_loss: delta must be a number, got str"),
    (lambda: kl_div(tg.ones(2), tg.ones(2), reduction="batch"), ValueError,
     r"kl_div: 'batch' is not a valid value for reduction; expected 'none', 'batchmean', 'mean' or 'sum'"),
    (lambda: kl_div(tg.ones(2), tg.ones(2), log_target=1), TypeError, r"kl_div: log_target must be a bool, got int"),
])
def test_elementwise_loss_bad_arguments(fn, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fn()


def test_shape_mismatch_warns_as_pytorch_does():
    with pytest.warns(UserWarning, match=r"l1_loss: Using a target size \(\[1\]\) that is different to the input size \(\[3\]\)"):
        l1_loss(tg.ones(3), tg.ones(1))
    with pytest.warns(UserWarning, match=r"kl_div: reduction: 'mean' divides the total loss"):
        kl_div(tg.ones(2), tg.ones(2))
