"""The SpectralNorm graph node and the _SpectralNorm parametrization module
(tinygrad_bn/norms/spectralnorm.py): the node against a float64 NumPy reference of
dW = G/sigma - (<G, W>/sigma^2) u v^T and against PyTorch autograd with u, v held constant;
gradcheck and gradgradcheck on every backend; the power iteration and its 15-step warm start
replayed in NumPy from the seeded generator and run through PyTorch's own _power_method; 1-D
weights; error messages; and the old hook-based API against torch.nn.utils.spectral_norm.

The parametrization as a whole (keys, repr, training steps vs PyTorch) is tested in
tests/nn/test_parametrizations.py and through the registry in tests/norms/test_matrix.py."""
import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.nn as nn
from tinygrad_bn.autograd import gradcheck, gradgradcheck
from tinygrad_bn.norms.spectralnorm import _SpectralNorm, remove_spectral_norm, spectral_normalize
from tinygrad_bn.norms.spectralnorm import spectral_norm as old_spectral_norm
from tests.helpers import assert_close, check_grads, needs_torch, torch
from tests.nn.parity import load_from_torch

CASES = [((4, 3, 2, 2), 0), ((4, 3, 2, 2), 1), ((4, 3, 2, 2), 2), ((5, 3), 0), ((5, 3), 1)]


def as_matrix(w, dim):
    return np.moveaxis(w, dim, 0).reshape(w.shape[dim], -1)


def normalize(a, eps=1e-12):
    return a / max(np.sqrt((a * a).sum()), eps)


def node_arrays(shape, dim, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape)
    h, k = as_matrix(w, dim).shape
    return w, normalize(rng.standard_normal(h)), normalize(rng.standard_normal(k))


@pytest.mark.parametrize("shape,dim", CASES)
def test_node_matches_numpy_reference(shape, dim, device):
    w_np, u_np, v_np = node_arrays(shape, dim)
    G = np.random.default_rng(1).standard_normal(shape)
    sigma = u_np @ as_matrix(w_np, dim) @ v_np
    C = np.moveaxis(np.outer(u_np, v_np).reshape(np.moveaxis(w_np, dim, 0).shape), 0, dim)
    dw_ref = G / sigma - (G * w_np).sum() / sigma ** 2 * C
    w = tg.tensor(w_np, device=device, requires_grad=True)
    y = spectral_normalize(w, tg.tensor(u_np, device=device), tg.tensor(v_np, device=device), dim)
    assert y.grad_fn.name == "SpectralNormBackward"
    assert y.grad_fn.saved_shapes() == {"weight": shape, "u": u_np.shape, "v": v_np.shape}
    y.backward(tg.tensor(G, device=device))
    assert_close(y, w_np / sigma, atol=1e-12, what="W / sigma")
    assert_close(w.grad, dw_ref, atol=1e-12, what="dW")


@needs_torch
@pytest.mark.parametrize("shape,dim", CASES)
def test_node_matches_torch_autograd_with_constant_u_v(shape, dim):
    w_np, u_np, v_np = node_arrays(shape, dim)
    G = np.random.default_rng(1).standard_normal(shape)
    w = tg.tensor(w_np, requires_grad=True)
    y = spectral_normalize(w, tg.tensor(u_np), tg.tensor(v_np), dim)
    y.backward(tg.tensor(G))
    wt = torch.tensor(w_np, requires_grad=True)
    mat = wt.permute(dim, *[d for d in range(wt.ndim) if d != dim]).flatten(1)
    yt = wt / torch.vdot(torch.tensor(u_np), torch.mv(mat, torch.tensor(v_np)))
    yt.backward(torch.tensor(G))
    assert_close(y, yt, atol=1e-12)
    assert_close(w.grad, wt.grad, atol=1e-12)


@pytest.mark.parametrize("shape,dim", CASES)
def test_node_gradcheck_and_gradgradcheck(shape, dim, device):
    w, u, v = node_arrays(shape, dim)
    ut, vt = tg.tensor(u, device=device), tg.tensor(v, device=device)
    check_grads(lambda w: spectral_normalize(w, ut, vt, dim), [], device=device, arrays=[w])


def test_node_input_checks():
    with pytest.raises(ValueError, match=r"u must have shape \[3\] and v \[4\]; got \[4\] and \[3\]"):
        spectral_normalize(tg.ones(3, 4), tg.ones(4), tg.ones(3))
    with pytest.raises(IndexError, match=r"dim=2 is out of range for a weight of shape \[3, 4\]"):
        spectral_normalize(tg.ones(3, 4), tg.ones(3), tg.ones(4), dim=2)
    w, u, v = node_arrays((4, 3, 2), 1)
    assert_close(spectral_normalize(tg.tensor(w), tg.tensor(u), tg.tensor(v), dim=-2),
                 spectral_normalize(tg.tensor(w), tg.tensor(u), tg.tensor(v), dim=1), atol=0)
    with pytest.raises(ValueError, match="at least 2 dims"):
        spectral_normalize(tg.ones(3), tg.ones(3), tg.ones(1))


def test_backward_survives_a_later_training_step():
    """u, v are cloned into the node: a second training-mode access (which updates the buffers in
    place) must not break, or change, the pending backward of the first."""
    lin = nn.Linear(3, 4).double()
    sn = _SpectralNorm(lin.weight, n_power_iterations=1)
    w = tg.tensor(np.random.default_rng(0).standard_normal((4, 3)), requires_grad=True)
    y1 = sn(w)
    u1, v1 = sn._u.detach().numpy().copy(), sn._v.detach().numpy().copy()
    sn(w)  # iterates the buffers again
    assert not np.allclose(sn._u.numpy(), u1)  # the buffers moved on
    G = np.ones((4, 3))
    y1.backward(tg.tensor(G))
    sigma = u1 @ w.detach().numpy() @ v1
    expected = G / sigma - (G * w.detach().numpy()).sum() / sigma ** 2 * np.outer(u1, v1)
    assert_close(w.grad, expected, atol=1e-12)


# ---- the power iteration ------------------------------------------------------------------------
def replay(weight, dim, seed, iterations, eps=1e-12):
    """What registration must produce: u, v ~ N(0,1) from the device generator (u first),
    normalized, then `iterations` steps of u = normalize(W v), v = normalize(W^T u)."""
    mat = as_matrix(weight, dim)
    tg.manual_seed(seed)
    u = normalize(tg.randn(mat.shape[0], dtype=tg.float64).numpy(), eps)
    v = normalize(tg.randn(mat.shape[1], dtype=tg.float64).numpy(), eps)
    start = (u.copy(), v.copy())
    for _ in range(iterations):
        u = normalize(mat @ v, eps)
        v = normalize(mat.T @ u, eps)
    return start, u, v


@pytest.mark.parametrize("shape,dim", CASES)
def test_warm_start_is_15_iterations_from_the_seeded_generator(shape, dim):
    w = np.random.default_rng(3).standard_normal(shape)
    _, u, v = replay(w, dim, seed=7, iterations=15)
    tg.manual_seed(7)
    sn = _SpectralNorm(tg.tensor(w), dim=dim)
    assert sn._u.dtype == np.float64 and sn._u.shape == u.shape
    assert_close(sn._u, u, atol=1e-13)
    assert_close(sn._v, v, atol=1e-13)


@needs_torch
@pytest.mark.parametrize("shape,dim", CASES)
def test_power_iteration_matches_torch_power_method(shape, dim):
    """Same start vectors, then PyTorch's own _power_method: same u and v."""
    w = np.random.default_rng(3).standard_normal(shape)
    (u0, v0), _, _ = replay(w, dim, seed=7, iterations=0)
    tg.manual_seed(7)
    ours = _SpectralNorm(tg.tensor(w), n_power_iterations=2, dim=dim)
    theirs = torch.nn.utils.parametrizations._SpectralNorm(torch.tensor(w), 2, dim)
    with torch.no_grad():
        theirs._u.copy_(torch.tensor(u0))
        theirs._v.copy_(torch.tensor(v0))
        theirs._power_method(theirs._reshape_weight_to_matrix(torch.tensor(w)), 15)
    assert_close(ours._u, theirs._u, atol=1e-13)
    assert_close(ours._v, theirs._v, atol=1e-13)
    # one training-mode call: 2 more iterations, then W / sigma
    y, yt = ours(tg.tensor(w)), theirs(torch.tensor(w))
    assert_close(y, yt, atol=1e-12)
    assert_close(ours._u, theirs._u, atol=1e-13)
    ours.eval(), theirs.eval()
    u_before = ours._u.numpy().copy()
    assert_close(ours(tg.tensor(w * 2)), theirs(torch.tensor(w * 2)), atol=1e-12)
    np.testing.assert_array_equal(ours._u.numpy(), u_before)  # eval: no iteration


def test_eval_mode_never_iterates():
    sn = _SpectralNorm(tg.randn(4, 3))
    sn.eval()
    u, v = sn._u.numpy().copy(), sn._v.numpy().copy()
    version = sn._u._version[0]
    for _ in range(3):
        sn(tg.randn(4, 3))
    np.testing.assert_array_equal(sn._u.numpy(), u)
    np.testing.assert_array_equal(sn._v.numpy(), v)
    assert sn._u._version[0] == version


def test_training_mode_iterates_in_place_without_graph():
    w = tg.randn(4, 3, requires_grad=True)
    sn = _SpectralNorm(w.detach(), n_power_iterations=3)
    u_buffer = sn._u
    u_array = sn._u.data
    before = u_array.copy()
    sn(w)
    assert sn._u is u_buffer and sn._u.data is u_array  # same buffer, same array: in place
    assert not sn._u.requires_grad and sn._u.grad_fn is None
    assert sn._u._version[0] > 0
    assert before.shape == u_array.shape


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_buffers_follow_the_weight_dtype_and_device(dtype, device):
    sn = _SpectralNorm(tg.tensor(np.ones((3, 2), dtype=dtype), device=device))
    assert sn._u.dtype == dtype and sn._u.device == device and sn._v.shape == (2,)


# ---- 1-D weights --------------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("scale", [1.0, 1e-14])
def test_one_dimensional_weight_is_w_over_max_norm_eps(scale):
    w_np = np.random.default_rng(0).standard_normal(5) * scale
    sn = _SpectralNorm(tg.tensor(w_np))
    assert not sn._buffers  # no u, v for a vector
    w = tg.tensor(w_np, requires_grad=True)
    y = sn(w)
    wt = torch.tensor(w_np, requires_grad=True)
    yt = torch.nn.functional.normalize(wt, dim=0, eps=1e-12)
    assert_close(y, yt, atol=1e-12)
    g = np.arange(5.0)
    y.backward(tg.tensor(g))
    yt.backward(torch.tensor(g))
    assert_close(w.grad, wt.grad, atol=1e-9, rtol=1e-9)


# ---- errors -------------------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("shape,kwargs", [((3, 4), dict(dim=2)), ((3, 4), dict(dim=-3)),
                                          ((3, 4), dict(n_power_iterations=0)),
                                          ((3, 4), dict(n_power_iterations=-1)),
                                          ((3, 4), dict(dim=5, n_power_iterations=0)),
                                          ((3,), dict(n_power_iterations=0))])
def test_error_messages_match_torch(shape, kwargs):
    with pytest.raises((IndexError, ValueError)) as theirs:
        torch.nn.utils.parametrizations._SpectralNorm(torch.ones(shape), **kwargs)
    with pytest.raises(theirs.type) as ours:
        _SpectralNorm(tg.ones(*shape), **kwargs)
    assert str(ours.value) == str(theirs.value)


def test_error_messages_are_the_specs():
    with pytest.raises(ValueError, match=r"^Expected n_power_iterations to be positive, but got "
                                         r"n_power_iterations=0$"):
        _SpectralNorm(tg.ones(3, 4), n_power_iterations=0)
    with pytest.raises(IndexError, match=r"^Dimension out of range \(expected to be in range of "
                                         r"\[-2, 1\] but got 2\)$"):
        _SpectralNorm(tg.ones(3, 4), dim=2)


# ---- gradients through the module: what the shared matrix cannot check --------------------------
def functional(layer):
    """fn(x, weight) with the module's buffers restored before every call (as the matrix does)."""
    plist = layer.parametrizations.weight
    buffers = {n: b.data.copy() for n, b in layer.named_buffers()}

    def fn(x, w):
        for n, b in layer.named_buffers():
            b.data[...] = buffers[n]
        saved = plist._parameters["original"]
        plist._parameters["original"] = w
        try:
            return layer(x)
        finally:
            plist._parameters["original"] = saved
    return fn


def module_inputs(layer, seed=0):
    rng = np.random.default_rng(seed)
    x = tg.tensor(rng.standard_normal((3, layer.in_features)), requires_grad=True)
    w = tg.tensor(layer.parametrizations.weight.original.data.copy(), requires_grad=True)
    return [x, w]


def test_eval_mode_gradcheck_and_gradgradcheck_of_the_module():
    """Eval: u, v are constants, so W / sigma is exactly what backward differentiates, twice."""
    from tinygrad_bn.nn.utils.parametrizations import spectral_norm
    layer = spectral_norm(nn.Linear(3, 4)).double().eval()
    fn = functional(layer)
    assert gradcheck(fn, module_inputs(layer))
    assert gradgradcheck(fn, module_inputs(layer))


def test_training_mode_gradient_treats_u_v_as_constants():
    """Training: u, v depend on W through the power iteration, which backward ignores (as PyTorch
    does). Numerically exact only once the iteration has converged; after 1 step it is not."""
    from tinygrad_bn.nn.utils.parametrizations import spectral_norm
    tg.manual_seed(0)
    converged = spectral_norm(nn.Linear(3, 4), n_power_iterations=60).double()
    assert gradcheck(functional(converged), module_inputs(converged))
    tg.manual_seed(0)
    one_step = spectral_norm(nn.Linear(3, 4)).double()
    with tg.no_grad():
        one_step.parametrizations.weight.original.data[...] = \
            np.random.default_rng(5).standard_normal((4, 3))  # u, v now far from converged
    assert not gradcheck(functional(one_step), module_inputs(one_step), raise_exception=False)


# ---- the old API ----------------------------------------------------------------------------------
def test_old_api_keys_and_no_warm_start():
    tg.manual_seed(4)
    lin = nn.Linear(3, 4).double()
    w = lin.weight.detach().numpy().copy()
    (u0, v0), _, _ = replay(w, 0, seed=11, iterations=0)
    tg.manual_seed(11)
    old_spectral_norm(lin)
    assert list(lin.state_dict()) == ["bias", "weight_orig", "weight_u", "weight_v"]
    assert_close(lin.weight_u, u0, atol=1e-15)  # no warm start
    assert_close(lin.weight_v, v0, atol=1e-15)
    with pytest.raises(RuntimeError, match="Cannot register two spectral_norm hooks on the same "
                                           "parameter weight"):
        old_spectral_norm(lin)
    with pytest.raises(ValueError, match="`SpectralNorm` cannot be applied as parameter `bias` is None"):
        old_spectral_norm(nn.Linear(2, 2, bias=False), name="bias")
    with pytest.raises(ValueError, match="n_power_iterations=0"):
        old_spectral_norm(nn.Linear(2, 2), n_power_iterations=0)


@needs_torch
@pytest.mark.parametrize("make,shape", [(lambda m: m.Linear(3, 4), (5, 3)),
                                        (lambda m: m.Conv2d(2, 3, 2), (2, 2, 3, 3))])
def test_old_api_matches_torch(make, shape):
    """v is iterated first, then u; only in training mode; weight_u / weight_v copied across."""
    ours = old_spectral_norm(make(nn).double())  # float64 before loading: loading casts
    theirs = torch.nn.utils.spectral_norm(make(torch.nn).double())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    load_from_torch(ours, theirs)
    rng = np.random.default_rng(0)
    for step in range(4):
        if step == 3:
            ours.eval(), theirs.eval()
        x = rng.standard_normal(shape)
        xt = torch.tensor(x, requires_grad=True)
        y, yt = ours(tg.tensor(x)), theirs(xt)
        assert_close(y, yt, atol=1e-12, rtol=1e-10, what=f"output at step {step}")
        y.sum().backward()
        yt.sum().backward()
        assert_close(ours.weight_orig.grad, theirs.weight_orig.grad, atol=1e-12, rtol=1e-10)
        assert_close(ours.weight_u, theirs.weight_u, atol=1e-13, rtol=1e-10, what=f"u at step {step}")
        assert_close(ours.weight_v, theirs.weight_v, atol=1e-13, rtol=1e-10, what=f"v at step {step}")
    remove_spectral_norm(ours)
    torch.nn.utils.remove_spectral_norm(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert_close(ours.weight, theirs.weight, atol=1e-12, rtol=1e-10)
    with pytest.raises(ValueError, match="spectral_norm of 'weight' not found in"):
        remove_spectral_norm(ours)
