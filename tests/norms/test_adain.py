"""AdaIN (tinygrad_bn/norms/adain.py) against a plain-NumPy float64 reference of the paper's
formula with pytorch-AdaIN's calc_mean_std statistics (output, content and style gradients, the
reference's gradients checked by central differences), against torch ops composing the same
formula, and against F.instance_norm for unbiased=False; gradcheck + gradgradcheck and backend
parity (AdaIN takes two inputs, so it is not in the single-input test matrix)."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tests.helpers import assert_close, check_grads, needs_torch, torch
from tinygrad_bn.norms import REGISTRY
from tinygrad_bn.norms.adain import (AdaIN, AdaINBackward, adaptive_instance_norm, composed_backward,
                                     composed_forward)


# ---- the reference ------------------------------------------------------------------------------
def calc_mean_std(a, eps=1e-5, unbiased=True):
    """pytorch-AdaIN's calc_mean_std in NumPy: per (n, c) mean and sqrt(var + eps), kept dims."""
    n, c = a.shape[:2]
    flat = a.reshape(n, c, -1)
    mean = flat.mean(axis=2).reshape(n, c, *([1] * (a.ndim - 2)))
    std = np.sqrt(flat.var(axis=2, ddof=1 if unbiased else 0) + eps).reshape(mean.shape)
    return mean, std


def adain_reference(x, s, eps=1e-5, unbiased=True):
    mu_x, sigma_x = calc_mean_std(x, eps, unbiased)
    mu_s, sigma_s = calc_mean_std(s, eps, unbiased)
    return sigma_s * (x - mu_x) / sigma_x + mu_s


def adain_reference_grads(dz, x, s, eps=1e-5, unbiased=True):
    """(dx, ds) from the hand-derived formulas in the module docstring."""
    axes = tuple(range(2, x.ndim))
    lx, ls = np.prod(x.shape[2:]), np.prod(s.shape[2:])
    dof_x, dof_s = (lx - 1, ls - 1) if unbiased else (lx, ls)
    mu_x, sigma_x = calc_mean_std(x, eps, unbiased)
    mu_s, sigma_s = calc_mean_std(s, eps, unbiased)
    x_hat = (x - mu_x) / sigma_x
    g_hat = dz * sigma_s
    dx = (g_hat - g_hat.mean(axis=axes, keepdims=True)
          - x_hat * (g_hat * x_hat).sum(axis=axes, keepdims=True) / dof_x) / sigma_x
    d_mu_s = dz.sum(axis=axes, keepdims=True).reshape(mu_s.shape[:2] + (1,) * (s.ndim - 2))
    d_sigma_s = (dz * x_hat).sum(axis=axes, keepdims=True).reshape(d_mu_s.shape)
    ds = d_mu_s / ls + d_sigma_s * (s - mu_s) / (dof_s * sigma_s)
    return dx, ds


CASES = [((2, 3, 4, 4), (2, 3, 5, 3)), ((1, 2, 6), (1, 2, 3)), ((2, 2, 2, 2, 2), (2, 2, 3, 1, 2))]


def _inputs(x_shape, s_shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(x_shape) * 1.5 + 0.3, rng.standard_normal(s_shape) * 0.7 - 1.1


def _numeric(f, arrays, i, w, h=1e-6):
    grad = np.zeros_like(arrays[i])
    for j in range(grad.size):
        vals = []
        for step in (h, -h):
            a = [arr.copy() for arr in arrays]
            a[i].reshape(-1)[j] += step
            vals.append((f(*a) * w).sum())
        grad.reshape(-1)[j] = (vals[0] - vals[1]) / (2 * h)
    return grad


@pytest.mark.parametrize("unbiased", [True, False])
def test_reference_gradients_match_central_differences(unbiased):
    x, s = _inputs((2, 2, 3, 2), (2, 2, 2, 2))
    w = np.random.default_rng(1).standard_normal(x.shape)
    dx, ds = adain_reference_grads(w, x, s, 1e-5, unbiased)
    f = lambda a, b: adain_reference(a, b, 1e-5, unbiased)  # noqa: E731
    np.testing.assert_allclose(dx, _numeric(f, [x, s], 0, w), atol=1e-7, rtol=1e-6)
    np.testing.assert_allclose(ds, _numeric(f, [x, s], 1, w), atol=1e-7, rtol=1e-6)


# ---- against the reference -------------------------------------------------------------------------
@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("x_shape,s_shape", CASES)
def test_output_and_both_gradients_match_numpy_reference(device, x_shape, s_shape, unbiased):
    x, s = _inputs(x_shape, s_shape)
    xt = tg.tensor(x, device=device, requires_grad=True)
    st = tg.tensor(s, device=device, requires_grad=True)
    z = adaptive_instance_norm(xt, st, unbiased=unbiased)
    assert z.shape == x_shape and z.device == device and z.grad_fn.name == "AdaINBackward"
    assert_close(z, adain_reference(x, s, 1e-5, unbiased), atol=1e-12, what="output")
    dz = np.random.default_rng(2).standard_normal(x_shape)
    z.backward(tg.tensor(dz, device=device))
    dx, ds = adain_reference_grads(dz, x, s, 1e-5, unbiased)
    assert_close(xt.grad, dx, atol=1e-10, what="content gradient")
    assert_close(st.grad, ds, atol=1e-10, what="style gradient")


@needs_torch
def test_matches_torch_ops_composing_pytorch_adain():
    def calc_mean_std_torch(feat, eps=1e-5):  # pytorch-AdaIN's function.py
        n, c = feat.shape[:2]
        var = feat.view(n, c, -1).var(dim=2) + eps
        return feat.view(n, c, -1).mean(dim=2).view(n, c, 1, 1), var.sqrt().view(n, c, 1, 1)

    def torch_adain(content, style):
        s_mean, s_std = calc_mean_std_torch(style)
        c_mean, c_std = calc_mean_std_torch(content)
        return (content - c_mean.expand(content.size())) / c_std.expand(content.size()) \
            * s_std.expand(content.size()) + s_mean.expand(content.size())

    x, s = _inputs((2, 4, 5, 5), (2, 4, 6, 7), seed=3)
    xt, st = tg.tensor(x, requires_grad=True), tg.tensor(s, requires_grad=True)
    tx, ts = torch.tensor(x, requires_grad=True), torch.tensor(s, requires_grad=True)
    z, tz = AdaIN()(xt, st), torch_adain(tx, ts)
    dz = np.random.default_rng(4).standard_normal(x.shape)
    z.backward(tg.tensor(dz))
    tz.backward(torch.tensor(dz))
    assert_close(z, tz, atol=1e-12, what="output")
    assert_close(xt.grad, tx.grad, atol=1e-10, what="content gradient")
    assert_close(st.grad, ts.grad, atol=1e-10, what="style gradient")


@needs_torch
def test_biased_variant_is_instance_norm_with_style_statistics():
    """unbiased=False: AdaIN(x, s) = instance_norm(x) * sigma(s) + mu(s), for N=1 where the
    per-(n, c) style statistics are per-channel affine parameters."""
    x, s = _inputs((1, 3, 4, 4), (1, 3, 5, 5), seed=5)
    mu_s, sigma_s = calc_mean_std(s, 1e-5, unbiased=False)
    ref = torch.nn.functional.instance_norm(torch.tensor(x), weight=torch.tensor(sigma_s.reshape(3)),
                                            bias=torch.tensor(mu_s.reshape(3)), eps=1e-5)
    assert_close(adaptive_instance_norm(tg.tensor(x), tg.tensor(s), unbiased=False), ref, atol=1e-12,
                 what="biased AdaIN vs instance_norm")
    # and the default (unbiased, as pytorch-AdaIN) differs from it
    assert not np.allclose(adaptive_instance_norm(tg.tensor(x), tg.tensor(s)).numpy(), ref.numpy(), atol=1e-4)


def test_output_takes_the_style_statistics():
    x, s = _inputs((2, 3, 8, 8), (2, 3, 4, 4), seed=6)
    z = adaptive_instance_norm(tg.tensor(x), tg.tensor(s)).numpy()
    mu_z, _ = calc_mean_std(z, 0.0)
    mu_s, sigma_s = calc_mean_std(s)
    _, sigma_x = calc_mean_std(x)
    _, sigma_x0 = calc_mean_std(x, 0.0)
    np.testing.assert_allclose(mu_z, mu_s, atol=1e-12)
    # std(z) = sigma(s) * std(x) / sigma(x), i.e. sigma(s) up to the eps inside sigma(x)
    np.testing.assert_allclose(calc_mean_std(z, 0.0)[1], sigma_s * sigma_x0 / sigma_x, rtol=1e-12)
    np.testing.assert_allclose(calc_mean_std(z, 0.0)[1], sigma_s, rtol=1e-4)


# ---- derivatives ------------------------------------------------------------------------------------
@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("x_shape,s_shape", [((2, 2, 2, 3), (2, 2, 2, 2)), ((1, 3, 4), (1, 3, 3))])
def test_gradcheck_and_gradgradcheck(device, x_shape, s_shape, unbiased):
    x, s = _inputs(x_shape, s_shape, seed=7)
    check_grads(lambda a, b: adaptive_instance_norm(a, b, unbiased=unbiased), None, device=device, arrays=[x, s])


def test_fused_backward_matches_the_composed_one_and_autograd_of_the_composed_forward():
    x, s = _inputs((2, 3, 3, 3), (2, 3, 2, 4), seed=8)
    dz = np.random.default_rng(9).standard_normal(x.shape)
    xt, st = tg.tensor(x, requires_grad=True), tg.tensor(s, requires_grad=True)
    assert_close(composed_forward(xt, st), adaptive_instance_norm(xt, st), atol=1e-13, what="forward")
    z = adaptive_instance_norm(xt, st)
    node = z.grad_fn
    stats = {k: node.saved_array(k) for k in ("mu_x", "sigma_x", "mu_s", "sigma_s")}
    fused = AdaINBackward.apply(tg.tensor(dz), xt, st, unbiased=True, eps=1e-5, **stats)
    composed = composed_backward(tg.tensor(dz), xt, st)
    autograd = tg.autograd.grad(composed_forward(xt, st), [xt, st], tg.tensor(dz))
    for a, b, c, name in zip(fused, composed, autograd, ("dx", "ds")):
        assert_close(a, b, atol=1e-12, what=f"fused vs composed {name}")
        assert_close(a, c, atol=1e-12, what=f"fused vs autograd of composed forward {name}")


def test_only_content_requires_grad():
    x, s = _inputs((2, 3, 4, 4), (2, 3, 4, 4), seed=10)
    xt = tg.tensor(x, requires_grad=True)
    z = adaptive_instance_norm(xt, tg.tensor(s))
    z.backward(tg.tensor(np.ones(x.shape)))
    dx, _ = adain_reference_grads(np.ones(x.shape), x, s)
    assert_close(xt.grad, dx, atol=1e-10, what="content gradient with a constant style")
    with tg.no_grad():
        assert adaptive_instance_norm(tg.tensor(x, requires_grad=True), tg.tensor(s)).grad_fn is None


def test_float32_stays_float32():
    x, s = _inputs((2, 3, 4, 4), (2, 3, 4, 4), seed=11)
    xt = tg.tensor(x.astype(np.float32), requires_grad=True)
    st = tg.tensor(s.astype(np.float32), requires_grad=True)
    z = adaptive_instance_norm(xt, st)
    z.sum().backward()
    assert z.dtype == xt.grad.dtype == st.grad.dtype == tg.float32
    assert_close(z, adain_reference(x, s), atol=1e-5, what="float32 output")


# ---- module and errors --------------------------------------------------------------------------------
def test_module_has_no_state_and_a_repr():
    layer = AdaIN()
    assert list(layer.state_dict()) == [] and not list(layer.parameters())
    assert repr(layer) == "AdaIN(eps=1e-05)"
    assert repr(AdaIN(eps=1e-3, unbiased=False)) == "AdaIN(eps=0.001, unbiased=False)"
    x, s = _inputs((1, 2, 3, 3), (1, 2, 3, 3))
    assert_close(AdaIN(unbiased=False).eval()(tg.tensor(x), tg.tensor(s)), adain_reference(x, s, 1e-5, False),
                 atol=1e-12, what="module, unbiased=False")
    assert "AdaIN" not in " ".join(REGISTRY)  # two inputs: not in the single-input matrix


def test_errors_name_the_op_and_the_shapes():
    with pytest.raises(ValueError, match=r"must agree in \(N, C\), got content shape \[2, 3, 4, 4\] "
                                         r"and style shape \[2, 5, 4, 4\]"):
        adaptive_instance_norm(tg.zeros(2, 3, 4, 4), tg.zeros(2, 5, 4, 4))
    with pytest.raises(ValueError, match=r"expected content of at least 3 dimensions .* got shape \[2, 3\]"):
        adaptive_instance_norm(tg.zeros(2, 3), tg.zeros(2, 3, 4))
    with pytest.raises(ValueError, match=r"more than 1 spatial element, got style size \(2, 3, 1, 1\)"):
        adaptive_instance_norm(tg.zeros(2, 3, 4, 4), tg.zeros(2, 3, 1, 1))
    adaptive_instance_norm(tg.zeros(2, 3, 4, 4), tg.zeros(2, 3, 1, 1), unbiased=False)  # biased: fine
    with pytest.raises(TypeError, match="same dtype"):
        adaptive_instance_norm(tg.zeros(2, 3, 4, 4), tg.zeros(2, 3, 4, 4, dtype=tg.float64))
    with pytest.raises(TypeError, match="floating-point"):
        adaptive_instance_norm(tg.zeros(2, 3, 4, 4, dtype=tg.int64), tg.zeros(2, 3, 4, 4, dtype=tg.int64))
    with pytest.raises(ValueError, match="eps must be non-negative"):
        AdaIN(eps=-1.0)
