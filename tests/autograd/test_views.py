"""In-place writes through views (tinygrad_bn/autograd/views.py): one version counter per storage,
the leaf rule for views, rebasing (CopySlices), and a generated comparison with PyTorch."""
import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.nn.functional as F
from tests.helpers import needs_torch, torch

VERSION_ERROR = "one of the variables needed for gradient computation has been modified by an inplace"
LEAF_VIEW_ERROR = "a view of a leaf Variable that requires grad is being used in an in-place operation"


# ---- the three examples ------------------------------------------------------------
def test_saved_tensor_modified_through_a_slice_raises():
    x = tg.Tensor(np.arange(1., 7.).reshape(2, 3), requires_grad=True)
    y = x * 2
    z = y * y
    y[0].add_(100)
    with pytest.raises(RuntimeError, match=VERSION_ERROR):
        z.sum().backward()


def test_saved_output_modified_through_a_reshape_raises():
    x = tg.Tensor(np.arange(1., 7.).reshape(2, 3), requires_grad=True)
    e = x.reshape(6).exp()
    e.reshape(2, 3).mul_(0)
    with pytest.raises(RuntimeError, match=VERSION_ERROR):
        e.sum().backward()


def test_inplace_on_a_view_of_a_leaf_raises():
    w = tg.Tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match=LEAF_VIEW_ERROR):
        w[0].mul_(0)
    np.testing.assert_array_equal(w.detach().numpy(), np.ones((2, 3)))  # refused before writing
    with tg.no_grad():
        w[0].mul_(0)  # allowed under no_grad, as in PyTorch
    assert w.detach().numpy()[0].tolist() == [0, 0, 0]


# ---- version counter, leaf rule, zero_/fill_ -------------------------------------------------
def test_views_share_the_base_version_counter():
    b = tg.tensor([[1., 2.], [3., 4.]])
    views = [b[0], b.T, b.reshape(4), b[:, 1:], b.unsqueeze(0).expand(3, 2, 2), b.T[1][0]]
    b[1, 1] = 7.0
    assert all(v._version is b._version for v in views) and b._version[0] == 1
    views[1].mul_(2)
    assert b._version[0] == 2 and b.tolist() == [[2., 4.], [6., 14.]]


def test_integer_index_of_a_vector_is_a_view():
    b = tg.tensor([1., 2., 3.])
    b[1].add_(10)
    assert b.tolist() == [1., 12., 3.]


@pytest.mark.parametrize("op", ["zero_", "fill_", "add_", "mul_", "clamp_", "copy_", "relu_",
                                "setitem", "leaky_relu_", "dropout_"])
def test_every_inplace_method_refuses_a_leaf_and_a_view_of_a_leaf(op):
    calls = {"zero_": lambda t: t.zero_(), "fill_": lambda t: t.fill_(2.0),
             "add_": lambda t: t.add_(1), "mul_": lambda t: t.mul_(2),
             "clamp_": lambda t: t.clamp_(0, 1), "copy_": lambda t: t.copy_(tg.ones(t.shape)),
             "relu_": lambda t: t.relu_(), "setitem": lambda t: t.__setitem__(0, 5.0),
             "leaky_relu_": lambda t: F.leaky_relu(t, 0.1, inplace=True),
             "dropout_": lambda t: F.dropout(t, 0.5, True, inplace=True)}
    x = tg.ones(2, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used"):
        calls[op](x)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad is being used"):
        calls[op](x[1])
    assert x._version[0] == 0


@pytest.mark.parametrize("op", ["zero_", "fill_", "copy_"])
def test_overwrite_on_a_non_leaf_cuts_the_old_history(op):
    x = tg.ones(3, requires_grad=True)
    y = x.clone()
    {"zero_": lambda: y.zero_(), "fill_": lambda: y.fill_(4.0),
     "copy_": lambda: y.copy_(tg.tensor([1., 2., 3.]))}[op]()
    (y * 2 + x).sum().backward()
    assert x.grad.tolist() == [1., 1., 1.]


def test_fill_with_a_0d_tensor_is_differentiable_and_refuses_1d():
    x = tg.ones(3, requires_grad=True)
    v = tg.tensor(2.0, requires_grad=True)
    y = x.clone()
    y.fill_(v)
    (y * y).sum().backward()
    assert v.grad.item() == 12.0 and x.grad.tolist() == [0., 0., 0.]
    with pytest.raises(RuntimeError, match="fill_ only supports 0-dimension value tensor"):
        y.fill_(tg.ones(2))


def test_write_into_an_expanded_view_refuses_overlap():
    y = tg.ones(3, requires_grad=True) * 1
    with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
        y.expand(2, 3).add_(1)


def test_setitem_into_views_without_grad():
    y = tg.zeros(3)
    with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
        y.expand(2, 3)[...] = 1.0
    y.expand(2, 3)[1][0] = 4.0
    y.T[2] = 5.0
    assert y.tolist() == [4., 0., 5.] and y._version[0] == 2


def test_write_into_a_view_made_under_no_grad_is_refused_when_recorded():
    y = tg.ones(3, requires_grad=True) * 1
    with tg.no_grad():
        v = y[:2]
    with pytest.raises(RuntimeError, match="A view was created in no_grad mode"):
        v.add_(1)
    with tg.no_grad():
        v.add_(1)
    assert y.tolist() == [2., 2., 1.]


# ---- rebasing: gradients after a write through a view (values worked out by hand) ------------
def test_write_through_a_slice_rebases_the_base():
    x = tg.tensor([1., 2., 3.], requires_grad=True)
    w = tg.tensor([5., 7.], requires_grad=True)
    y = x * 1
    y[1:].mul_(w)                    # y = [x0, x1 w0, x2 w1]
    (y * y).sum().backward()         # d/dx = 2 y * [1, w0, w1]
    assert x.grad.tolist() == [2., 2 * 10 * 5, 2 * 21 * 7]
    assert w.grad.tolist() == [2 * 10 * 2, 2 * 21 * 3]


def test_old_views_and_sibling_views_see_the_new_history():
    x = tg.ones(3, requires_grad=True)
    y = x * 2
    head, tail = y[:2], y[1:]
    tail.mul_(3)                     # y = [2, 6, 6]; head sees [2, 6]
    assert head.tolist() == [2., 6.]
    (head * 1).sum().backward()
    assert x.grad.tolist() == [2., 6., 0.]
    x.grad = None
    z = x * 2
    v = z[1:]
    z.mul_(3)                        # a write into the base: the view is replayed too
    v.sum().backward()
    assert x.grad.tolist() == [0., 6., 6.]


def test_chain_of_views_transpose_reshape_double_backward():
    x = tg.Tensor(np.arange(6.).reshape(2, 3), requires_grad=True)
    y = x * 1
    v = y.reshape(3, 2).T[0]       # y.flat[0, 2, 4]
    v.mul_(v * 1)                    # squares them (v.mul_(v) itself fails its version check)
    g, = tg.autograd.grad(y.sum(), [x], create_graph=True)
    assert g.tolist() == [[0., 1., 4.], [1., 8., 1.]]
    g.sum().backward()
    assert x.grad.tolist() == [[2., 0., 2.], [0., 2., 0.]]


def test_write_through_an_expand_then_index_reaches_the_base():
    x = tg.ones(3, requires_grad=True)
    y = x * 1
    y.expand(3, 3)[0].mul_(2)        # allowed: the row [0] does not overlap itself
    assert y.tolist() == [2., 2., 2.]
    y.sum().backward()
    assert x.grad.tolist() == [2., 2., 2.]


def test_mul_by_itself_through_a_view_fails_like_pytorch():
    y = tg.ones(3, requires_grad=True) * 2
    v = y[:2]
    v.mul_(v)
    with pytest.raises(RuntimeError, match=VERSION_ERROR):
        y.sum().backward()


def test_contiguous_of_a_transposed_view_is_a_copy():
    y = tg.ones(2, 3)
    c = y.T.contiguous()
    c.add_(1)
    assert y.tolist() == [[1.] * 3] * 2
    assert y.contiguous() is y


# ---- generated view chains against PyTorch -----------------------------------------------------
STEPS = ["slice", "int", "transpose", "reshape", "unsqueeze", "expand_row"]
OPS = ["add_", "sub_", "mul_", "div_", "clamp_", "relu_", "copy_", "fill_", "zero_", "setitem",
       "leaky_relu_", "mul_self"]
AFTER = ["none", "base_again", "sibling", "old_view"]
BASES = ["non_leaf", "leaf", "no_grad_view_of_non_leaf", "detached"]


def _chains(n, seed=0):
    rng = np.random.default_rng(seed)
    return [(str(rng.choice(BASES, p=[0.7, 0.1, 0.1, 0.1])),
             [str(s) for s in rng.choice(STEPS, size=rng.integers(1, 4))],
             str(rng.choice(OPS)), str(rng.choice(AFTER)), int(rng.integers(1 << 30)))
            for _ in range(n)]


def _apply_step(lib, v, step):
    if step == "slice" and v.ndim and v.shape[-1] > 1:
        return v[..., 1:]
    if step == "int" and v.ndim and v.shape[0] > 0:
        return v[v.shape[0] - 1]
    if step == "transpose" and v.ndim >= 2:
        return v.transpose(0, v.ndim - 1)
    if step == "reshape":
        return v.reshape(-1)
    if step == "expand_row":  # an expand, then one row of it: no overlap left
        return v.unsqueeze(0).expand(2, *v.shape)[1]
    return v.unsqueeze(0)


def _run_chain(lib, F_, chain):
    base_kind, steps, op, after, seed = chain
    rng = np.random.default_rng(seed)
    x = lib.tensor(rng.uniform(-2, 2, (2, 3, 4)), dtype=lib.float64, requires_grad=True)
    w0 = rng.uniform(0.5, 2, (2, 3, 4))
    try:
        if base_kind == "leaf":
            b = x
        elif base_kind == "detached":
            b = (x * 1.5).detach()
        else:
            b = x * 1.5
        saved = b * b                      # saves b: a later write must fail the version check
        sibling = b[..., :2] if b.ndim else b
        if base_kind == "no_grad_view_of_non_leaf":
            with lib.no_grad():
                v = _apply_step(lib, b, steps[0])
            rest = steps[1:]
        else:
            v, rest = b, steps
            v = _apply_step(lib, v, rest[0])
            rest = rest[1:]
        for s in rest:
            v = _apply_step(lib, v, s)
        w = lib.tensor(np.ascontiguousarray(w0.reshape(-1)[:max(v.numel(), 1)].reshape(v.shape)),
                       dtype=lib.float64, requires_grad=True)
        old_view = b.reshape(-1)[:3]
        {"add_": lambda: v.add_(w, alpha=2), "sub_": lambda: v.sub_(w), "mul_": lambda: v.mul_(w),
         "div_": lambda: v.div_(w), "clamp_": lambda: v.clamp_(-0.5, 0.7), "relu_": lambda: v.relu_(),
         "copy_": lambda: v.copy_(w), "fill_": lambda: v.fill_(0.25), "zero_": lambda: v.zero_(),
         "setitem": lambda: v.__setitem__(..., w * 3),
         "leaky_relu_": lambda: F_.leaky_relu(v, 0.1, inplace=True),
         "mul_self": lambda: v.mul_(v)}[op]()
        loss = (v * v).sum() + (b * 3).sum()
        if after == "base_again":
            b.mul_(1.5)
            loss = loss + (b * b).sum()
        elif after == "sibling":
            loss = loss + (sibling * sibling).sum()
        elif after == "old_view":
            loss = loss + (old_view * old_view).sum()
        if after == "none" and rng.random() < 0.3:
            loss = loss + saved.sum()
        if not loss.requires_grad:
            return ("no grad", np.asarray(b.tolist()).round(8).tolist())
        loss.backward()
        grads = [None if t.grad is None else np.asarray(t.grad.tolist()).round(8).tolist()
                 for t in (x, w)]
        return ("ok", grads, np.asarray(b.detach().tolist()).round(8).tolist())
    except RuntimeError as e:
        return ("error", str(e))


ERROR_PHRASES = [VERSION_ERROR, LEAF_VIEW_ERROR, "created in no_grad mode",
                 "a leaf Variable that requires grad is being used",
                 "more than one element of the written-to tensor refers to a single memory location"]


def _same(ours, theirs):
    if theirs[0] == "error":  # the same error: the first known phrase of PyTorch's message in ours
        phrase = next((p for p in ERROR_PHRASES if p in theirs[1]), theirs[1])
        return ours[0] == "error" and phrase in ours[1]
    return ours == theirs


@needs_torch
@pytest.mark.parametrize("chain", _chains(160), ids=lambda c: "-".join([c[0], *c[1], c[2], c[3]]))
def test_generated_view_chains_match_pytorch(chain):
    TF = torch.nn.functional
    theirs = _run_chain(torch, TF, chain)
    ours = _run_chain(tg, F, chain)
    assert _same(ours, theirs), f"\nours:    {ours}\npytorch: {theirs}"


# ---- leftovers (issue 18): detach_() of a view, a custom Function that returns a view -----------
@needs_torch
@pytest.mark.parametrize("make", [lambda lib: lib.ones(3)[0], lambda lib: (lib.ones(2, 3, requires_grad=True) * 2)[1],
                                  lambda lib: (lib.ones(2, 3) * 2).reshape(6)])
def test_detach_inplace_of_a_view_raises_as_in_torch(make):
    with pytest.raises(RuntimeError, match="Can't detach views in-place"):
        make(torch).detach_()
    with pytest.raises(RuntimeError, match=r"detach_: Can't detach views in-place. Use detach\(\) instead."):
        make(tg).detach_()
    assert (tg.ones(3, requires_grad=True) * 2).detach_().grad_fn is None  # not a view: allowed


class _FirstRow(tg.autograd.Function):
    """y = a[0], returned as a view of the input (the mistake PyTorch forbids writing into)."""

    def forward(self, a):
        return a[0]

    def backward(self, g):
        return tg.pad(g.reshape(1, -1), (0, 0, 0, 1))


class _AsIs(tg.autograd.Function):
    def forward(self, a):
        return a

    def backward(self, g):
        return g


@needs_torch
@pytest.mark.parametrize("fn", [_FirstRow, _AsIs])
def test_inplace_into_a_custom_functions_view_output_raises_as_in_torch(fn):
    class TFirstRow(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            return a[0] if fn is _FirstRow else a

        @staticmethod
        def backward(ctx, g):
            return torch.nn.functional.pad(g.reshape(1, -1), (0, 0, 0, 1)) if fn is _FirstRow else g

    with pytest.raises(RuntimeError, match="is a view and is being modified inplace"):
        TFirstRow.apply(torch.ones(2, 3, requires_grad=True) * 1).mul_(2)
    out = fn.apply(tg.ones(2, 3, requires_grad=True) * 1)
    with pytest.raises(RuntimeError, match=rf"mul_: Output 0 of {fn.__name__} is a view and is being modified "
                                           r"inplace. This view was created inside a custom Function"):
        out.mul_(2)
    with tg.no_grad():
        fn.apply(tg.ones(2, 3) * 1).mul_(2)  # untracked writes stay allowed


def test_a_custom_function_returning_a_fresh_array_may_be_written():
    class Doubled(tg.autograd.Function):
        def forward(self, a):
            return a[0] * 2

        def backward(self, g):
            return tg.pad(g.reshape(1, -1), (0, 0, 0, 1)) * 2

    x = tg.ones(2, 3, requires_grad=True)
    y = Doubled.apply(x * 1)
    y.mul_(3)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[6, 6, 6], [0, 0, 0]])
