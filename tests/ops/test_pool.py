"""Pooling (tinygrad_bn/ops/pool.py): PyTorch parity of outputs and gradients (ties, -inf and
NaN included), gradcheck + gradgradcheck in float64, and clear errors."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tests.helpers import check_grads, check_torch, needs_torch, torch
from tinygrad_bn.ops.pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d

F = torch.nn.functional

# (input shape, keyword arguments); dilation is dropped for avg_pool2d, which has none
POOL_CASES = [
    ((2, 3, 8, 8), dict(kernel_size=2)),
    ((2, 3, 7, 8), dict(kernel_size=3, stride=2, padding=1)),
    ((1, 2, 7, 9), dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0))),
    ((2, 2, 7, 8), dict(kernel_size=3, stride=2, ceil_mode=True)),
    ((2, 2, 8, 7), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ((2, 2, 6, 6), dict(kernel_size=2, stride=1, padding=1)),                     # overlapping
    ((3, 7, 8), dict(kernel_size=3, stride=(1, 2))),                              # unbatched
    ((2, 2, 9, 8), dict(kernel_size=(2, 3), stride=3, ceil_mode=True)),
]
MAX_ONLY_CASES = [
    ((2, 2, 9, 9), dict(kernel_size=3, stride=2, padding=1, dilation=2)),
    ((1, 2, 8, 10), dict(kernel_size=2, stride=(2, 3), padding=1, dilation=(1, 3), ceil_mode=True)),
]


def _max(op, kwargs):
    return lambda x: op(x, **kwargs)


def _avg(op, kwargs, count_include_pad):
    kwargs = {k: v for k, v in kwargs.items() if k != "dilation"}
    return lambda x: op(x, count_include_pad=count_include_pad, **kwargs)


# ---- max pooling ------------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("shape,kwargs", POOL_CASES + MAX_ONLY_CASES)
def test_max_pool2d_matches_torch(device, shape, kwargs):
    check_torch(_max(max_pool2d, kwargs), _max(F.max_pool2d, kwargs), [shape], device=device)


@needs_torch
def test_max_pool2d_return_indices_match_torch(device):
    kwargs = dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True, return_indices=True)
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 8))
    y, idx = max_pool2d(tg.tensor(x, device=device), **kwargs)
    y_ref, idx_ref = F.max_pool2d(torch.tensor(x), **kwargs)
    assert idx.dtype == tg.int64 and not idx.requires_grad
    np.testing.assert_array_equal(idx.cpu().numpy(), idx_ref.numpy())
    np.testing.assert_array_equal(y.cpu().numpy(), y_ref.numpy())


@needs_torch
@pytest.mark.parametrize("plane", [
    [[0, 1, 1, 0], [1, 0, 0, 1], [0, 1, 1, 0], [1, 1, 1, 1]],                   # ties: first max wins
    [[-np.inf] * 4] * 4,                                                         # -inf everywhere
    [[np.nan, 1, 2, 3], [4, np.nan, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]],    # NaN wins (last one)
])
def test_max_pool2d_ties_inf_and_nan_route_like_torch(device, plane):
    x = np.array([[plane, np.transpose(plane)]], dtype=np.float64)
    kwargs = dict(kernel_size=3, stride=1, padding=1)
    check_torch(_max(max_pool2d, kwargs), _max(F.max_pool2d, kwargs), None, device=device,
                arrays=[x], atol=1e-12, rtol=0)  # exact routing; sums may differ in order


@needs_torch
def test_max_pool2d_float32_matches_torch(device):
    kwargs = dict(kernel_size=3, stride=2, padding=1)
    check_torch(_max(max_pool2d, kwargs), _max(F.max_pool2d, kwargs), [(2, 3, 9, 8)],
                device=device, dtype=np.float32, atol=1e-6)


# ---- average pooling --------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("shape,kwargs", POOL_CASES)
def test_avg_pool2d_matches_torch(device, shape, kwargs, count_include_pad):
    check_torch(_avg(avg_pool2d, kwargs, count_include_pad), _avg(F.avg_pool2d, kwargs, count_include_pad),
                [shape], device=device)


@needs_torch
def test_avg_pool2d_float32_matches_torch(device):
    kwargs = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    check_torch(_avg(avg_pool2d, kwargs, False), _avg(F.avg_pool2d, kwargs, False), [(2, 3, 9, 8)],
                device=device, dtype=np.float32, atol=1e-5)


# ---- adaptive average pooling -----------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("shape,output_size", [
    ((2, 3, 8, 6), (4, 3)),        # divides the input
    ((2, 3, 8, 6), 1),             # global average
    ((2, 3, 7, 9), (3, 5)),        # general case: overlapping windows of varying size
    ((2, 3, 5, 4), (7, 6)),        # larger than the input
    ((2, 3, 7, 9), (None, 4)),     # None keeps the input size
    ((3, 7, 5), (2, 2)),           # unbatched
])
def test_adaptive_avg_pool2d_matches_torch(device, shape, output_size):
    check_torch(lambda x: adaptive_avg_pool2d(x, output_size),
                lambda x: F.adaptive_avg_pool2d(x, output_size), [shape], device=device)


@needs_torch
def test_adaptive_avg_pool2d_float32_matches_torch(device):
    check_torch(lambda x: adaptive_avg_pool2d(x, (3, 4)), lambda x: F.adaptive_avg_pool2d(x, (3, 4)),
                [(2, 3, 7, 9)], device=device, dtype=np.float32, atol=1e-6)


# ---- gradients of gradients -------------------------------------------------------------------
@pytest.mark.parametrize("fn,shape", [
    (lambda x: max_pool2d(x, 2, stride=1, padding=1), (1, 2, 3, 3)),
    (lambda x: max_pool2d(x, (2, 3), stride=2, dilation=(2, 1), ceil_mode=True), (1, 1, 5, 6)),
    (lambda x: avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), (1, 2, 4, 5)),
    (lambda x: avg_pool2d(x, 2, stride=1), (2, 3, 3)),
    (lambda x: adaptive_avg_pool2d(x, (2, 3)), (1, 2, 5, 4)),
])
def test_pool_gradcheck_and_double_backward(device, fn, shape):
    check_grads(fn, [shape], device=device)


def test_pool_graph_nodes():
    x = tg.randn(1, 2, 6, 6, requires_grad=True)
    y = max_pool2d(x, 3, stride=2, padding=1)
    assert y.grad_fn.name == "MaxPool2DWithIndicesBackward"
    assert y.grad_fn.attrs["kernel_size"] == (3, 3) and y.grad_fn.attrs["stride"] == (2, 2)
    assert y.grad_fn.saved_shapes() == {"argmax": (1, 2, 3, 3)}  # one small int per output
    assert avg_pool2d(x, 2).grad_fn.name == "AvgPool2DBackward"
    assert adaptive_avg_pool2d(x, 1).grad_fn.name == "AdaptiveAvgPool2DBackward"


def test_stride_defaults_to_kernel_size():
    x = tg.randn(1, 1, 6, 6)
    assert max_pool2d(x, 2).shape == (1, 1, 3, 3)
    assert avg_pool2d(x, 3).shape == (1, 1, 2, 2)


# ---- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("call,exc,pattern", [
    (lambda: max_pool2d(tg.ones(3, 8), 2), RuntimeError,
     r"max_pool2d: expected a non-empty 3-D \(C, H, W\) or 4-D \(N, C, H, W\) input, but got input of size \[3, 8\]"),
    (lambda: avg_pool2d(tg.ones(1, 1, 0, 4), 2), RuntimeError,
     r"avg_pool2d: expected a non-empty 3-D .* but got input of size \[1, 1, 0, 4\]"),
    (lambda: max_pool2d(tg.ones(1, 3, 8, 8), 3, padding=2), RuntimeError,
     r"max_pool2d: pad should be at most half of effective kernel size, but got pad=2, kernel_size=3 and dilation=1"),
    (lambda: avg_pool2d(tg.ones(1, 3, 8, 8), 2, padding=(0, 2)), RuntimeError,
     r"avg_pool2d: pad should be at most half of effective kernel size, but got pad=2, kernel_size=2"),
    (lambda: max_pool2d(tg.ones(1, 3, 2, 2), 3), RuntimeError,
     r"max_pool2d: Given input size: \(3x2x2\). Calculated output size: \(3x0x0\). Output size is too small"),
    (lambda: max_pool2d(tg.ones(1, 3, 8, 8), 0), RuntimeError,
     r"max_pool2d: kernel_size must be greater than zero, but got kernel_size=\(0, 0\)"),
    (lambda: max_pool2d(tg.ones(1, 3, 8, 8), 2, stride=(1, 0)), RuntimeError,
     r"max_pool2d: stride must be greater than zero, but got stride=\(1, 0\)"),
    (lambda: max_pool2d(tg.ones(1, 3, 8, 8), 2, dilation=0), RuntimeError,
     r"max_pool2d: dilation must be greater than zero"),
    (lambda: max_pool2d(tg.ones(1, 3, 8, 8), 2, padding=-1), RuntimeError,
     r"max_pool2d: pad must be non-negative, but got padding=\(-1, -1\)"),
    (lambda: max_pool2d(tg.ones(1, 3, 8, 8), (2, 2, 2)), RuntimeError,
     r"max_pool2d: expected kernel_size to be a single integer value or a list of 2 values to "
     r"match the pooling dimensions, but got kernel_size=\(2, 2, 2\)"),
    (lambda: max_pool2d(tg.ones(1, 3, 8, 8, dtype=tg.int64), 2), RuntimeError,
     r"max_pool2d: expected a floating-point input, got dtype int64"),
    (lambda: avg_pool2d(np.ones((1, 3, 8, 8)), 2), TypeError,
     r"avg_pool2d: expected input to be a Tensor, got ndarray"),
    (lambda: adaptive_avg_pool2d(tg.ones(1, 3, 8, 8), (2, 2, 2)), RuntimeError,
     r"adaptive_avg_pool2d: output_size must be a non-negative int or a pair of non-negative ints "
     r"\(or None\), but got \(2, 2, 2\)"),
    (lambda: adaptive_avg_pool2d(tg.ones(1, 3, 8, 8), -1), RuntimeError,
     r"adaptive_avg_pool2d: output_size must be a non-negative int"),
    (lambda: adaptive_avg_pool2d(tg.ones(1, 3, 0, 8), 2), RuntimeError,
     r"adaptive_avg_pool2d: expected a non-empty 3-D .* input, but got input of size \[1, 3, 0, 8\]"),
])
def test_pool_bad_input_gets_a_clear_error(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


# ---- divisor_override -------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("divisor", [1, 3, 7, -2])
@pytest.mark.parametrize("shape,kwargs", POOL_CASES[:4])
def test_avg_pool2d_divisor_override_matches_torch(device, shape, kwargs, divisor):
    kwargs = dict(kwargs, divisor_override=divisor)
    check_torch(_avg(avg_pool2d, kwargs, False), _avg(F.avg_pool2d, kwargs, False), [shape], device=device)


def test_avg_pool2d_divisor_override_gradcheck_and_double_backward(device):
    check_grads(lambda x: avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, divisor_override=5),
                [(1, 2, 5, 4)], device=device)


def test_avg_pool2d_divisor_override_errors():
    x = tg.randn(1, 1, 4, 4)
    with pytest.raises(RuntimeError, match="avg_pool2d: divisor must be not zero"):
        avg_pool2d(x, 2, divisor_override=0)
    with pytest.raises(TypeError, match="avg_pool2d: divisor_override must be int, not float"):
        avg_pool2d(x, 2, divisor_override=2.5)
    with pytest.raises(TypeError, match="not bool"):
        avg_pool2d(x, 2, divisor_override=True)


# ---- adaptive max pooling (and the 1-D adaptive forms) ------------------------------------------
from tinygrad_bn.ops.pool import adaptive_avg_pool1d, adaptive_max_pool1d, adaptive_max_pool2d  # noqa: E402


@needs_torch
@pytest.mark.parametrize("shape,output_size", [
    ((2, 3, 8, 6), (4, 3)), ((2, 3, 8, 6), 1), ((2, 3, 7, 9), (3, 5)), ((2, 3, 5, 4), (7, 6)),
    ((2, 3, 7, 9), (None, 4)), ((3, 7, 5), (2, 2)),
])
def test_adaptive_max_pool2d_matches_torch(device, shape, output_size):
    check_torch(lambda x: adaptive_max_pool2d(x, output_size, return_indices=True),
                lambda x: F.adaptive_max_pool2d(x, output_size, return_indices=True), [shape], device=device)


@needs_torch
def test_adaptive_max_pool2d_ties_and_nan_route_like_torch():
    x = np.array([[[[0, 1, 1, 0, 2], [np.nan, 0, 0, 1, 2], [0, 1, np.nan, np.nan, 0], [1, 1, 1, 1, 1]]]])
    y, idx = adaptive_max_pool2d(tg.tensor(x), (3, 2), return_indices=True)
    y_ref, idx_ref = F.adaptive_max_pool2d(torch.tensor(x), (3, 2), return_indices=True)
    np.testing.assert_array_equal(idx.numpy(), idx_ref.numpy())
    np.testing.assert_array_equal(y.numpy(), y_ref.numpy())


@needs_torch
@pytest.mark.parametrize("shape,output_size", [((2, 3, 7), 3), ((3, 5), 7), ((2, 3, 9), (4,))])
def test_adaptive_1d_pools_match_torch(device, shape, output_size):
    check_torch(lambda x: adaptive_max_pool1d(x, output_size), lambda x: F.adaptive_max_pool1d(x, output_size),
                [shape], device=device)
    check_torch(lambda x: adaptive_avg_pool1d(x, output_size), lambda x: F.adaptive_avg_pool1d(x, output_size),
                [shape], device=device)


@pytest.mark.parametrize("fn,shape", [
    (lambda x: adaptive_max_pool2d(x, (2, 3)), (1, 2, 5, 4)),
    (lambda x: adaptive_max_pool2d(x, (3, None)), (2, 4, 3)),
    (lambda x: adaptive_max_pool1d(x, 3), (1, 2, 7)),
    (lambda x: adaptive_avg_pool1d(x, 3), (2, 5)),
])
def test_adaptive_pools_gradcheck_and_double_backward(device, fn, shape):
    check_grads(fn, [shape], device=device)


@pytest.mark.parametrize("call,exc,pattern", [
    (lambda: adaptive_max_pool2d(tg.ones(2, 4), 2), RuntimeError,
     r"adaptive_max_pool2d: expected a non-empty 3-D \(C, H, W\) or 4-D \(N, C, H, W\) input, but got input of size \[2, 4\]"),
    (lambda: adaptive_max_pool2d(tg.ones(1, 2, 4, 4), (2, 2, 2)), RuntimeError,
     r"adaptive_max_pool2d: output_size must be a non-negative int or a pair .* \(2, 2, 2\) \(input of size \[1, 2, 4, 4\]\)"),
    (lambda: adaptive_max_pool2d(tg.ones(1, 2, 4, 4), -1), RuntimeError, r"adaptive_max_pool2d: output_size must be"),
    (lambda: adaptive_max_pool2d(tg.ones(1, 2, 4, 4, dtype=tg.int64), 2), RuntimeError,
     r"adaptive_max_pool2d: expected a floating-point input, got dtype int64"),
    (lambda: adaptive_max_pool1d(tg.ones(4), 2), RuntimeError,
     r"adaptive_max_pool1d: expected a non-empty 2-D \(C, L\) or 3-D \(N, C, L\) input, but got input of size \[4\]"),
    (lambda: adaptive_max_pool1d(tg.ones(2, 4), (2, 2)), RuntimeError, r"adaptive_max_pool1d: output_size must be"),
    (lambda: adaptive_avg_pool1d(tg.ones(1, 2, 4, 4), 2), RuntimeError, r"adaptive_avg_pool1d: expected a non-empty 2-D"),
])
def test_adaptive_max_pool_bad_input_gets_a_clear_error(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()
