"""leaky_relu, softmax, log_softmax: PyTorch parity, gradcheck + gradgradcheck, stability, errors."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn.ops.activation import leaky_relu, log_softmax, softmax
from tests.helpers import check_grads, check_torch, torch


@pytest.mark.parametrize("slope", [0.01, 0.2, 0.0, -0.5])
def test_leaky_relu_parity(device, slope):
    check_torch(lambda x: leaky_relu(x, slope),
                lambda x: torch.nn.functional.leaky_relu(x, slope), [(3, 5)], device=device)


@pytest.mark.parametrize("fn, torch_fn", [(softmax, "softmax"), (log_softmax, "log_softmax")])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_parity(device, fn, torch_fn, dim):
    check_torch(lambda x: fn(x, dim), lambda x: getattr(torch, torch_fn)(x, dim), [(3, 4, 2)],
                device=device)


@pytest.mark.parametrize("fn, torch_fn", [(softmax, "softmax"), (log_softmax, "log_softmax")])
def test_softmax_parity_float32(device, fn, torch_fn):
    check_torch(lambda x: fn(x, 1), lambda x: getattr(torch, torch_fn)(x, 1), [(4, 6)],
                device=device, dtype=np.float32, atol=1e-5, rtol=1e-4)


def test_leaky_relu_grads(device):
    check_grads(lambda x: leaky_relu(x, 0.2), [(2, 3)], device=device)


@pytest.mark.parametrize("dim", [0, 1])
def test_softmax_grads(device, dim):
    check_grads(lambda x: softmax(x, dim), [(2, 3)], device=device)


@pytest.mark.parametrize("dim", [0, -1])
def test_log_softmax_grads(device, dim):
    check_grads(lambda x: log_softmax(x, dim), [(3, 2)], device=device)


def test_large_logits_stay_finite(device):
    """exp(1000) overflows; subtracting the row maximum first keeps every result finite."""
    x_np = np.array([[1000.0, 0.0, -1000.0], [-500.0, -500.0, -499.0]], dtype=np.float32)
    check_torch(lambda x: log_softmax(x, 1), lambda x: torch.log_softmax(x, 1), [x_np.shape],
                device=device, arrays=[x_np], dtype=np.float32)
    check_torch(lambda x: softmax(x, 1), lambda x: torch.softmax(x, 1), [x_np.shape],
                device=device, arrays=[x_np], dtype=np.float32)


def test_softmax_rows_sum_to_one(device):
    y = softmax(tg.randn(4, 7, device=device), dim=1)
    np.testing.assert_allclose(y.sum(1).numpy(), np.ones(4), rtol=1e-6)


def test_implicit_dim_warns_and_follows_pytorch():
    x = tg.randn(2, 3)
    with pytest.warns(UserWarning, match="Implicit dimension choice for softmax"):
        y = softmax(x)
    np.testing.assert_allclose(y.numpy(), softmax(x, 1).numpy())


def test_leaky_relu_inplace_on_non_leaf():
    x = tg.tensor([-2.0, 3.0], requires_grad=True)
    h = x * 1
    out = leaky_relu(h, 0.5, inplace=True)
    assert out is h
    np.testing.assert_allclose(h.detach().numpy(), [-1.0, 3.0])
    h.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.5, 1.0])


def test_integer_input_is_rejected():
    with pytest.raises(TypeError, match="softmax: expected a floating-point tensor, got dtype int64"):
        softmax(tg.tensor([1, 2]), 0)


def test_dim_out_of_range():
    with pytest.raises(IndexError, match="log_softmax: Dimension out of range"):
        log_softmax(tg.randn(2, 3), 2)


def test_non_tensor_input():
    with pytest.raises(TypeError, match="leaky_relu: expected a Tensor"):
        leaky_relu([1.0, -1.0])
