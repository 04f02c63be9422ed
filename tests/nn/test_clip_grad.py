"""Gradient clipping (tinygrad_bn/nn/utils/clip_grad.py) against torch.nn.utils: the returned total
norm, the clipped gradients, every norm type, non-finite norms, and parameters without a grad."""
import math

import numpy as np
import pytest

import tinygrad_bn as tg
from tests.helpers import needs_torch, torch
from tinygrad_bn.nn.utils import clip_grad_norm_, clip_grad_value_

SHAPES = [(3, 4), (5,), (), (2, 0)]  # a 0-d and an empty gradient too


def _pairs(scale, dtype=np.float64, nan=False, seed=0, shapes=SHAPES):
    """Parameters with the same gradients in both frameworks; the last one has no gradient."""
    rng = np.random.default_rng(seed)
    ours, theirs = [], []
    for shape in shapes:
        g = (rng.standard_normal(shape) * scale).astype(dtype)
        if nan and g.size:
            g.reshape(-1)[0] = np.nan
        p = tg.zeros(*shape, dtype=tg.float64, requires_grad=True)
        q = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
        p.grad, q.grad = tg.tensor(g), torch.tensor(g)
        ours.append(p)
        theirs.append(q)
    ours.append(tg.zeros(2, requires_grad=True))
    theirs.append(torch.zeros(2, requires_grad=True))
    return ours, theirs


@needs_torch
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.5, math.inf, -math.inf, 0.0, "inf"])
@pytest.mark.parametrize("scale,max_norm", [(10.0, 1.0), (0.01, 5.0)])  # clipped, and left alone
def test_clip_grad_norm_matches_torch(norm_type, scale, max_norm):
    infinite = norm_type in (math.inf, -math.inf, "inf")  # no identity: PyTorch refuses an empty gradient
    ours, theirs = _pairs(scale, shapes=SHAPES[:-1] if infinite else SHAPES)
    total = clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    ref = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    assert isinstance(total, tg.Tensor) and total.shape == () and total.dtype == tg.float64
    np.testing.assert_allclose(total.item(), ref.item(), rtol=1e-12)
    for p, q in zip(ours, theirs):
        if q.grad is None:
            assert p.grad is None
        else:
            np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-12, atol=0)


@needs_torch
def test_clip_grad_norm_single_tensor_and_float32():
    g = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32) * 7
    p, q = tg.zeros(4, 3, requires_grad=True), torch.zeros(4, 3, requires_grad=True)
    p.grad, q.grad = tg.tensor(g), torch.tensor(g)
    total, ref = clip_grad_norm_(p, 2.0), torch.nn.utils.clip_grad_norm_(q, 2.0)
    assert total.dtype == tg.float32
    np.testing.assert_allclose(total.item(), ref.item(), rtol=1e-6)
    np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-6)
    assert np.linalg.norm(p.grad.numpy()) <= 2.0 + 1e-5


@needs_torch
def test_clip_grad_norm_non_finite():
    ours, theirs = _pairs(1.0, nan=True)
    with pytest.raises(RuntimeError, match=r"clip_grad_norm_: the total norm of order 2.0 for gradients from "
                                           r"`parameters` is non-finite \(nan\), so it cannot be clipped"):
        clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError):
        torch.nn.utils.clip_grad_norm_(theirs, 1.0, error_if_nonfinite=True)
    total = clip_grad_norm_(ours, 1.0)  # scaled by the non-finite norm anyway, as PyTorch does
    ref = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert math.isnan(total.item()) and math.isnan(ref.item())
    for p, q in zip(ours[:2], theirs[:2]):
        np.testing.assert_array_equal(np.isnan(p.grad.numpy()), np.isnan(q.grad.numpy()))


@needs_torch
def test_clip_grad_norm_inf_of_an_empty_gradient_raises_as_in_torch():
    ours, theirs = _pairs(1.0)
    with pytest.raises(RuntimeError):
        torch.nn.utils.clip_grad_norm_(theirs, 1.0, norm_type=math.inf)
    with pytest.raises(RuntimeError, match="clip_grad_norm_: cannot compute the inf norm of an empty gradient"):
        clip_grad_norm_(ours, 1.0, norm_type=math.inf)


def test_clip_grad_norm_without_gradients_returns_zero():
    total = clip_grad_norm_([tg.zeros(3, requires_grad=True)], 1.0)
    assert total.shape == () and total.item() == 0.0


def test_clip_grad_norm_bumps_the_gradient_version():
    p = tg.zeros(3, requires_grad=True)
    p.grad = tg.tensor([3.0, 4.0, 0.0])
    before = p.grad._version[0]
    assert clip_grad_norm_([p], 1.0).item() == pytest.approx(5.0)
    assert p.grad._version[0] > before
    np.testing.assert_allclose(p.grad.numpy(), [0.6, 0.8, 0.0], rtol=1e-5)


def test_clip_grad_errors():
    with pytest.raises(TypeError, match="clip_grad_norm_: expected parameters to be Tensors, got list at position 0"):
        clip_grad_norm_([[1.0]], 1.0)
    with pytest.raises(TypeError, match="clip_grad_value_: expected parameters to be Tensors"):
        clip_grad_value_([3], 1.0)


@needs_torch
@pytest.mark.parametrize("clip_value", [0.5, 0.0, 10.0])
def test_clip_grad_value_matches_torch(clip_value):
    ours, theirs = _pairs(2.0)
    assert clip_grad_value_(ours, clip_value) is None
    torch.nn.utils.clip_grad_value_(theirs, clip_value)
    for p, q in zip(ours, theirs):
        if q.grad is not None:
            np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy())


def test_clip_grad_on_every_device(device):
    p = tg.zeros(2, device=device, requires_grad=True)
    p.grad = tg.tensor([6.0, 8.0], device=device)
    total = clip_grad_norm_(p, 5.0)
    assert total.device == device and total.item() == pytest.approx(10.0)
    clip_grad_value_(p, 1.0)
    np.testing.assert_allclose(p.grad.numpy(), [1.0, 1.0], rtol=1e-5)
