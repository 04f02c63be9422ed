"""Filter Response Normalization + TLU (tinygrad_bn/norms/frn.py) against a plain-NumPy float64
reference written from the paper's equations (outputs and every gradient: x, gamma, beta, tau,
eps_l), the reference itself checked by central differences; TLU's tie rule against torch.max;
batch independence, train == eval, graph shape, errors. gradcheck/gradgradcheck, backend parity
and state_dict round trips of both registered variants run in tests/norms/test_matrix.py."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tests.helpers import assert_close, check_grads, needs_torch, torch
from tinygrad_bn.norms import REGISTRY
from tinygrad_bn.norms.frn import TLU, FilterResponseNorm2d, filter_response_norm, tlu


# ---- the reference: the paper's equations in NumPy float64 ---------------------------------------
def frn_reference(x, gamma, beta, tau, eps=1e-6, eps_l=None):
    """z = max(gamma * x * rsqrt(mean_{H,W}(x^2) + eps) + beta, tau); eps = |eps| (+ |eps_l|)."""
    e = abs(eps) + (np.abs(eps_l).reshape(()) if eps_l is not None else 0.0)
    nu2 = (x * x).mean(axis=(2, 3), keepdims=True)
    r = 1.0 / np.sqrt(nu2 + e)
    y = gamma * (x * r) + beta
    return np.maximum(y, tau) if tau is not None else y


def frn_reference_grads(dz, x, gamma, beta, tau, eps=1e-6, eps_l=None):
    """(dx, dgamma, dbeta, dtau, deps_l) from the hand-derived formulas (module docstring)."""
    e = abs(eps) + (np.abs(eps_l).reshape(()) if eps_l is not None else 0.0)
    r = 1.0 / np.sqrt((x * x).mean(axis=(2, 3), keepdims=True) + e)
    x_hat = x * r
    y = gamma * x_hat + beta
    share = (y > tau) + 0.5 * (y == tau) if tau is not None else np.ones_like(y)
    dy = dz * share
    dtau = (dz * (1 - share)).sum(axis=(0, 2, 3), keepdims=True) if tau is not None else None
    g_hat = dy * gamma
    dx = r * (g_hat - x_hat * (g_hat * x_hat).mean(axis=(2, 3), keepdims=True))
    dgamma = (dy * x_hat).sum(axis=(0, 2, 3), keepdims=True)
    dbeta = dy.sum(axis=(0, 2, 3), keepdims=True)
    deps_l = None if eps_l is None else (-0.5 * np.sign(eps_l) * (g_hat * x * r ** 3).sum()).reshape(eps_l.shape)
    return dx, dgamma, dbeta, dtau, deps_l


def numeric_grad(f, arrays, i, h=1e-6):
    """d sum(f(*arrays) * w) / d arrays[i] by central differences, for a fixed random w."""
    out = f(*arrays)
    w = np.random.default_rng(42).standard_normal(out.shape)
    base = arrays[i]
    grad = np.zeros_like(base)
    for j in range(base.size):
        vals = []
        for step in (h, -h):
            a = [arr.copy() for arr in arrays]
            a[i].reshape(-1)[j] += step
            vals.append((f(*a) * w).sum())
        grad.reshape(-1)[j] = (vals[0] - vals[1]) / (2 * h)
    return w, grad


def random_params(c, rng, learned=False):
    gamma = rng.uniform(0.5, 1.5, (1, c, 1, 1)) * rng.choice([-1, 1], (1, c, 1, 1))
    beta = rng.standard_normal((1, c, 1, 1)) * 0.5
    tau = rng.standard_normal((1, c, 1, 1)) * 0.3
    eps_l = np.array([rng.uniform(0.05, 0.5) * rng.choice([-1, 1])]) if learned else None
    return gamma, beta, tau, eps_l


def layer_with(params, learned, device="cpu", dtype=tg.float64):
    gamma, beta, tau, eps_l = params
    layer = FilterResponseNorm2d(gamma.shape[1], learned_epsilon=learned).to(dtype).to(device)
    with tg.no_grad():
        for name, value in (("weight", gamma), ("bias", beta), ("tau", tau), ("eps_l", eps_l)):
            if value is not None:
                getattr(layer, name).copy_(tg.tensor(value, dtype=dtype, device=device))
    return layer


# ---- the reference is right -----------------------------------------------------------------------
@pytest.mark.parametrize("learned", [False, True])
def test_reference_gradients_match_central_differences(learned):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 2, 2))
    gamma, beta, tau, eps_l = random_params(3, rng, learned)
    arrays = [x, gamma, beta, tau] + ([eps_l] if learned else [])

    def f(x, gamma, beta, tau, eps_l=None):
        return frn_reference(x, gamma, beta, tau, 1e-6, eps_l)
    for i in range(len(arrays)):
        w, numeric = numeric_grad(f, arrays, i)
        analytic = frn_reference_grads(w, x, gamma, beta, tau, 1e-6, eps_l)[i]
        np.testing.assert_allclose(analytic, numeric, atol=1e-7, rtol=1e-6, err_msg=f"argument {i}")


# ---- the layer against the reference ----------------------------------------------------------------
@pytest.mark.parametrize("learned", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 2, 1, 1), (1, 4, 3, 1)])
def test_forward_and_all_gradients_match_numpy_reference(device, learned, shape):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape) * 1.5 + 0.3
    params = random_params(shape[1], rng, learned)
    layer = layer_with(params, learned, device)
    xt = tg.tensor(x, device=device, requires_grad=True)
    z = layer(xt)
    assert z.device == device and z.dtype == tg.float64
    assert_close(z, frn_reference(x, *params[:3], 1e-6, params[3]), atol=1e-12, what="output")
    dz = rng.standard_normal(shape)
    z.backward(tg.tensor(dz, device=device))
    dx, dgamma, dbeta, dtau, deps_l = frn_reference_grads(dz, x, *params[:3], 1e-6, params[3])
    assert_close(xt.grad, dx, atol=1e-10, what="dx")
    assert_close(layer.weight.grad, dgamma, atol=1e-10, what="dweight")
    assert_close(layer.bias.grad, dbeta, atol=1e-10, what="dbias")
    assert_close(layer.tau.grad, dtau, atol=1e-10, what="dtau")
    if learned:
        assert_close(layer.eps_l.grad, deps_l, atol=1e-10, what="deps_l")


@needs_torch
@pytest.mark.parametrize("learned", [False, True])
def test_matches_torch_composition_of_the_formula(learned):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 3, 3))
    params = random_params(3, rng, learned)
    layer = layer_with(params, learned)
    xt = tg.tensor(x, requires_grad=True)
    z = layer(xt)
    tx = torch.tensor(x, requires_grad=True)
    tp = [torch.tensor(p, requires_grad=True) if p is not None else None for p in params]
    eps = 1e-6 + (tp[3].abs() if learned else 0)
    tz = torch.max(tp[0] * tx * torch.rsqrt((tx * tx).mean((2, 3), keepdim=True) + eps) + tp[1], tp[2])
    dz = rng.standard_normal(z.shape)
    z.backward(tg.tensor(dz))
    tz.backward(torch.tensor(dz))
    assert_close(z, tz, atol=1e-12, what="output")
    assert_close(xt.grad, tx.grad, atol=1e-10, what="dx")
    for name, t in zip(("weight", "bias", "tau", "eps_l"), tp):
        if t is not None:
            assert_close(getattr(layer, name).grad, t.grad, atol=1e-10, what=f"d{name}")


def test_float32_stays_float32_and_matches_float64():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 5, 5))
    params = random_params(4, rng, True)
    layer = layer_with(params, True, dtype=tg.float32)
    xt = tg.tensor(x.astype(np.float32), requires_grad=True)
    z = layer(xt)
    z.sum().backward()
    assert z.dtype == tg.float32 and xt.grad.dtype == tg.float32
    assert all(p.grad.dtype == tg.float32 for p in layer.parameters())
    assert_close(z, frn_reference(x, *params[:3], 1e-6, params[3]), atol=1e-5, what="float32 output")


@pytest.mark.parametrize("learned", [False, True])
def test_double_backward_on_a_larger_input(device, learned):
    rng = np.random.default_rng(4)
    gamma, beta, tau, eps_l = random_params(2, rng, learned)
    arrays = [rng.standard_normal((2, 2, 3, 2)), gamma, beta, tau] + ([eps_l] if learned else [])

    def fn(x, gamma, beta, tau, eps_l=None):
        return tlu(filter_response_norm(x, gamma, beta, 1e-6, eps_l), tau)
    check_grads(fn, None, device=device, arrays=arrays)


# ---- invariants ------------------------------------------------------------------------------------
@pytest.mark.parametrize("learned", [False, True])
def test_each_sample_is_normalized_on_its_own(learned):
    rng = np.random.default_rng(5)
    layer = layer_with(random_params(3, rng, learned), learned)
    x = rng.standard_normal((4, 3, 3, 3))
    full = layer(tg.tensor(x)).detach().numpy()
    for i in range(4):
        assert_close(layer(tg.tensor(x[i:i + 1])), full[i:i + 1], atol=1e-14, what=f"sample {i} alone")
    changed = x.copy()
    changed[1:] = changed[1:] * 5 - 2
    assert_close(layer(tg.tensor(changed))[:1], full[:1], atol=1e-14, what="others changed")


@pytest.mark.parametrize("learned", [False, True])
def test_train_and_eval_are_identical(learned):
    rng = np.random.default_rng(6)
    layer = layer_with(random_params(3, rng, learned), learned)
    x = tg.tensor(rng.standard_normal((2, 3, 4, 4)))
    train = layer.train()(x).detach().numpy()
    assert_close(layer.eval()(x), train, atol=0, rtol=0, what="eval vs train")
    assert not list(layer.buffers())


def test_output_is_invariant_to_input_scale_when_eps_is_negligible():
    rng = np.random.default_rng(7)
    layer = FilterResponseNorm2d(3, eps=0.0).double()
    x = rng.standard_normal((2, 3, 4, 4))
    assert_close(layer(tg.tensor(x * 1e3)), layer(tg.tensor(x)), atol=1e-12, what="scaled input")


# ---- TLU -------------------------------------------------------------------------------------------
@needs_torch
def test_tlu_splits_the_gradient_at_ties_like_torch_max(device):
    y = np.array([[[[0.5, -1.0], [0.25, 0.25]]], [[[0.3, 0.25], [2.0, -0.1]]]])  # (2, 1, 2, 2)
    tau = np.array([[[[0.25]]]])
    g = np.arange(1.0, 9.0).reshape(y.shape)
    yt, taut = tg.tensor(y, device=device, requires_grad=True), tg.tensor(tau, device=device, requires_grad=True)
    z = tlu(yt, taut)
    z.backward(tg.tensor(g, device=device))
    ty, ttau = torch.tensor(y, requires_grad=True), torch.tensor(tau, requires_grad=True)
    tz = torch.max(ty, ttau)
    tz.backward(torch.tensor(g))
    assert_close(z, tz, atol=0, rtol=0, what="output")
    assert_close(yt.grad, ty.grad, atol=0, rtol=0, what="dy")
    assert_close(taut.grad, ttau.grad, atol=0, rtol=0, what="dtau")
    # the rule itself: 1[y > tau] to y, 1[y < tau] to tau, halves at the three ties
    share = (y > tau) + 0.5 * (y == tau)
    assert_close(yt.grad, g * share, atol=0, rtol=0, what="dy rule")
    assert_close(taut.grad, (g * (1 - share)).sum(keepdims=True), atol=0, rtol=0, what="dtau rule")


def test_tlu_module_and_gradcheck(device):
    layer = TLU(3).double().to(device)
    assert list(layer.state_dict()) == ["tau"] and layer.tau.shape == (1, 3, 1, 1)
    assert float(layer.tau.detach().abs().sum().item()) == 0
    assert repr(layer) == "TLU(3)"
    x = tg.tensor(np.random.default_rng(8).standard_normal((2, 3, 2, 2)), device=device)
    assert_close(layer(x), np.maximum(x.cpu().numpy(), 0), atol=0, rtol=0, what="tau=0 is relu")
    rng = np.random.default_rng(9)
    check_grads(tlu, None, device=device,
                arrays=[rng.standard_normal((2, 3, 2, 2)), rng.standard_normal((1, 3, 1, 1))])
    x2 = tg.tensor(rng.standard_normal((4, 3)), device=device)
    assert layer(x2).shape == (4, 3)  # (N, C): tau is viewed as (1, C)


def test_tlu_errors():
    with pytest.raises(ValueError, match=r"tlu: tau of shape \[1, 4, 1, 1\] must broadcast"):
        tlu(tg.zeros(2, 3, 2, 2), tg.zeros(1, 4, 1, 1))
    with pytest.raises(TypeError, match="same dtype"):
        tlu(tg.zeros(2, 3, 2, 2), tg.zeros(1, 3, 1, 1, dtype=tg.float64))
    with pytest.raises(ValueError, match=r"TLU: expected input's size at dim=1 to match num_features \(3\)"):
        TLU(3)(tg.zeros(2, 4, 2, 2))
    with pytest.raises(ValueError, match="positive int"):
        TLU(0)


# ---- module surface ---------------------------------------------------------------------------------
def test_parameters_state_dict_and_repr():
    plain = FilterResponseNorm2d(5)
    assert list(plain.state_dict()) == ["weight", "bias", "tau"]
    for name, value in (("weight", 1), ("bias", 0), ("tau", 0)):
        p = getattr(plain, name)
        assert p.shape == (1, 5, 1, 1) and p.dtype == tg.float32 and np.all(p.detach().numpy() == value)
    assert repr(plain) == "FilterResponseNorm2d(5, eps=1e-06, learned_epsilon=False)"
    learned = FilterResponseNorm2d(5, learned_epsilon=True)
    assert list(learned.state_dict()) == ["weight", "bias", "tau", "eps_l"]
    assert learned.eps_l.shape == (1,) and np.isclose(learned.eps_l.item(), 1e-4)
    no_tlu = FilterResponseNorm2d(5, tlu=False)
    assert list(no_tlu.state_dict()) == ["weight", "bias"] and no_tlu.tau is None
    assert repr(no_tlu) == "FilterResponseNorm2d(5, eps=1e-06, learned_epsilon=False, tlu=False)"
    x = np.random.default_rng(10).standard_normal((2, 5, 3, 3))
    assert_close(no_tlu(tg.tensor(x, dtype=tg.float32)),
                 frn_reference(x, 1.0, 0.0, None), atol=1e-5, what="tlu=False output")


@pytest.mark.parametrize("learned", [False, True])
def test_graph_is_one_frn_node_then_one_tlu_node(learned):
    layer = FilterResponseNorm2d(3, learned_epsilon=learned)
    z = layer(tg.randn(2, 3, 4, 4, requires_grad=True))
    assert z.grad_fn.name == "TLUBackward"
    frn_node = z.grad_fn.next_edges[0][0]
    assert frn_node.name == "FilterResponseNormBackward"
    leaves = {id(e[1]) for e in frn_node.next_edges if e is not None and e[0] is None}
    expected = {id(layer.weight), id(layer.bias)} | ({id(layer.eps_l)} if learned else set())
    assert expected <= leaves  # parameters feed the FRN node directly (no reshape nodes)


def test_functional_accepts_per_channel_vectors_and_no_affine():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 2, 3))
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    w, b = tg.tensor(gamma, requires_grad=True), tg.tensor(beta, requires_grad=True)
    y = filter_response_norm(tg.tensor(x), w, b, eps=1e-3)
    assert_close(y, frn_reference(x, gamma.reshape(1, 3, 1, 1), beta.reshape(1, 3, 1, 1), None, 1e-3),
                 atol=1e-12, what="(C,) parameters")
    y.sum().backward()
    assert w.grad.shape == (3,) and b.grad.shape == (3,)
    assert_close(filter_response_norm(tg.tensor(x)), frn_reference(x, 1.0, 0.0, None), atol=1e-12,
                 what="no affine")
    eps_l = tg.tensor([0.3], requires_grad=True)
    y = filter_response_norm(tg.tensor(x), learned_eps=eps_l)
    assert_close(y, frn_reference(x, 1.0, 0.0, None, 1e-6, np.array([0.3])), atol=1e-12, what="learned, no affine")


def test_errors_name_the_layer_and_the_shapes():
    layer = FilterResponseNorm2d(3)
    with pytest.raises(ValueError, match=r"FilterResponseNorm2d: expected 4D input \(got 3D input\)"):
        layer(tg.zeros(2, 3, 4))
    with pytest.raises(ValueError, match=r"match num_features \(3\), but got: 5"):
        layer(tg.zeros(2, 5, 2, 2))
    with pytest.raises(ValueError, match="eps must be non-negative"):
        FilterResponseNorm2d(3, eps=-1)
    with pytest.raises(ValueError, match="num_features must be a positive int"):
        FilterResponseNorm2d(0)
    with pytest.raises(TypeError, match="floating-point"):
        filter_response_norm(tg.zeros(2, 3, 2, 2, dtype=tg.int64))
    with pytest.raises(RuntimeError, match="weight should contain 3 elements"):
        filter_response_norm(tg.zeros(2, 3, 2, 2), tg.ones(4))
    with pytest.raises(ValueError, match="learned_eps must hold one value"):
        filter_response_norm(tg.zeros(2, 3, 2, 2), learned_eps=tg.ones(2))


def test_registered_for_the_matrix_and_for_conv_nets():
    for name, learned in (("FilterResponseNorm2d", False), ("FilterResponseNorm2d-learned-eps", True)):
        spec = REGISTRY[name]
        assert spec.batch_independent_eval
        layer = spec.make_for_conv(8, 4)
        assert isinstance(layer, FilterResponseNorm2d) and layer.learned_epsilon == learned
        assert layer(tg.randn(2, 8, 4, 4)).shape == (2, 8, 4, 4)

