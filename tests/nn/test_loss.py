"""The loss modules (tinygrad_bn/nn/loss.py): each is its functional form with PyTorch's
constructor arguments (reduction, the legacy size_average/reduce, beta, delta, log_target,
weight and pos_weight as buffers), checked against PyTorch's modules."""
import warnings

import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.nn as nn
from tests.helpers import needs_torch, torch

rng = np.random.default_rng(3)
X, PROB, T = rng.standard_normal((4, 3)), rng.uniform(0.1, 0.9, (4, 3)), rng.uniform(0, 1, (4, 3))
W = rng.uniform(0.5, 2, (3,))

CASES = [
    ("BCELoss", {}, PROB, T), ("BCELoss", {"reduction": "sum"}, PROB, T),
    ("BCEWithLogitsLoss", {}, X, T), ("BCEWithLogitsLoss", {"reduction": "none"}, X, T),
    ("L1Loss", {}, X, T), ("L1Loss", {"size_average": False}, X, T),
    ("SmoothL1Loss", {"beta": 0.3}, X, T), ("HuberLoss", {"delta": 0.4, "reduction": "sum"}, X, T),
    ("KLDivLoss", {"reduction": "batchmean"}, np.log(PROB), T), ("KLDivLoss", {"log_target": True, "reduction": "sum"}, X, T),
]


@needs_torch
@pytest.mark.parametrize("name, kwargs, x, y", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_loss_module_matches_torch(name, kwargs, x, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy-argument deprecation warning, in both
        ours, theirs = getattr(nn, name)(**kwargs), getattr(torch.nn, name)(**kwargs)
    assert ours.reduction == theirs.reduction
    xo, xt = tg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out, ref = ours(xo, tg.tensor(y)), theirs(xt, torch.tensor(y))
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=1e-12, atol=1e-14)
    out.sum().backward()
    ref.sum().backward()
    np.testing.assert_allclose(xo.grad.numpy(), xt.grad.numpy(), rtol=1e-12, atol=1e-14)


@needs_torch
def test_bce_with_logits_weight_and_pos_weight_are_buffers():
    ours = nn.BCEWithLogitsLoss(weight=tg.tensor(W), pos_weight=tg.tensor(W[::-1].copy()))
    theirs = torch.nn.BCEWithLogitsLoss(weight=torch.tensor(W), pos_weight=torch.tensor(W[::-1].copy()))
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict()) == ["pos_weight", "weight"]
    np.testing.assert_allclose(ours(tg.tensor(X), tg.tensor(T)).item(), theirs(torch.tensor(X), torch.tensor(T)).item(),
                               rtol=1e-13)


def test_bce_loss_weight_is_a_buffer():
    m = nn.BCELoss(weight=tg.tensor(W))
    assert list(m.state_dict()) == ["weight"] and list(m.parameters()) == []


@pytest.mark.parametrize("make, exc, pattern", [
    (lambda: nn.L1Loss(reduction="avg"), ValueError, r"L1Loss: 'avg' is not a valid value for reduction"),
    (lambda: nn.KLDivLoss(reduction="avg"), ValueError, r"KLDivLoss: 'avg' is not a valid value for reduction; expected 'none', 'batchmean'"),
    (lambda: nn.HuberLoss(delta=-1.0)(tg.ones(2), tg.ones(2)), RuntimeError, r"huber_loss does not support non-positive values for delta"),
    (lambda: nn.BCELoss()(tg.tensor([2.0]), tg.tensor([1.0])), RuntimeError, r"binary_cross_entropy: all elements of input should be between 0 and 1"),
])
def test_loss_module_bad_arguments(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()
