"""dropout and dropout2d: reproducibility, expectation, mask reuse in backward, eval identity,
whole-channel masks, gradcheck, errors."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn.ops.dropout import dropout, dropout2d
from tests.helpers import check_grads


def test_reproducible_with_manual_seed(device):
    x = tg.ones(4, 50, device=device)
    tg.manual_seed(7)
    a = dropout(x, 0.3).numpy()
    tg.manual_seed(7)
    b = dropout(x, 0.3).numpy()
    c = dropout(x, 0.3).numpy()  # the generator moved on: a different mask
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_mean_preserved_and_drop_rate(device, p):
    n = 200_000
    y = dropout(tg.ones(n, device=device), p).numpy()
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / (1 - p), rtol=1e-6)  # survivors scaled by 1/(1-p)
    # the mean of n samples has std sqrt(p / (1 - p) / n) < 0.005 here; allow 5 of them
    assert abs(y.mean() - 1) < 0.025, y.mean()
    assert abs((~kept).mean() - p) < 0.01


def test_backward_reuses_the_forward_mask(device):
    x = tg.ones(6, 8, device=device, requires_grad=True)
    y = dropout(x, 0.5)
    g = tg.randn(6, 8, device=device)
    y.backward(g)
    # dy/dx = mask / (1 - p) = y / x elementwise, and x = 1
    np.testing.assert_allclose(x.grad.numpy(), (g * y.detach()).numpy())


def test_eval_and_p0_are_identity(device):
    x = tg.randn(3, 4, device=device, requires_grad=True)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    assert dropout2d(x.reshape(1, 3, 2, 2), 0.5, training=False).shape == (1, 3, 2, 2)


def test_p1_drops_everything(device):
    x = tg.randn(3, 4, device=device, requires_grad=True)
    y = dropout(x, 1.0)
    assert not y.detach().numpy().any()
    y.sum().backward()
    assert not x.grad.numpy().any()


@pytest.mark.parametrize("shape", [(4, 6, 3, 3), (6, 3, 3)])
def test_dropout2d_zeroes_whole_channels(device, shape):
    y = dropout2d(tg.ones(*shape, device=device), 0.5).numpy()
    per_channel = y.reshape(-1, 9)
    for row in per_channel:  # each (H, W) plane is either all dropped or all kept and scaled
        assert np.all(row == 0) or np.all(row == 2.0), row
    assert 0 < (per_channel[:, 0] == 0).sum() < len(per_channel)


def test_dropout2d_backward_uses_channel_mask(device):
    x = tg.randn(2, 5, 2, 2, device=device, requires_grad=True)
    y = dropout2d(x, 0.4)
    y.sum().backward()
    kept = (y.detach().numpy() != 0).any(axis=(2, 3))
    expected = np.broadcast_to(np.where(kept, 1 / 0.6, 0.0)[:, :, None, None], x.shape)
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-6)


def test_inplace_on_non_leaf(device):
    x = tg.ones(3, 10, device=device, requires_grad=True)
    h = x * 1
    assert dropout(h, 0.5, inplace=True) is h
    h.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), h.detach().numpy())


def _seeded(fn, p):
    def call(x):
        tg.manual_seed(3)  # the same mask in every call gradcheck makes
        return fn(x, p)
    return call


def test_dropout_grads(device):
    check_grads(_seeded(dropout, 0.3), [(3, 4)], device=device)


def test_dropout2d_grads(device):
    check_grads(_seeded(dropout2d, 0.5), [(2, 3, 2, 2)], device=device)


@pytest.mark.parametrize("fn", [dropout, dropout2d])
@pytest.mark.parametrize("p", [1.5, -0.1])
def test_bad_probability(fn, p):
    with pytest.raises(ValueError, match=f"dropout probability has to be between 0 and 1, but got {p}"):
        fn(tg.randn(1, 2, 3, 3), p)


def test_dropout2d_needs_3d_or_4d():
    with pytest.raises(ValueError, match=r"dropout2d: expected a 4-D .* got shape \[2, 3\]"):
        dropout2d(tg.randn(2, 3))


def test_integer_input_is_rejected():
    with pytest.raises(TypeError, match="dropout: expected a floating-point tensor"):
        dropout(tg.tensor([1, 2, 3]), 0.5)
