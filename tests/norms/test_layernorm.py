"""LayerNorm and F.layer_norm (norm-spec section 3): errors, the plain-NumPy reference, special
cases, PyTorch parity. Gradcheck, backend parity, state_dict round trip and 10 steps vs PyTorch
come from the shared matrix (tests/norms/test_matrix.py) through layernorm.SPECS."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn.norms.layernorm import LayerNorm, layer_norm
from tests.helpers import assert_close, check_torch, needs_torch, torch


def reference(x, k, w=None, b=None, eps=1e-5, g=None):
    """Forward (and, given the output gradient g, dx, dw, db) in float64 from the equations."""
    axes = tuple(range(x.ndim - k, x.ndim))
    lead = tuple(range(x.ndim - k))
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    invstd = 1 / np.sqrt(var + eps)
    x_hat = (x - mu) * invstd
    y = x_hat * (1 if w is None else w) + (0 if b is None else b)
    if g is None:
        return y
    g_hat = g * (1 if w is None else w)
    dx = invstd * (g_hat - g_hat.mean(axis=axes, keepdims=True)
                   - x_hat * (g_hat * x_hat).mean(axis=axes, keepdims=True))
    return y, dx, (g * x_hat).sum(axis=lead), g.sum(axis=lead)


@pytest.mark.parametrize("shape,normalized", [((4, 6), (6,)), ((2, 3, 5), (5,)), ((2, 3, 2, 2), (3, 2, 2)),
                                              ((3, 2, 4), (2, 4))])
def test_forward_and_backward_match_the_numpy_reference(shape, normalized, device):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) * 2 + 1
    w, b = rng.standard_normal(normalized), rng.standard_normal(normalized)
    g = rng.standard_normal(shape)
    layer = LayerNorm(normalized).to(tg.float64).to(device)
    with tg.no_grad():
        layer.weight.copy_(tg.tensor(w, device=device))
        layer.bias.copy_(tg.tensor(b, device=device))
    xt = tg.tensor(x, device=device, requires_grad=True)
    y = layer(xt)
    y.backward(tg.tensor(g, device=device))
    y_ref, dx_ref, dw_ref, db_ref = reference(x, len(normalized), w, b, g=g)
    assert_close(y, y_ref, atol=1e-12, what="output")
    assert_close(xt.grad, dx_ref, atol=1e-11, what="dx")
    assert_close(layer.weight.grad, dw_ref, atol=1e-11, what="dw")
    assert_close(layer.bias.grad, db_ref, atol=1e-11, what="db")


def test_conv_maps_normalize_each_sample_across_channels_and_positions():
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 4)) * [[[[1.0]], [[5.0]], [[0.1]]]]
    y = LayerNorm([3, 4, 4], elementwise_affine=False).to(tg.float64)(tg.tensor(x)).numpy()
    assert_close(y.mean(axis=(1, 2, 3)), np.zeros(2), atol=1e-12)
    assert_close(y.var(axis=(1, 2, 3)), x.var(axis=(1, 2, 3)) / (x.var(axis=(1, 2, 3)) + 1e-5), atol=1e-12)
    # channels are not normalized one by one: their scales survive
    assert y[:, 1].std() > 5 * y[:, 0].std()


@pytest.mark.parametrize("normalized,shape", [(1, (4, 1)), ([1, 1], (2, 3, 1, 1))])
def test_normalized_size_one_gives_the_bias(normalized, shape):
    layer = LayerNorm(normalized).to(tg.float64)
    with tg.no_grad():
        layer.bias.copy_(tg.tensor(np.full(layer.bias.shape, 0.7)))
        layer.weight.fill_(3.0)
    x = tg.tensor(np.random.default_rng(2).standard_normal(shape), requires_grad=True)
    y = layer(x)
    assert_close(y, np.full(shape, 0.7), atol=0, rtol=0)
    y.sum().backward()
    assert_close(layer.bias.grad, np.full(layer.bias.shape, np.prod(shape)), atol=1e-12)
    assert_close(x.grad, np.zeros(shape), atol=1e-10)


def test_train_and_eval_agree_and_a_batch_of_one_is_fine():
    layer = LayerNorm(5)
    x = tg.tensor(np.random.default_rng(3).standard_normal((1, 5)).astype(np.float32))
    train = layer(x).detach().numpy()
    assert_close(layer.eval()(x), train, atol=0, rtol=0)
    assert train.dtype == np.float32


def test_functional_without_affine_and_empty_batch():
    x = np.random.default_rng(4).standard_normal((3, 4))
    assert_close(layer_norm(tg.tensor(x), (4,)), reference(x, 1), atol=1e-12)
    assert_close(layer_norm(tg.tensor(x), [4], eps=0.5), reference(x, 1, eps=0.5), atol=1e-12)
    empty = layer_norm(tg.tensor(np.zeros((0, 4))), [4])
    assert empty.shape == (0, 4)


def test_graph_node_name_and_attributes():
    x = tg.tensor(np.ones((2, 3)) + np.arange(3), requires_grad=True)
    y = LayerNorm(3, eps=1e-4)(x)
    assert y.grad_fn.name == "LayerNormBackward"
    assert y.grad_fn.attrs["eps"] == 1e-4 and y.grad_fn.attrs["normalized_shape"] == (3,)


# ---- errors ---------------------------------------------------------------------------------
def test_shape_mismatch_error_is_pytorchs():
    with pytest.raises(RuntimeError, match=r"^Given normalized_shape=\[4, 5\], expected input with shape "
                                           r"\[\*, 4, 5\], but got input of size\[2, 5, 4\]$"):
        LayerNorm([4, 5])(tg.randn(2, 5, 4))
    with pytest.raises(RuntimeError, match=r"expected input with shape \[\*, 3, 4, 5\], but got input of "
                                           r"size\[4, 5\]$"):
        layer_norm(tg.randn(4, 5), [3, 4, 5])


def test_parameter_and_normalized_shape_errors():
    with pytest.raises(RuntimeError, match=r"^Expected weight to be of same shape as normalized_shape, but "
                                           r"got weight of shape \[3\] and normalized_shape = \[4\]$"):
        layer_norm(tg.randn(2, 4), [4], tg.randn(3))
    with pytest.raises(RuntimeError, match=r"^Expected bias to be of same shape as normalized_shape, but "
                                           r"got bias of shape \[4, 1\] and normalized_shape = \[4\]$"):
        layer_norm(tg.randn(2, 4), [4], None, tg.randn(4, 1))
    with pytest.raises(RuntimeError, match=r"^Expected normalized_shape to be at least 1-dimensional"):
        layer_norm(tg.randn(2, 4), [])
    with pytest.raises(RuntimeError, match=r"normalized_shape = \[\]$"):
        LayerNorm([])  # PyTorch only complains at the first forward; we do at construction
    with pytest.raises(TypeError, match=r"^layer_norm\(\): argument 'normalized_shape' \(position 2\) "
                                        r"must be tuple of ints, not int$"):
        layer_norm(tg.randn(2, 4), 4)
    with pytest.raises(TypeError, match="floating-point"):
        layer_norm(tg.tensor(np.ones((2, 4), dtype=np.int64)), [4])


# ---- module API -----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,keys", [({}, ["weight", "bias"]), ({"bias": False}, ["weight"]),
                                         ({"elementwise_affine": False}, [])])
def test_state_dict_keys(kwargs, keys):
    layer = LayerNorm([3, 2], **kwargs)
    assert list(layer.state_dict()) == keys
    for name in keys:
        assert layer.state_dict()[name].shape == (3, 2)
    if keys:
        assert (layer.weight.detach().numpy() == 1).all()


@needs_torch
@pytest.mark.parametrize("args,kwargs", [((4,), {}), (([4, 2, 2],), {"bias": False}),
                                         ((3,), {"eps": 1e-6, "elementwise_affine": False}),
                                         (((2, 3),), {"elementwise_affine": False, "bias": False})])
def test_repr_matches_pytorch(args, kwargs):
    assert repr(LayerNorm(*args, **kwargs)) == repr(torch.nn.LayerNorm(*args, **kwargs))


@needs_torch
@pytest.mark.parametrize("shape,normalized,affine", [((5, 7), [7], True), ((2, 3, 4, 4), [3, 4, 4], True),
                                                     ((3, 2, 5), [2, 5], False), ((6,), [6], True)])
def test_pytorch_parity(shape, normalized, affine, device):
    shapes = [shape] + ([normalized, normalized] if affine else [])
    check_torch(lambda x, *p: layer_norm(x, normalized, *p, eps=1e-3),
                lambda x, *p: torch.nn.functional.layer_norm(x, normalized, *p, eps=1e-3),
                shapes, device=device, atol=1e-10, rtol=1e-8)


@needs_torch
def test_double_backward_matches_pytorch():
    rng = np.random.default_rng(5)
    x, g = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    w, b = rng.standard_normal(4), rng.standard_normal(4)
    ours = [tg.tensor(a, requires_grad=True) for a in (x, w, b)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    gx, gw = tg.autograd.grad(layer_norm(ours[0], [4], *ours[1:]), ours[:2], tg.tensor(g), create_graph=True)
    tgx, tgw = torch.autograd.grad(torch.nn.functional.layer_norm(theirs[0], [4], *theirs[1:]), theirs[:2],
                                   torch.tensor(g), create_graph=True)
    ((gx * gx).sum() + (gw * gx[0]).sum()).backward()
    ((tgx * tgx).sum() + (tgw * tgx[0]).sum()).backward()
    for a, t in zip(ours[:2], theirs[:2]):
        assert_close(a.grad, t.grad, atol=1e-10, rtol=1e-8)
    assert ours[2].grad is None and theirs[2].grad is None  # the gradients are linear in b
