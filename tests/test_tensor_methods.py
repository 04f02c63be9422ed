"""The Tensor method forms and top-level names of issue 15 that route to existing ops
(tinygrad_bn/tensor.py, tinygrad_bn/__init__.py): PyTorch parity, gradchecks, errors."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tests.helpers import torch, needs_torch, assert_close
from tests.ops.method_cases import parity_and_gradchecks

POS = {"low": 0.5, "high": 2.0}
CASES = [
    ("add_alpha", lambda a, b: a.add(b, alpha=2), lambda a, b: a.add(b, alpha=2), [(2, 3), (3,)], {}),
    ("add_scalar", lambda a: a.add(1.5), lambda a: a.add(1.5), [(2, 3)], {}),
    ("sub_alpha", lambda a, b: a.sub(b, alpha=0.5), lambda a, b: a.sub(b, alpha=0.5), [(2, 3), (2, 1)], {}),
    ("mul", lambda a, b: a.mul(b), lambda a, b: a.mul(b), [(2, 3), (3,)], {}),
    ("div", lambda a, b: a.div(b), lambda a, b: a.div(b), [(2, 3), (3,)], POS),
    ("div_trunc", lambda a: a.div(0.3, rounding_mode="trunc"), lambda a: a.div(0.3, rounding_mode="trunc"), [(2, 3)],
     {"arrays": [np.array([[0.1, -0.4, 0.7], [1.0, -1.3, 2.0]])]}),
    ("div_floor", lambda a: a.div(0.3, rounding_mode="floor"), lambda a: a.div(0.3, rounding_mode="floor"), [(2, 3)],
     {"arrays": [np.array([[0.1, -0.4, 0.7], [1.0, -1.3, 2.0]])]}),
    ("softmax", lambda a: a.softmax(1), lambda a: a.softmax(1), [(3, 4)], {}),
    ("log_softmax", lambda a: a.log_softmax(-1), lambda a: a.log_softmax(-1), [(3, 4)], {}),
    ("tg_softmax", lambda a: tg.softmax(a, 0), lambda a: torch.softmax(a, 0), [(3, 4)], {}),
    ("view_as", lambda a, b: a.view_as(b), lambda a, b: a.view_as(b), [(2, 6), (3, 4)], {}),
    ("type_as", lambda a, b: a.type_as(b) * 1, lambda a, b: a.type_as(b) * 1, [(2, 3), (1,)], {}),
]
test_parity_float64, test_parity_float32, test_gradcheck_and_gradgradcheck = parity_and_gradchecks(CASES)


@needs_torch
@pytest.mark.parametrize("name", ["eq", "ne", "gt", "ge", "lt", "le"])
def test_comparisons(name, device):
    a = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    b = np.array([2.0, 2.0, 2.0])
    out = getattr(tg.tensor(a, device=device), name)(tg.tensor(b, device=device))
    assert out.dtype == tg.bool_
    assert_close(out, getattr(torch.tensor(a), name)(torch.tensor(b)))
    assert_close(getattr(tg.tensor(a), name)(2.0), getattr(torch.tensor(a), name)(2.0))


@needs_torch
def test_integer_division_modes_and_all_any():
    a, b = np.array([7, -7, 6]), np.array([2, 2, -4])
    for mode in ("trunc", "floor"):
        out = tg.tensor(a).div(tg.tensor(b), rounding_mode=mode)
        ref = torch.tensor(a).div(torch.tensor(b), rounding_mode=mode)
        assert out.dtype == tg.int64
        assert_close(out, ref)
    x = np.array([[0.0, 1.0], [2.0, 3.0]])
    for name in ("all", "any"):
        assert_close(getattr(tg.tensor(x), name)(), getattr(torch.tensor(x), name)())
        assert_close(getattr(tg.tensor(x), name)(1, keepdim=True), getattr(torch.tensor(x), name)(1, keepdim=True))


def test_allclose_is_a_python_bool_and_broadcasts():
    a = tg.tensor([1.0, 2.0])
    assert tg.allclose(a, a + 1e-9) is True
    assert a.allclose(a + 1e-3) is False
    assert a.allclose(tg.tensor(1.0) * 1, atol=1.0)
    nan = tg.tensor([float("nan")])
    assert not nan.allclose(nan) and nan.allclose(nan, equal_nan=True)


def test_new_factories_follow_self_dtype_and_device(device):
    x = tg.ones(2, dtype=tg.float64, device=device)
    z = x.new_zeros(2, 3)
    assert z.shape == (2, 3) and z.dtype == tg.float64 and z.device == x.device and z.sum().item() == 0
    assert x.new_ones((4,)).tolist() == [1.0] * 4
    f = x.new_full((2,), 7, dtype=tg.int64, requires_grad=False)
    assert f.dtype == tg.int64 and f.tolist() == [7, 7]
    t = x.new_tensor([1, 2])
    assert t.dtype == tg.float64 and t.device == x.device
    assert x.new_zeros(3, requires_grad=True).requires_grad


def test_normal_and_uniform_fill_in_place_with_the_seeded_generator():
    tg.manual_seed(1)
    x = tg.empty(20000, dtype=tg.float64)
    assert x.normal_(2.0, 0.5) is x
    assert abs(x.mean().item() - 2.0) < 0.02 and abs(x.std().item() - 0.5) < 0.02
    u = tg.empty(20000).uniform_(-1.0, 3.0)
    assert u.dtype == tg.float32 and -1.0 <= u.min().item() and u.max().item() < 3.0
    assert abs(u.mean().item() - 1.0) < 0.05
    tg.manual_seed(1)
    again = tg.empty(20000, dtype=tg.float64).normal_(2.0, 0.5)
    assert np.array_equal(again.numpy(), x.numpy())
    w = tg.empty(3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"normal_: a leaf Variable that requires grad is being used in an in-place operation"):
        w.normal_()
    with tg.no_grad():
        w.uniform_(**{"from": 0.0, "to": 0.5})
    assert 0.0 <= w.min().item() and w.max().item() < 0.5


def test_from_numpy_shares_memory_as_tensor_avoids_copies_is_tensor():
    a = np.zeros(3)
    t = tg.from_numpy(a)
    a[0] = 5.0
    assert t.dtype == tg.float64 and t.tolist() == [5.0, 0.0, 0.0]
    assert tg.as_tensor(a).data is a
    assert tg.as_tensor(t) is t
    assert tg.as_tensor([1, 2]).dtype == tg.int64
    assert tg.as_tensor(a, dtype=tg.float32).dtype == tg.float32
    x = tg.ones(2, requires_grad=True)
    assert tg.as_tensor(x, dtype=tg.float64).grad_fn is not None  # keeps the graph, as PyTorch
    assert tg.is_tensor(t) and not tg.is_tensor(a)


def test_inference_mode_records_no_graph():
    x = tg.ones(2, requires_grad=True)
    with tg.inference_mode():
        assert not (x * 2).requires_grad
        with tg.inference_mode(False):
            assert (x * 2).requires_grad

    @tg.inference_mode()
    def predict(v):
        return v * 3
    assert not predict(x).requires_grad
    assert (x * 2).requires_grad


@pytest.mark.parametrize("fn,exc,pattern", [
    (lambda: tg.tensor([1, 2]).add(tg.tensor([1, 2]), alpha=0.5), RuntimeError, r"add: For integral input tensors, argument alpha must not be a floating point number"),
    (lambda: tg.ones(2).div(2, rounding_mode="round"), ValueError, r"div expected rounding_mode to be one of None, 'trunc', or 'floor' but found 'round'"),
    (lambda: tg.ones(2).view_as([1, 2]), TypeError, r"view_as\(\): argument 'other' must be Tensor, not list"),
    (lambda: tg.ones(6).view_as(tg.ones(4)), RuntimeError, r"reshape: shape '\[4\]' is invalid for input of size 6"),
    (lambda: tg.ones(2).allclose(tg.ones(2, dtype=tg.float64)), RuntimeError, r"allclose: expected both tensors to have the same dtype, got float32 and float64"),
    (lambda: tg.ones(2).allclose(tg.ones(3)), RuntimeError, r"allclose: shapes \[2\] and \[3\] are not broadcastable"),
    (lambda: tg.ones(2).normal_(0, -1), RuntimeError, r"normal_ expects std >= 0.0, but found std -1"),
    (lambda: tg.ones(2).uniform_(1, 0), RuntimeError, r"uniform_ expects to return a \[from, to\) range, but found from=1 > to=0"),
    (lambda: tg.from_numpy([1.0]), TypeError, r"from_numpy: expected np.ndarray \(got list\)"),
    (lambda: tg.from_numpy(np.array(["a"])), TypeError, r"from_numpy: can't convert np.ndarray of type <U1"),
    (lambda: tg.inference_mode("yes"), TypeError, r"inference_mode: mode must be a bool, got 'yes'"),
    (lambda: tg.ones(2, 3).all(2), IndexError, r"all: Dimension out of range"),
])
def test_bad_arguments(fn, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fn()


ISSUE_15_METHODS = [
    "add", "sub", "mul", "div", "eq", "ne", "gt", "ge", "lt", "le", "mm", "bmm", "softmax",
    "log_softmax", "masked_fill", "gather", "scatter", "index_select", "topk", "sort", "cumsum",
    "cumprod", "prod", "norm", "flip", "roll", "repeat", "tril", "triu", "unbind", "unflatten",
    "narrow", "new_zeros", "new_ones", "new_full", "new_tensor", "type_as", "view_as", "normal_",
    "uniform_", "isnan", "isinf", "all", "any", "allclose", "floor", "ceil", "round", "sin", "cos",
    "t", "outer", "diag"]
ISSUE_15_TOP_LEVEL = ["einsum", "softmax", "allclose", "from_numpy", "as_tensor", "inference_mode", "is_tensor"]


def test_every_listed_name_exists():
    assert [m for m in ISSUE_15_METHODS if not callable(getattr(tg.Tensor, m, None))] == []
    assert [n for n in ISSUE_15_TOP_LEVEL if not callable(getattr(tg, n, None))] == []
    assert callable(tg.autograd.detect_anomaly) and callable(tg.autograd.set_detect_anomaly)


@needs_torch
def test_top_level_functional_forms_match_pytorch():
    a = np.array([[0.3, -1.2, 2.5], [1.7, 0.4, -0.6]])
    x, r = tg.tensor(a), torch.tensor(a)
    idx = np.array([[2, 0], [1, 1]])
    pairs = [
        (tg.gather(x, 1, tg.tensor(idx)), torch.gather(r, 1, torch.tensor(idx))),
        (tg.cumsum(x, 0), torch.cumsum(r, 0)), (tg.cumprod(x, 1), torch.cumprod(r, 1)),
        (tg.prod(x, 1), torch.prod(r, 1)), (tg.flip(x, (0,)), torch.flip(r, (0,))),
        (tg.roll(x, 1, 1), torch.roll(r, 1, 1)), (tg.tril(x), torch.tril(r)), (tg.triu(x, 1), torch.triu(r, 1)),
        (tg.diag(x), torch.diag(r)), (tg.mm(x, x.t()), torch.mm(r, r.t())), (tg.norm(x), torch.norm(r)),
        (tg.outer(x[0], x[1]), torch.outer(r[0], r[1])), (tg.sin(x), torch.sin(r)), (tg.cos(x), torch.cos(r)),
        (tg.floor(x), torch.floor(r)), (tg.ceil(x), torch.ceil(r)), (tg.round(x), torch.round(r)),
        (tg.trunc(x), torch.trunc(r)), (tg.sort(x, 1).values, torch.sort(r, 1).values),
        (tg.topk(x, 2).indices, torch.topk(r, 2).indices), (tg.index_select(x, 1, tg.tensor([2, 0])),
                                                            torch.index_select(r, 1, torch.tensor([2, 0]))),
        (tg.masked_fill(x, x > 0, 0.0), torch.masked_fill(r, r > 0, 0.0)),
        (tg.isnan(x), torch.isnan(r)), (tg.isinf(x), torch.isinf(r)),
        (tg.unflatten(x, 1, (3, 1)), torch.unflatten(r, 1, (3, 1))),
        (tg.log_softmax(x, 1), torch.log_softmax(r, 1)),
    ]
    for i, (ours, ref) in enumerate(pairs):
        assert_close(ours, ref, what=f"pair {i}")
    assert_close(x.flip(dims=(1,)), r.flip(dims=(1,)))
    assert_close(tg.unbind(x, 1)[2], torch.unbind(r, 1)[2])
