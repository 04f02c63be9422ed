"""The WeightNorm graph node (tinygrad_bn/norms/weightnorm.py): forward and gradients against
torch._weight_norm and a plain-NumPy float64 reference of the hand-derived formulas, gradcheck and
gradgradcheck on every backend, the dim rules (dim=-1 is the whole tensor), no eps, and the old
hook-based API (weight_g / weight_v) against torch.nn.utils.weight_norm.

The parametrization (parametrizations.weight_norm) is tested in tests/nn/test_parametrizations.py
and, through the registry, in tests/norms/test_matrix.py."""
import warnings

import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.nn as nn
from tinygrad_bn.norms.weightnorm import WeightNorm, _weight_norm, norm_except_dim
from tinygrad_bn.norms.weightnorm import remove_weight_norm, weight_norm as old_weight_norm
from tests.helpers import HAVE_TORCH, assert_close, check_grads, check_torch, needs_torch, torch
from tests.nn.parity import load_from_torch

# (weight shape, dim): per output channel, per input channel, inner axes, negative dims, whole
CASES = [((4, 3, 2, 2), 0), ((4, 3, 2, 2), 1), ((4, 3, 2, 2), 3), ((4, 3, 2, 2), -2),
         ((4, 3, 2, 2), -4), ((4, 3, 2, 2), -1), ((4, 3, 2, 2), None), ((5, 3), 0), ((5, 3), 1),
         ((5, 3), -1), ((6,), 0)]


def g_shape(shape, dim):
    if dim is None or dim == -1:
        return ()
    d = dim % len(shape)
    return tuple(n if i == d else 1 for i, n in enumerate(shape))


def reference(v, g, dim, G):
    """float64 NumPy: w = g v/||v|| and the hand-derived gradients dg = s, dv = (g/n)(G - s v/n)."""
    axes = None if dim is None or dim == -1 else tuple(i for i in range(v.ndim) if i != dim % v.ndim)
    n = np.sqrt((v * v).sum(axis=axes, keepdims=axes is not None))
    s = (G * v).sum(axis=axes, keepdims=axes is not None) / n
    return v * (g / n), s.reshape(g.shape), (g / n) * (G - s * v / n)


def arrays(shape, dim, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(shape)
    g = rng.uniform(0.5, 2.0, g_shape(shape, dim)) * rng.choice([-1, 1], g_shape(shape, dim))
    return v, g


@pytest.mark.parametrize("shape,dim", CASES)
def test_forward_and_gradients_match_numpy_reference(shape, dim, device):
    v_np, g_np = arrays(shape, dim)
    G = np.random.default_rng(1).standard_normal(shape)
    w_ref, dg_ref, dv_ref = reference(v_np, g_np, dim, G)
    v = tg.tensor(v_np, device=device, requires_grad=True)
    g = tg.tensor(g_np, device=device, requires_grad=True)
    w = _weight_norm(v, g, dim)
    assert w.grad_fn.name == "WeightNormBackward"
    assert w.shape == shape and w.device == device
    w.backward(tg.tensor(G, device=device))
    assert_close(w, w_ref, atol=1e-12, what="w")
    assert_close(g.grad, dg_ref, atol=1e-12, what="dg")
    assert_close(v.grad, dv_ref, atol=1e-12, what="dv")


@needs_torch
@pytest.mark.parametrize("shape,dim", CASES)
def test_matches_torch_weight_norm(shape, dim):
    v_np, g_np = arrays(shape, dim)
    torch_dim = -1 if dim is None else dim
    check_torch(lambda v, g: _weight_norm(v, g, dim), lambda v, g: torch._weight_norm(v, g, torch_dim),
                [], arrays=[v_np, g_np], atol=1e-12, rtol=1e-10)


@needs_torch
@pytest.mark.parametrize("shape,dim", CASES)
def test_norm_except_dim_matches_torch(shape, dim):
    v = np.random.default_rng(2).standard_normal(shape)
    ours = norm_except_dim(tg.tensor(v), 2, dim)
    theirs = torch.norm_except_dim(torch.tensor(v), 2, -1 if dim is None else dim)
    assert ours.shape == tuple(theirs.shape)
    assert_close(ours, theirs, atol=1e-12)


@pytest.mark.parametrize("shape,dim", [c for c in CASES if c[0] != (6,)] + [((6,), 0)])
def test_gradcheck_and_gradgradcheck(shape, dim, device):
    v, g = arrays(shape, dim)
    check_grads(lambda v, g: _weight_norm(v, g, dim), [], device=device, arrays=[v, g])


def test_saves_only_its_inputs():
    v = tg.tensor(np.ones((3, 2)), requires_grad=True)
    g = tg.tensor(np.ones((3, 1)), requires_grad=True)
    w = _weight_norm(v, g, 0)
    assert w.grad_fn.saved_shapes() == {"v": (3, 2), "g": (3, 1)}


def test_zero_direction_gives_nan_like_torch():
    """No eps: v = 0 has no direction."""
    v = tg.tensor(np.zeros((2, 3)), requires_grad=True)
    g = tg.tensor(np.ones((2, 1)), requires_grad=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        assert np.isnan(_weight_norm(v, g, 0).detach().numpy()).all()
    if HAVE_TORCH:
        assert torch._weight_norm(torch.zeros(2, 3), torch.ones(2, 1), 0).isnan().all()


def test_dim_out_of_range_message_matches_torch():
    with pytest.raises(IndexError, match=r"^Dimension out of range \(expected to be in range of "
                                         r"\[-4, 3\], but got 4\)$"):
        norm_except_dim(tg.zeros(2, 3, 4, 5), 2, 4)
    with pytest.raises(IndexError, match=r"\[-2, 1\], but got -3\)"):
        norm_except_dim(tg.zeros(2, 3), 2, -3)
    if HAVE_TORCH:
        with pytest.raises(IndexError, match=r"\[-4, 3\], but got 4\)"):
            torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv2d(2, 3, (4, 5)), dim=4)


def test_wrong_g_shape_is_named():
    with pytest.raises(ValueError, match=r"g must have shape \[3, 1\] for v of shape \[3, 2\] and "
                                         r"dim=0, got \[3\]"):
        _weight_norm(tg.ones(3, 2), tg.ones(3), 0)


def test_dim_none_is_stored_as_minus_one():
    v, g = tg.ones(3, 2), tg.ones(())
    assert WeightNorm.apply(v, g, dim=-1).shape == (3, 2)
    assert _weight_norm(v, g, None).grad_fn is None  # nothing requires grad: not recorded


# ---- the old API ------------------------------------------------------------------------------
def test_old_api_warns_and_uses_weight_g_weight_v():
    lin = nn.Linear(3, 4)
    w = lin.weight.detach().numpy().copy()
    with pytest.warns(FutureWarning, match="parametrizations.weight_norm"):
        old_weight_norm(lin)
    assert list(lin.state_dict()) == ["bias", "weight_g", "weight_v"]
    assert lin.weight_g.shape == (4, 1)
    assert_close(lin.weight, w, atol=1e-7)
    with pytest.raises(RuntimeError, match="Cannot register two weight_norm hooks on the same "
                                           "parameter weight"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            old_weight_norm(lin)


@needs_torch
@pytest.mark.parametrize("dim", [0, 1, None])
def test_old_api_matches_torch(dim):
    ours = nn.Linear(3, 4).double()  # float64 before loading: loading casts
    theirs = torch.nn.Linear(3, 4).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old_weight_norm(ours, dim=dim)
        torch.nn.utils.weight_norm(theirs, dim=dim)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    load_from_torch(ours, theirs)
    x = np.random.default_rng(0).standard_normal((5, 3))
    xt = torch.tensor(x)
    y = ours(tg.tensor(x))
    yt = theirs(xt)
    assert_close(y, yt, atol=1e-12, rtol=1e-10)
    y.sum().backward()
    yt.sum().backward()
    for name, p in ours.named_parameters():
        assert_close(p.grad, dict(theirs.named_parameters())[name].grad, atol=1e-12, rtol=1e-10, what=name)
    remove_weight_norm(ours)
    torch.nn.utils.remove_weight_norm(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["bias", "weight"]
    assert isinstance(ours.weight, nn.Parameter)
    assert_close(ours.weight, theirs.weight, atol=1e-12, rtol=1e-10)
    with pytest.raises(ValueError, match="weight_norm of 'weight' not found in"):
        remove_weight_norm(ours)


def test_removing_an_old_api_reparametrization_that_is_not_there_is_an_error():
    from tinygrad_bn.norms.spectralnorm import remove_spectral_norm, spectral_norm as old_spectral_norm
    layer = nn.Linear(3, 2)
    for remove, api in ((remove_weight_norm, "weight_norm"), (remove_spectral_norm, "spectral_norm")):
        with pytest.raises(ValueError, match=f"{api} of 'weight' not found in Linear"):
            remove(layer)
    with pytest.warns(FutureWarning):
        old_weight_norm(layer)
    assert remove_weight_norm(layer) is layer and "weight" in dict(layer.named_parameters())
    old_spectral_norm(layer)
    assert remove_spectral_norm(layer) is layer and "weight" in dict(layer.named_parameters())
