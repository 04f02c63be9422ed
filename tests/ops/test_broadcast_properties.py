"""Property tests (hypothesis): any pair of broadcastable shapes gives NumPy's forward result, and
the backward of a broadcast op is the output gradient summed over the broadcast dimensions."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_bn as tg

OPS = {
    "add": (lambda a, b: a + b, lambda a, b, g: (g, g)),
    "sub": (lambda a, b: a - b, lambda a, b, g: (g, -g)),
    "mul": (lambda a, b: a * b, lambda a, b, g: (g * b, g * a)),
    "maximum": (lambda a, b: tg.maximum(a, b) if isinstance(a, tg.Tensor) else np.maximum(a, b),
                lambda a, b, g: (g * ((a > b) + 0.5 * (a == b)), g * ((b > a) + 0.5 * (a == b)))),
}


def _reduce_to(grad, shape):
    """Reference: sum a broadcast gradient back to `shape` (leading dims, then size-1 dims)."""
    while grad.ndim > len(shape):
        grad = grad.sum(0)
    for i, n in enumerate(shape):
        if n == 1 and grad.shape[i] != 1:
            grad = grad.sum(i, keepdims=True)
    return grad


@settings(max_examples=60, deadline=None)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, min_side=0, max_side=4),
       op=st.sampled_from(sorted(OPS)), device=st.sampled_from(["cpu", "fakegpu"]), seed=st.integers(0, 2**16))
def test_broadcast_forward_and_backward(shapes, op, device, seed):
    fwd, grads = OPS[op]
    (sa, sb), out_shape = shapes.input_shapes, shapes.result_shape
    rng = np.random.default_rng(seed)
    a_np, b_np = rng.standard_normal(sa), rng.standard_normal(sb)
    g_np = rng.standard_normal(out_shape)
    a = tg.tensor(a_np, device=device, requires_grad=True)
    b = tg.tensor(b_np, device=device, requires_grad=True)
    out = fwd(a, b)
    assert out.shape == tuple(out_shape)
    np.testing.assert_allclose(out.detach().numpy(), fwd(a_np, b_np), atol=1e-12)
    out.backward(tg.tensor(g_np, device=device))
    ga, gb = grads(np.broadcast_to(a_np, out_shape), np.broadcast_to(b_np, out_shape), g_np)
    np.testing.assert_allclose(a.grad.numpy(), _reduce_to(np.asarray(ga), sa), atol=1e-10)
    np.testing.assert_allclose(b.grad.numpy(), _reduce_to(np.asarray(gb), sb), atol=1e-10)
    assert a.grad.shape == tuple(sa) and b.grad.shape == tuple(sb)


@settings(max_examples=40, deadline=None)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4), data=st.data())
def test_reductions_backward_broadcasts_back(shape, data):
    dims = data.draw(st.lists(st.integers(0, len(shape) - 1), unique=True, min_size=1))
    keepdim = data.draw(st.booleans())
    x_np = np.random.default_rng(len(shape)).standard_normal(shape)
    x = tg.tensor(x_np, requires_grad=True)
    y = x.sum(tuple(dims), keepdim=keepdim)
    np.testing.assert_allclose(y.detach().numpy(), x_np.sum(tuple(dims), keepdims=keepdim), atol=1e-12)
    g = np.random.default_rng(1).standard_normal(y.shape)
    y.backward(tg.tensor(g))
    expected = np.broadcast_to(g if keepdim else np.expand_dims(g, tuple(sorted(dims))), shape)
    np.testing.assert_allclose(x.grad.numpy(), expected, atol=1e-12)
