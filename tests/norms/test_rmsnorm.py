"""RMSNorm and F.rms_norm (norm-spec section 5): errors, eps=None per dtype, the plain-NumPy
reference, PyTorch parity. Gradcheck, backend parity, state_dict round trip and 10 steps vs
PyTorch come from the shared matrix through rmsnorm.SPECS."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn.norms.rmsnorm import RMSNorm, default_eps, rms_norm
from tests.helpers import assert_close, check_torch, needs_torch, torch

EPS32, EPS64 = 1.1920928955078125e-07, 2.220446049250313e-16


def reference(x, k, w=None, eps=EPS64, g=None):
    """Forward (and, given the output gradient g, dx and dw) in float64 from the equations."""
    axes = tuple(range(x.ndim - k, x.ndim))
    r = 1 / np.sqrt((x * x).mean(axis=axes, keepdims=True) + eps)
    x_hat = x * r
    y = x_hat * (1 if w is None else w)
    if g is None:
        return y
    g_hat = g * (1 if w is None else w)
    dx = r * (g_hat - x_hat * (g_hat * x_hat).mean(axis=axes, keepdims=True))
    return y, dx, (g * x_hat).sum(axis=tuple(range(x.ndim - k)))


@pytest.mark.parametrize("shape,normalized", [((4, 6), (6,)), ((2, 3, 5), (5,)), ((2, 3, 2, 2), (3, 2, 2))])
def test_forward_and_backward_match_the_numpy_reference(shape, normalized, device):
    rng = np.random.default_rng(0)
    x, w, g = rng.standard_normal(shape) + 0.5, rng.standard_normal(normalized), rng.standard_normal(shape)
    layer = RMSNorm(normalized, eps=1e-6).to(tg.float64).to(device)
    with tg.no_grad():
        layer.weight.copy_(tg.tensor(w, device=device))
    xt = tg.tensor(x, device=device, requires_grad=True)
    y = layer(xt)
    y.backward(tg.tensor(g, device=device))
    y_ref, dx_ref, dw_ref = reference(x, len(normalized), w, eps=1e-6, g=g)
    assert_close(y, y_ref, atol=1e-12, what="output")
    assert_close(xt.grad, dx_ref, atol=1e-11, what="dx")
    assert_close(layer.weight.grad, dw_ref, atol=1e-11, what="dw")
    assert y.grad_fn.name == "RMSNormBackward"


def test_eps_none_is_the_epsilon_of_the_computation_type():
    assert default_eps(np.dtype(np.float32)) == EPS32
    assert default_eps(np.dtype(np.float16)) == EPS32  # half inputs use float32's eps, as PyTorch does
    assert default_eps(np.dtype(np.float64)) == EPS64
    # tiny inputs, where eps dominates mean(x^2): the two choices give very different outputs
    x = np.array([[1e-5, -1e-5, 2e-5, 0.0]])
    assert_close(rms_norm(tg.tensor(x), [4]), reference(x, 1, eps=EPS64), atol=1e-12)
    x32 = x.astype(np.float32)
    y32 = rms_norm(tg.tensor(x32), [4])
    assert y32.dtype == np.float32
    assert_close(y32, reference(x, 1, eps=EPS32), atol=1e-6)
    assert abs(y32.numpy()[0, 2] - reference(x, 1, eps=EPS64)[0, 2]) > 1.0


@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eps_none_matches_pytorch(dtype):
    x = (np.random.default_rng(1).standard_normal((3, 8)) * 3e-4).astype(dtype)
    ours = RMSNorm(8)(tg.tensor(x)) if dtype == np.float32 else RMSNorm(8).to(tg.float64)(tg.tensor(x))
    theirs = torch.nn.RMSNorm(8).to(torch.float32 if dtype == np.float32 else torch.float64)(torch.tensor(x))
    assert_close(ours, theirs, atol=1e-6 if dtype == np.float32 else 1e-12, rtol=1e-5)


def test_train_and_eval_agree_and_no_weight():
    layer = RMSNorm([2, 3], elementwise_affine=False)
    assert list(layer.state_dict()) == [] and layer.weight is None
    x = tg.randn(4, 2, 3)
    assert_close(layer.eval()(x), layer.train()(x), atol=0, rtol=0)
    assert_close(layer(x), reference(x.numpy().astype(np.float64), 2, eps=EPS32), atol=1e-6)


def test_state_dict_keys():
    layer = RMSNorm(5)
    assert list(layer.state_dict()) == ["weight"]
    assert (layer.weight.detach().numpy() == 1).all() and layer.weight.shape == (5,)


# ---- errors ---------------------------------------------------------------------------------
def test_shape_mismatch_error_is_pytorchs():
    # sic: no ", " after the "*" in PyTorch's rms_norm message (LayerNorm's has one)
    with pytest.raises(RuntimeError, match=r"^Given normalized_shape=\[4, 5\], expected input with shape "
                                           r"\[\*4, 5\], but got input of size\[2, 5, 4\]$"):
        RMSNorm([4, 5])(tg.randn(2, 5, 4))
    with pytest.raises(RuntimeError, match=r"^Given normalized_shape=\[4\], expected input with shape "
                                           r"\[\*4\], but got input of size\[5\]$"):
        RMSNorm(4)(tg.randn(5))


def test_other_errors():
    with pytest.raises(ValueError, match=r"^Input tensor must have at least 2 dimensions, but got 1$"):
        RMSNorm([4, 5])(tg.randn(5))
    with pytest.raises(RuntimeError, match=r"^Expected weight to be of same shape as normalized_shape, but "
                                           r"got weight of shape \[3\] and normalized_shape = \[4\]$"):
        rms_norm(tg.randn(2, 4), [4], tg.randn(3))
    with pytest.raises(RuntimeError, match=r"^Expected normalized_shape to be at least 1-dimensional"):
        rms_norm(tg.randn(2, 4), [])
    with pytest.raises(TypeError, match=r"^rms_norm\(\): argument 'normalized_shape' \(position 2\) must be "
                                        r"tuple of ints, not int$"):
        rms_norm(tg.randn(2, 4), 4)


def test_unbatched_and_empty_inputs():
    x = np.random.default_rng(2).standard_normal(4)
    assert_close(RMSNorm(4).to(tg.float64)(tg.tensor(x)), reference(x, 1, eps=EPS64), atol=1e-12)
    assert rms_norm(tg.zeros(0, 4), [4]).shape == (0, 4)


# ---- PyTorch --------------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("args,kwargs", [((4,), {}), (([4, 2],), {"eps": 1e-6, "elementwise_affine": False}),
                                         (((3,),), {"eps": 1e-5})])
def test_repr_matches_pytorch(args, kwargs):
    assert repr(RMSNorm(*args, **kwargs)) == repr(torch.nn.RMSNorm(*args, **kwargs))


@needs_torch
@pytest.mark.parametrize("shape,normalized,eps", [((5, 7), [7], None), ((2, 3, 4, 4), [3, 4, 4], 1e-6),
                                                  ((3, 2, 5), [2, 5], 1e-3)])
def test_pytorch_parity(shape, normalized, eps, device):
    check_torch(lambda x, w: rms_norm(x, normalized, w, eps=eps),
                lambda x, w: torch.nn.functional.rms_norm(x, normalized, w, eps=eps),
                [shape, normalized], device=device, atol=1e-10, rtol=1e-8)


@needs_torch
def test_double_backward_matches_pytorch():
    rng = np.random.default_rng(3)
    x, w, g = rng.standard_normal((3, 4)), rng.standard_normal(4), rng.standard_normal((3, 4))
    ours = [tg.tensor(a, requires_grad=True) for a in (x, w)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w)]
    gx, gw = tg.autograd.grad(rms_norm(ours[0], [4], ours[1]), ours, tg.tensor(g), create_graph=True)
    tgx, tgw = torch.autograd.grad(torch.nn.functional.rms_norm(theirs[0], [4], theirs[1]), theirs,
                                   torch.tensor(g), create_graph=True)
    ((gx * gx).sum() + (gw * gx[1]).sum()).backward()
    ((tgx * tgx).sum() + (tgw * tgx[1]).sum()).backward()
    for a, t in zip(ours, theirs):
        assert_close(a.grad, t.grad, atol=1e-10, rtol=1e-8)
