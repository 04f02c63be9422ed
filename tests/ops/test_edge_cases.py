"""Issue 18: silent wrong results, 0-d and empty inputs, PyTorch overloads (regressions, with parity)."""
import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.nn.functional as F
from tinygrad_bn import nn
from tests.helpers import assert_close, needs_torch, torch

X = np.array([[1.0, 2.0, 3.0], [1.5, 2.0, 2.2]])


@needs_torch
@pytest.mark.parametrize("name", ["max", "min"])
@pytest.mark.parametrize("a,b", [(2.0, 5.0), (X, 2.1), (X, X[::-1].copy()), (2.0, X)])
def test_max_min_two_tensors_is_elementwise(name, a, b):
    ta, tb = tg.tensor(a, requires_grad=True), tg.tensor(b, requires_grad=True)
    ra, rb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    ours, ref = getattr(tg, name)(ta, tb), getattr(torch, name)(ra, rb)
    assert_close(ours, ref)
    ours.sum().backward(); ref.sum().backward()
    assert_close(ta.grad, ra.grad); assert_close(tb.grad, rb.grad)
    assert_close(getattr(ta, name)(tb), ref)  # the method form too


@needs_torch
@pytest.mark.parametrize("start,length", [(-3, 3), (-10, 2), (0, 0), (10, 0), (-1, 1)])
def test_narrow_negative_start(start, length):
    assert_close(tg.narrow(tg.arange(10.), 0, start, length), torch.narrow(torch.arange(10.), 0, start, length))


@pytest.mark.parametrize("start,length,exc,pattern", [
    (11, 0, IndexError, r"narrow: start \(11\) out of range for dim 0 of size 10"),
    (-11, 1, IndexError, r"narrow: start \(-11\) out of range"),
    (8, 3, RuntimeError, r"narrow: start \(8\) \+ length \(3\) exceeds dimension size \(10\)"),
])
def test_narrow_refuses_out_of_range(start, length, exc, pattern):
    with pytest.raises(exc, match=pattern):
        tg.narrow(tg.arange(10.), 0, start, length)


@pytest.mark.parametrize("fn,pattern", [
    (lambda: tg.sum(tg.ones(2, 3), tg.tensor(1.)), r"sum: dim must be an int or a tuple of ints, got Tensor"),
    (lambda: tg.ones(2, 3).mean(tg.tensor(0.)), r"mean: dim must be an int"),
    (lambda: tg.ones(2, 3).transpose(tg.tensor(0.), 1), r"transpose: dim must be an int, got Tensor"),
    (lambda: tg.ones(2, 3).var(tg.tensor([0])), r"var: dim must be an int"),
])
def test_non_integer_or_1d_tensor_as_dim_raises_type_error(fn, pattern):
    """A float or 1-d Tensor is no dim (PyTorch: TypeError); it once read as "no dims"."""
    with pytest.raises(TypeError, match=pattern):
        fn()


@needs_torch
@pytest.mark.parametrize("call", [
    lambda lib: lib.sum(lib.ones(2, 3), lib.tensor(1)), lambda lib: lib.ones(2, 3).mean(lib.tensor(0)),
    lambda lib: lib.ones(2, 3).transpose(lib.tensor(0), 1), lambda lib: lib.ones(2, 3).var(lib.tensor(0)),
    lambda lib: lib.ones(2, 3).sum((lib.tensor(0), 1)), lambda lib: lib.ones(2, 3).unsqueeze(lib.tensor(-1)),
])
def test_zero_d_integer_tensor_as_dim_is_an_index_as_in_torch(call):
    assert_close(call(tg), call(torch))


@needs_torch
@pytest.mark.parametrize("name", ["var", "std"])
@pytest.mark.parametrize("args,kwargs", [
    ((1, False), {}), ((1, True), {}), ((1, False, True), {}), ((False,), {}), ((True,), {}),
    ((), {}), ((0,), {"keepdim": True}), ((1,), {"correction": 0}), ((), {"correction": None}),
    ((1,), {"correction": None, "keepdim": True}), ((), {"unbiased": False}), (((0, 1), False), {}),
])
def test_var_std_pytorch_overloads(name, args, kwargs):
    ours = getattr(tg.tensor(X), name)(*args, **kwargs)
    assert_close(ours, getattr(torch.tensor(X), name)(*args, **kwargs), what=f"{name}{args}{kwargs}")
    assert_close(getattr(tg, name)(tg.tensor(X), *args, **kwargs), ours)


def test_var_refuses_unbiased_and_correction():
    with pytest.raises(TypeError, match="var: give either unbiased or correction, not both"):
        tg.tensor(X).var(1, True, correction=0)


@needs_torch
def test_zero_d_transpose_softmax():
    s = tg.tensor(1.5, requires_grad=True)
    assert s.transpose(0, 0).shape == () and s.transpose(-1, 0).shape == ()
    for ours, ref in [(F.softmax(s, 0), torch.softmax(torch.tensor(1.5), 0)),
                      (F.log_softmax(s, -1), torch.log_softmax(torch.tensor(1.5), -1)),
                      (nn.Softmax(0)(s), torch.nn.Softmax(0)(torch.tensor(1.5))),
                      (nn.LogSoftmax(0)(s), torch.nn.LogSoftmax(0)(torch.tensor(1.5)))]:
        assert ours.shape == () and ours.dtype == tg.float32
        assert_close(ours, ref)
    F.log_softmax(s, 0).backward()
    assert_close(s.grad, np.array(0.0))


@needs_torch
@pytest.mark.parametrize("shape,dim", [((2, 0), 1), ((0, 3), 0), ((0, 3), 1), ((0,), 0)])
def test_softmax_logsumexp_over_empty(shape, dim):
    x = tg.ones(*shape, requires_grad=True)
    r = torch.ones(*shape)
    assert_close(F.softmax(x, dim), torch.softmax(r, dim))
    assert_close(F.log_softmax(x, dim), torch.log_softmax(r, dim))
    for keepdim in (False, True):
        ours = tg.logsumexp(x, dim, keepdim)
        assert_close(ours, torch.logsumexp(r, dim, keepdim))
    tg.logsumexp(x, dim).sum().backward()
    assert x.grad.shape == shape


@needs_torch
def test_randint_high_size_form():
    t = tg.randint(10, (3,))
    assert t.shape == (3,) and t.dtype == tg.int64 and ((t.numpy() >= 0) & (t.numpy() < 10)).all()
    assert tg.randint(2, 5, (4, 2)).shape == (4, 2)
    assert tg.randint(3, size=(2,)).shape == (2,)
    with pytest.raises(TypeError, match="randint: high must be an int"):
        tg.randint(0, 2.5, (2,))


@needs_torch
def test_sign_of_bool():
    v = [True, False, True]
    ours = tg.sign(tg.tensor(v))
    ref = torch.sign(torch.tensor(v))
    assert ours.dtype == tg.bool and ours.numpy().tolist() == ref.tolist()


@needs_torch
@pytest.mark.parametrize("a,b", [(1.0, 0.0), (1, 0), (1, 0.5), (True, False)])
def test_where_two_scalars(a, b):
    c = [True, False, True]
    ours, ref = tg.where(tg.tensor(c), a, b), torch.where(torch.tensor(c), a, b)
    assert str(ours.dtype).split(".")[-1] == str(ref.dtype).split(".")[-1]
    assert_close(ours, ref)


@needs_torch
def test_linspace_tensor_endpoint_honours_dtype():
    ours = tg.linspace(tg.tensor(0.0, dtype=tg.float64), tg.tensor(1 / 3, dtype=tg.float64), 4, dtype=tg.float64)
    ref = torch.linspace(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1 / 3, dtype=torch.float64), 4,
                         dtype=torch.float64)
    assert ours.dtype == tg.float64
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-15, atol=0)
    with pytest.raises(RuntimeError, match="linspace: end must be a 0-dimensional tensor"):
        tg.linspace(0.0, tg.ones(2), 3)


# ---- gradients at NaN, inf and 0**0: PyTorch's conventions ------------------------------------
SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.5, -2.0]


@needs_torch
@pytest.mark.parametrize("name", ["relu", "abs", "sign", "sqrt", "exp", "tanh", "sigmoid"])
def test_unary_values_and_gradients_at_special_points_match_torch(name):
    x = np.array(SPECIAL)
    ours, ref = tg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, r = getattr(ours, name)(), getattr(ref, name)()
    np.testing.assert_allclose(y.detach().numpy(), r.detach().numpy(), rtol=1e-14, atol=0)  # NaN == NaN here
    y.sum().backward(); r.sum().backward()
    np.testing.assert_allclose(ours.grad.numpy(), ref.grad.numpy(), rtol=1e-14, atol=0)


@needs_torch
@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_maximum_minimum_gradient_with_nan_and_ties_matches_torch(name):
    a = np.array([np.nan, 1.0, np.nan, 2.0, 3.0, -np.inf])
    b = np.array([1.0, np.nan, np.nan, 2.0, 1.0, -np.inf])
    ta, tb = tg.tensor(a, requires_grad=True), tg.tensor(b, requires_grad=True)
    ra, rb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    y, r = getattr(tg, name)(ta, tb), getattr(torch, name)(ra, rb)
    np.testing.assert_array_equal(y.detach().numpy(), r.detach().numpy())
    y.sum().backward(); r.sum().backward()
    np.testing.assert_array_equal(ta.grad.numpy(), ra.grad.numpy())
    np.testing.assert_array_equal(tb.grad.numpy(), rb.grad.numpy())


@needs_torch
def test_pow_gradients_at_zero_base_match_torch():
    """d/da 0**0 = 0 and d/db 0**b = 0 for b >= 0; 0**(-1) gives -inf for db, as in PyTorch."""
    a = np.array([0.0, 0.0, 0.0, 0.0, 2.0, -1.5])
    b = np.array([0.0, 2.0, 0.5, -1.0, 0.0, 2.0])
    ta, tb = tg.tensor(a, requires_grad=True), tg.tensor(b, requires_grad=True)
    ra, rb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = ta ** tb
        y.sum().backward()
    r = ra ** rb
    r.sum().backward()
    np.testing.assert_array_equal(y.detach().numpy(), r.detach().numpy())
    np.testing.assert_array_equal(ta.grad.numpy(), ra.grad.numpy())
    np.testing.assert_array_equal(tb.grad.numpy(), rb.grad.numpy())


def test_pow_maximum_still_pass_gradcheck_and_double_backward():
    from tests.helpers import check_grads
    check_grads(lambda a, b: a ** b, [(3, 2), (3, 2)], low=0.5, high=2.0)
    check_grads(lambda a, b: tg.maximum(a, b) * tg.minimum(a, b) * a, [(3, 2), (2,)])


# ---- found by the parity sweep's ops-with-arguments family (tests/parity) ----------------------
@pytest.mark.parametrize("op", [lambda t: t.flip(()), lambda t: tg.sort(t, 0)[0], lambda t: tg.topk(t, 1, 0)[0]])
def test_0d_bool_copies_stay_bool(op):
    assert op(tg.tensor(True)).dtype == tg.bool_   # was int64 (a copy made as x * 1)


def test_roll_of_a_0d_tensor_along_a_dim_raises_as_pytorch():
    with pytest.raises(IndexError, match="roll: Dimension specified as 0 but tensor has no dimensions"):
        tg.roll(tg.tensor(1.0), 1, 0)
    assert tg.roll(tg.tensor(1.0), 1).item() == 1.0   # without dims it is allowed


def test_index_select_of_a_0d_tensor_is_0d_and_takes_one_index():
    out = tg.index_select(tg.tensor(3.0), 0, tg.tensor([0]))
    assert out.shape == () and out.item() == 3.0
    with pytest.raises(RuntimeError, match="Index to scalar can have only 1 value, got 0"):
        tg.index_select(tg.tensor(3.0), 0, tg.tensor([], dtype=tg.int64))


def test_repeat_without_sizes_raises_type_error():
    with pytest.raises(TypeError, match="repeats"):
        tg.tensor(1.0).repeat()
