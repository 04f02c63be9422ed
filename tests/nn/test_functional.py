"""nn.functional: the PyTorch names exist and behave; linear is one graph node with a correct
first and second derivative; its argument errors name the shapes."""
import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.nn.functional as F
from tests.helpers import check_grads, check_torch, torch


def test_exports():
    for name in F.__all__:
        assert callable(getattr(F, name)), name


@pytest.mark.parametrize("shapes", [[(5, 4), (3, 4), (3,)], [(2, 3, 4), (5, 4), (5,)],
                                    [(4,), (2, 4), (2,)], [(3, 4), (2, 4)]], ids=str)
def test_linear_parity(device, shapes):
    check_torch(lambda *a: F.linear(*a), lambda *a: torch.nn.functional.linear(*a), shapes,
                device=device)


def test_linear_grads(device):
    check_grads(lambda x, w, b: F.linear(x, w, b), [(2, 2, 3), (2, 3), (2,)], device=device)
    check_grads(lambda x, w: F.linear(x, w), [(3,), (2, 3)], device=device)


def test_linear_is_one_node():
    x, w, b = tg.randn(2, 3), tg.randn(4, 3, requires_grad=True), tg.randn(4, requires_grad=True)
    node = F.linear(x, w, b).grad_fn
    assert node.name == "LinearBackward"
    assert node.next_edges[0] is None and node.next_edges[1] == (None, w) and node.next_edges[2] == (None, b)


def test_linear_errors():
    with pytest.raises(RuntimeError,
                       match=r"linear: mat1 and mat2 shapes cannot be multiplied \(6x4 and 3x5\)"):
        F.linear(tg.randn(2, 3, 4), tg.randn(5, 3))
    with pytest.raises(ValueError, match=r"linear: bias must have shape \[5\]"):
        F.linear(tg.randn(2, 3), tg.randn(5, 3), tg.randn(4))
    with pytest.raises(ValueError, match="linear: weight must be 2-D"):
        F.linear(tg.randn(2, 3), tg.randn(3))
    with pytest.raises(RuntimeError, match="mat1 and mat2 must have the same dtype"):
        F.linear(tg.randn(2, 3, dtype=tg.float64), tg.randn(5, 3))


def test_relu_inplace_and_aliases(device):
    x = tg.tensor([-1.0, 2.0], device=device)
    assert F.relu(x, inplace=True) is x
    np.testing.assert_array_equal(x.numpy(), [0.0, 2.0])
    np.testing.assert_array_equal(F.sigmoid(tg.zeros(2, device=device)).numpy(), [0.5, 0.5])
    np.testing.assert_array_equal(F.tanh(tg.zeros(1, device=device)).numpy(), [0.0])


def test_conv_and_pool_wrappers(device):
    x = tg.randn(1, 2, 6, 6, device=device)
    w = tg.randn(3, 2, 2, 2, device=device)
    assert F.conv2d(x, w, padding="same").shape == (1, 3, 6, 6)
    assert F.conv1d(x[:, :, 0], w[:, :, 0]).shape == (1, 3, 5)
    assert F.max_pool2d(x, 2).shape == (1, 2, 3, 3)
    assert F.avg_pool2d(x, 3, stride=1).shape == (1, 2, 4, 4)
    assert F.adaptive_avg_pool2d(x, (1, 2)).shape == (1, 2, 1, 2)
