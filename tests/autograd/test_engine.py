"""The graph walk: accumulation, retain_graph, hooks, grad(), higher order, in-place safety,
deep graphs and memory."""
import gc
import weakref

import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn import autograd
from tinygrad_bn.autograd import Function
from tests.helpers import assert_close, needs_torch, torch


def leaf(values, device="cpu", dtype=None):
    return tg.tensor(values, dtype=dtype, device=device, requires_grad=True)


def test_reused_tensor_gradients_are_summed(device):
    x = leaf([1.0, 2.0, 3.0], device)
    y = x * x + x * 3 + x.sum()
    y.sum().backward()
    assert_close(x.grad, 2 * np.array([1.0, 2, 3]) + 3 + 3)


def test_leaf_grad_accumulates_until_zeroed(device):
    x = leaf([1.0, -2.0], device)
    for _ in range(3):
        (x * 2).sum().backward()
    assert_close(x.grad, [6.0, 6.0])
    x.grad = None
    (x * 2).sum().backward()
    assert_close(x.grad, [2.0, 2.0])


def test_shared_passthrough_gradient_is_not_aliased():
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    (a + b).sum().backward()
    a.grad.data += 10  # an in-place update of one leaf's grad must not change the other's
    assert_close(b.grad, [1.0, 1.0])


def test_leaf_grads_never_share_memory_with_each_other_or_the_caller(device):
    a, b = leaf([1.0, 2.0, 3.0, 4.0], device), leaf([[3.0, 4.0], [5.0, 6.0]], device)
    gradient = tg.ones(2, 2, device=device)
    (a.reshape(2, 2) + b).backward(gradient)   # a.grad is a reshape (a view) of b's gradient
    a.grad.data += 10
    gradient.data += 100
    assert_close(b.grad, np.ones((2, 2)))
    assert_close(a.grad, np.full(4, 11.0))


def test_a_fresh_gradient_is_stored_without_a_copy():
    x = leaf(np.ones(3))
    arriving = []
    x.register_hook(lambda g: arriving.append(g.data))  # the array MulBackward made for x
    (x * 2).backward(tg.ones(3))
    assert x.grad.data is arriving[0]  # stored as it is: a full-size copy per leaf would be waste


def test_backward_on_non_scalar_needs_gradient():
    x = leaf([[1.0, 2.0]])
    with pytest.raises(RuntimeError, match=r"grad can be implicitly created only for scalar outputs.*\[1, 2\]"):
        (x * 2).backward()
    (x * 2).backward(tg.tensor([[1.0, 0.5]]))
    assert_close(x.grad, [[2.0, 1.0]])


def test_backward_gradient_shape_mismatch():
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match=r"Mismatch in shape: grad_output\[0\] has a shape of \[3\]"):
        (x * 2).backward(tg.tensor([1.0, 1.0, 1.0]))


def test_second_backward_through_freed_graph_raises():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match=r"backward through the graph a second time.*MulBackward"):
        y.backward()


def test_retain_graph_allows_second_backward():
    x = leaf([1.0, 2.0])
    y = (x.exp()).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert_close(x.grad, 2 * np.exp([1.0, 2.0]))


def test_saved_arrays_are_freed_after_backward():
    x = leaf(np.ones(4))
    y = x.exp()
    node = y.grad_fn
    assert node._saved
    y.sum().backward()
    assert node._saved is None and node._released


def test_no_grad_context_and_decorator():
    x = leaf([1.0])
    with tg.no_grad():
        y = x * 2
        with tg.enable_grad():
            z = x * 2
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad

    @tg.no_grad()
    def f(t):
        return t * 3
    assert not f(x).requires_grad
    assert tg.is_grad_enabled()


def test_detach_cuts_the_graph_and_shares_data():
    x = leaf([1.0, 2.0])
    d = (x * 2).detach()
    assert not d.requires_grad and d.grad_fn is None
    y = (x * d).sum()
    y.backward()
    assert_close(x.grad, [2.0, 4.0])


def test_requires_grad_on_integer_tensor_is_refused():
    with pytest.raises(RuntimeError, match="Only Tensors of floating point dtype can require gradients"):
        tg.tensor([1, 2, 3], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"int64"):
        tg.tensor([1, 2]).requires_grad_()


def test_grad_on_integer_or_non_requiring_input_is_refused():
    x = tg.tensor([1, 2, 3])
    y = leaf([1.0, 2.0, 3.0])
    with pytest.raises(RuntimeError, match=r"input 0 .*int64.* does not require grad"):
        autograd.grad((y * 2).sum(), [x])


def test_hooks_on_leaf_and_non_leaf(device):
    x = leaf([1.0, 2.0], device)
    seen = []
    x.register_hook(lambda g: seen.append(("x", g.tolist())))
    y = x * 3
    handle = y.register_hook(lambda g: g * 10)
    y.sum().backward()
    assert_close(x.grad, [30.0, 30.0])
    assert seen == [("x", [30.0, 30.0])]
    handle.remove()
    x.grad = None
    (x * 3).sum().backward()
    assert_close(x.grad, [3.0, 3.0])


def test_retain_grad_keeps_non_leaf_grad():
    x = leaf([1.0, 2.0])
    y = x * 2
    y.retain_grad()
    z = x * 2
    (y * y + z).sum().backward()
    assert_close(y.grad, [4.0, 8.0])
    assert z.grad is None


def test_autograd_grad_returns_without_touching_dot_grad():
    x, w = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    (gx,) = autograd.grad((x * w).sum(), [x])
    assert_close(gx, [3.0, 4.0])
    assert x.grad is None and w.grad is None


def test_autograd_grad_of_non_leaf_and_unused_inputs():
    x = leaf([1.0, 2.0])
    h = x * 2
    unused = leaf([5.0])
    y = (h * h).sum()
    gh, gu = autograd.grad(y, [h, unused], allow_unused=True)
    assert_close(gh, [4.0, 8.0])
    assert gu is None
    with pytest.raises(RuntimeError, match="was not used in the graph"):
        autograd.grad((x * 2).sum(), [unused])


def test_double_backward_hessian_vector_product(device):
    rng = np.random.default_rng(0)
    xs, vs = rng.standard_normal(5), rng.standard_normal(5)
    x = leaf(xs, device)
    y = (x ** 3).sum()
    (g,) = autograd.grad(y, [x], create_graph=True)
    (hv,) = autograd.grad((g * tg.tensor(vs, device=device)).sum(), [x])
    assert_close(hv, 6 * xs * vs, atol=1e-10)


@needs_torch
def test_hessian_vector_product_matches_torch():
    rng = np.random.default_rng(1)
    xs, ws, vs = rng.standard_normal(4), rng.standard_normal((4, 4)), rng.standard_normal(4)

    def f(lib, x, w):
        h = lib.tanh(w @ x)
        return (h * h).sum() + (x * x.exp()).sum()
    x, w = leaf(xs), tg.tensor(ws)
    (g,) = autograd.grad(f(tg, x, w), [x], create_graph=True)
    (hv,) = autograd.grad(g, [x], grad_outputs=[tg.tensor(vs)])
    _, ref = torch.autograd.functional.hvp(lambda t: f(torch, t, torch.tensor(ws)), torch.tensor(xs), torch.tensor(vs))
    assert_close(hv, ref, atol=1e-10)


def test_create_graph_gradient_accumulates_as_graph():
    x = leaf([2.0])
    (x ** 2).sum().backward(create_graph=True)
    assert x.grad.requires_grad
    (gg,) = autograd.grad(x.grad.sum(), [x])
    assert_close(gg, [2.0])


# ---- in-place safety ------------------------------------------------------------------------
def test_inplace_change_of_saved_tensor_is_detected():
    x = leaf([1.0, 2.0])
    y = x.exp()
    y.add_(1)  # ExpBackward saved y
    with pytest.raises(RuntimeError, match=r"modified by an inplace operation: \[ExpBackward, saved 'y'\] is at version 1; expected version 0"):
        y.sum().backward()


def test_inplace_change_of_saved_input_names_the_op():
    x = leaf([1.0, 2.0])
    a = x * 1
    b = a * a
    a.mul_(2)
    with pytest.raises(RuntimeError, match=r"MulBackward.*modified by an inplace|modified by an inplace operation: \[MulBackward"):
        b.sum().backward()


def test_inplace_on_leaf_requiring_grad_is_refused():
    x = leaf([1.0])
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place operation"):
        x.add_(1)
    with tg.no_grad():
        x.add_(1)  # fine outside the graph (optimizer updates)
    assert_close(x.detach(), [2.0])


def test_inplace_ops_rebase_history_correctly():
    x = leaf([1.0, 2.0])
    y = x * 2
    y.add_(1)
    y.mul_(3)
    y.sum().backward()
    assert_close(x.grad, [6.0, 6.0])
    assert_close(y.detach(), [9.0, 15.0])


def test_setitem_records_gradient():
    x = leaf([1.0, 2.0, 3.0])
    v = leaf([10.0])
    y = x * 1
    y[1] = v[0] * 2
    (y * tg.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert_close(x.grad, [1.0, 0.0, 3.0])
    assert_close(v.grad, [4.0])


# ---- engine robustness ----------------------------------------------------------------------
def test_deep_chain_of_100000_ops_backpropagates():
    x = leaf([1.0])
    y = x
    for _ in range(100_000):
        y = y * 1.0
    y.sum().backward()
    assert_close(x.grad, [1.0])


def test_function_returning_wrong_shape_gradient_is_reported():
    class Bad(Function):
        def forward(self, x):
            return x * 2

        def backward(self, g):
            return g.sum()
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match=r"function BadBackward returned an invalid gradient at index 0 - got \[\] but expected shape \[2\]"):
        Bad.apply(x).sum().backward()


def test_graph_is_freed_when_output_is_dropped():
    x = leaf(np.ones(3))
    y = (x * 2).exp()
    ref = weakref.ref(y.grad_fn)
    del y
    gc.collect()
    assert ref() is None


def test_memory_is_flat_over_1000_mlp_steps():
    psutil = pytest.importorskip("psutil")
    proc = psutil.Process()
    rng = np.random.default_rng(0)
    w1 = leaf(rng.standard_normal((32, 64)) * 0.1, dtype=tg.float32)
    w2 = leaf(rng.standard_normal((64, 10)) * 0.1, dtype=tg.float32)
    x = tg.tensor(rng.standard_normal((64, 32)), dtype=tg.float32)
    nodes = []

    def step():
        h = (x @ w1).relu()
        loss = ((h @ w2) ** 2).mean()
        loss.backward()
        nodes.append(weakref.ref(loss.grad_fn))
        with tg.no_grad():
            for w in (w1, w2):
                w.data -= 0.01 * w.grad.data
                w.grad = None
    for _ in range(100):
        step()
    gc.collect()
    before = proc.memory_info().rss
    for _ in range(1000):
        step()
    gc.collect()
    after = proc.memory_info().rss
    assert after - before < 8 * 2 ** 20, f"resident memory grew by {(after - before) / 2**20:.1f} MiB"
    assert sum(r() is not None for r in nodes) == 0, "graphs from earlier steps are still alive"


def test_mixing_devices_names_op_and_devices():
    a = tg.tensor([1.0, 2.0])
    b = tg.tensor([1.0, 2.0], device="fakegpu")
    with pytest.raises(RuntimeError, match=r"Add: expected all tensors to be on the same device.*cpu and fakegpu"):
        a + b
