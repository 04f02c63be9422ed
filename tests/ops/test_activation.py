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


# ---- gelu, silu, elu, hardtanh, relu6, prelu (issue 15) ----------------------------------------
import math  # noqa: E402

from tinygrad_bn.ops.activation import (_erf_array, elu, gelu, hardtanh, prelu, relu6,  # noqa: E402
                                        silu)

TF = torch.nn.functional
#: (ours, PyTorch's) on one input; the inputs include 0, the edges of hardtanh and relu6 exactly
UNARY = {
    "gelu": (gelu, lambda x: TF.gelu(x)),
    "gelu_tanh": (lambda x: gelu(x, approximate="tanh"), lambda x: TF.gelu(x, approximate="tanh")),
    "silu": (silu, TF.silu),
    "elu": (elu, TF.elu),
    "elu_alpha": (lambda x: elu(x, alpha=0.3), lambda x: TF.elu(x, alpha=0.3)),
    "hardtanh": (hardtanh, TF.hardtanh),
    "hardtanh_wide": (lambda x: hardtanh(x, -2.5, 0.5), lambda x: TF.hardtanh(x, -2.5, 0.5)),
    "relu6": (relu6, TF.relu6),
}
EDGES = np.array([[-9.0, -2.5, -1.0, 0.0, 0.5, 1.0, 6.0, 7.5],
                  [-40.0, -0.3, 0.2, 2.0, 3.0, 5.9, 12.0, 40.0]])


@pytest.mark.parametrize("name", list(UNARY))
def test_unary_activation_parity(device, name):
    ours, theirs = UNARY[name]
    check_torch(ours, theirs, [(3, 4, 5)], device=device)
    check_torch(ours, theirs, [EDGES.shape], device=device, arrays=[EDGES.copy()])  # 0 and the kinks


@pytest.mark.parametrize("name", list(UNARY))
def test_unary_activation_parity_float32(device, name):
    ours, theirs = UNARY[name]
    check_torch(ours, theirs, [(4, 6)], device=device, dtype=np.float32, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", [n for n in UNARY if not n.startswith(("hardtanh", "relu6"))])
def test_smooth_activation_grads(device, name):
    check_grads(UNARY[name][0], [(2, 3)], device=device)


@pytest.mark.parametrize("fn", [hardtanh, relu6, lambda x: hardtanh(x, -0.5, 2.0)])
def test_piecewise_linear_grads(device, fn):
    """gradcheck away from the kinks (a finite difference across one is not a derivative)."""
    x = np.array([[-3.0, -0.7, 0.3], [0.9, 1.6, 7.0]])
    check_grads(fn, [x.shape], device=device, arrays=[x])


def test_erf_matches_the_reference_to_float64_precision():
    x = np.concatenate([np.linspace(-7, 7, 4001), [0.0, 1e-300, -1e-8, 5.99, 6.0, 6.01]])
    reference = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(_erf_array(np, x), reference, rtol=1e-14, atol=5e-16)
    np.testing.assert_allclose(_erf_array(np, x.astype(np.float32)), reference.astype(np.float32),
                               rtol=1.2e-7, atol=6e-8)


def test_gelu_against_a_plain_reference():
    x = np.linspace(-5, 5, 101)
    expected = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    np.testing.assert_allclose(gelu(tg.tensor(x)).numpy(), expected, rtol=1e-12, atol=1e-14)  # 1 + erf cancels for x < 0, in both


@pytest.mark.parametrize("dtype", [tg.float16, tg.float32, tg.float64])
@pytest.mark.parametrize("fn", [gelu, silu, elu, hardtanh, relu6], ids=lambda f: f.__name__)
def test_output_keeps_the_input_dtype(fn, dtype):
    assert fn(tg.randn(3).to(dtype)).dtype == dtype


def test_extreme_inputs_stay_finite():
    x = tg.tensor([-1e4, -100.0, 100.0, 1e4], dtype=tg.float32)
    for fn in (gelu, silu, elu, lambda t: gelu(t, "tanh")):
        assert np.isfinite(fn(x).numpy()).all()


def test_hardtanh_and_relu6_keep_integers():
    x = tg.tensor([-3, 0, 4, 8])
    np.testing.assert_array_equal(relu6(x).numpy(), [0, 0, 4, 6])
    np.testing.assert_array_equal(hardtanh(x, -1.5, 1.5).numpy(), [-1, 0, 1, 1])
    assert relu6(x).dtype == tg.int64


@pytest.mark.parametrize("name, ours, theirs", [
    ("silu", lambda x: silu(x, inplace=True), lambda x: TF.silu(x, inplace=True)),
    ("elu", lambda x: elu(x, 0.7, inplace=True), lambda x: TF.elu(x, 0.7, inplace=True)),
    ("hardtanh", lambda x: hardtanh(x, -0.5, 0.5, inplace=True), lambda x: TF.hardtanh(x, -0.5, 0.5, inplace=True)),
    ("relu6", lambda x: relu6(x, inplace=True), lambda x: TF.relu6(x, inplace=True)),
])
def test_inplace_on_a_non_leaf(name, ours, theirs):
    """The result lands in the input's memory, and the gradient still uses the values before the write."""
    check_torch(lambda x: _same(ours, x * 3), lambda x: theirs(x * 3), [(2, 5)])


def _same(fn, h):
    out = fn(h)
    assert out is h
    return out


@pytest.mark.parametrize("fn", [lambda x: silu(x, inplace=True), lambda x: elu(x, inplace=True),
                                lambda x: relu6(x, inplace=True)])
def test_inplace_on_a_leaf_that_requires_grad_is_refused(fn):
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad"):
        fn(tg.randn(3, requires_grad=True))


@pytest.mark.parametrize("x_shape, w_shape", [((4, 3), (3,)), ((2, 3, 5), (3,)), ((2, 3, 2, 2), (3,)),
                                              ((2, 3, 2, 2), (1,)), ((5,), (1,)), ((), ()), ((4, 3), ())])
def test_prelu_parity(device, x_shape, w_shape):
    check_torch(prelu, TF.prelu, [x_shape, w_shape], device=device)


def test_prelu_at_zero_uses_the_slope():
    """PyTorch: x > 0 ? x : w x, so the gradient at exactly 0 is w."""
    x = np.array([[-1.0, 0.0, 2.0]])
    check_torch(prelu, TF.prelu, [x.shape, (1,)], arrays=[x, np.array([0.3])])


@pytest.mark.parametrize("x_shape, w_shape", [((3, 2, 2), (2,)), ((4,), (1,)), ((2, 3), ())])
def test_prelu_grads(device, x_shape, w_shape):
    check_grads(prelu, [x_shape, w_shape], device=device)


@pytest.mark.parametrize("fn,exc,pattern", [
    (lambda: gelu(tg.ones(2), approximate="erf"), RuntimeError, r"gelu: approximate argument must be either none or tanh, got 'erf'"),
    (lambda: gelu(tg.ones(2), approximate=None), TypeError, r"gelu\(\): argument 'approximate' must be str, not NoneType"),
    (lambda: gelu(tg.tensor([1, 2])), NotImplementedError, r"gelu: not implemented for dtype int64; expected a floating-point tensor"),
    (lambda: silu(tg.tensor([True])), NotImplementedError, r"silu: not implemented for dtype bool; expected a floating-point tensor"),
    (lambda: elu(tg.tensor([1, 2])), NotImplementedError, r"elu: not implemented for dtype int64"),
    (lambda: elu(tg.ones(2), alpha="a"), TypeError, r"elu\(\): argument 'alpha' must be a number, got str"),
    (lambda: silu([1.0]), TypeError, r"silu: expected a Tensor as input, got list"),
    (lambda: hardtanh(tg.ones(2), 2.0, 1.0), ValueError, r"hardtanh: min_val cannot be greater than max_val \(got min_val=2.0, max_val=1.0\)"),
    (lambda: hardtanh(tg.tensor([True])), RuntimeError, r"hardtanh: Bool inputs not supported"),
    (lambda: relu6(tg.tensor([True])), RuntimeError, r"relu6: Bool inputs not supported"),
    (lambda: prelu(tg.ones(2, 3), tg.ones(2)), RuntimeError, r"prelu: Mismatch of parameter numbers and input channel size. Found parameter numbers = 2 and channel size = 3 \(input shape \[2, 3\]"),
    (lambda: prelu(tg.ones(3), tg.ones(3)), RuntimeError, r"prelu: Mismatch .* parameter numbers = 3 and channel size = 1"),
    (lambda: prelu(tg.ones(2, 3), tg.ones(1, 3)), RuntimeError, r"prelu: Expected `weight` to be a scalar or 1D tensor, but got: ndim = 2 \(weight shape \[1, 3\]\)"),
    (lambda: prelu(tg.tensor(2.0), tg.ones(2)), RuntimeError, r"prelu: Not allow zero-dim input tensor with 2 weights"),
    (lambda: prelu(tg.ones(2, 3), tg.ones(3, dtype=tg.float64)), RuntimeError, r"prelu: Type promoting not supported. Got float32 \(input\) and float64 \(weight\)"),
    (lambda: prelu(tg.ones(2, 3), 0.25), TypeError, r"prelu\(\): argument 'weight' must be a Tensor, got float"),
    (lambda: prelu(tg.tensor([1, 2]), tg.tensor([1])), NotImplementedError, r"prelu: not implemented for dtype int64; expected a floating-point input"),
])
def test_new_activation_bad_arguments(fn, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fn()


# ---- softplus ---------------------------------------------------------------------------------
from tinygrad_bn.ops.activation import softplus  # noqa: E402


@pytest.mark.parametrize("beta, threshold", [(1.0, 20.0), (2.0, 5.0), (0.5, 20.0), (-1.0, 20.0)])
def test_softplus_matches_torch(device, beta, threshold):
    x = np.array([[-30.0, -1.0, 0.0, 0.5], [2.4, 2.6, 19.9, 40.0]])
    check_torch(lambda a: softplus(a, beta, threshold), lambda a: torch.nn.functional.softplus(a, beta, threshold),
                [x.shape], device=device, arrays=[x], atol=1e-12, rtol=1e-12)


def test_softplus_gradcheck_and_double_backward(device):
    check_grads(lambda a: softplus(a, 1.5, 100.0), [(2, 3)], device=device)


def test_softplus_is_stable_and_exact_at_zero():
    x = tg.tensor([-800.0, 0.0, 800.0], dtype=tg.float64, requires_grad=True)
    y = softplus(x, threshold=float("inf"))
    np.testing.assert_allclose(y.detach().numpy(), [0.0, np.log(2), 800.0], rtol=1e-15)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.0, 0.5, 1.0], rtol=1e-15)


@pytest.mark.parametrize("fn, exc, pattern", [
    (lambda: softplus(tg.ones(2), beta=0), ValueError, r"softplus: beta must be non-zero"),
    (lambda: softplus(tg.tensor([1, 2])), NotImplementedError, r"softplus: not implemented for dtype int64"),
    (lambda: softplus(tg.ones(2), threshold="a"), TypeError, r"softplus\(\): argument 'threshold' must be a number, got str"),
])
def test_softplus_bad_arguments(fn, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fn()
