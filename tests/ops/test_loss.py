"""cross_entropy, nll_loss, mse_loss: PyTorch parity (reductions, weight, ignore_index, label
smoothing, K-dim and probability targets), gradcheck + gradgradcheck, stability, errors."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn.ops.activation import log_softmax
from tinygrad_bn.ops.loss import cross_entropy, mse_loss, nll_loss
from tests.helpers import check_grads, check_torch, torch

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
