"""Decorrelated Batch Normalization (tinygrad_bn/norms/decorrelated.py) against a plain-NumPy
float64 reference of the paper's algorithm: whitened output (identity covariance per group), all
gradients vs central differences of the reference, vs PyTorch autograd through torch.linalg.eigh
composing the same formula, and vs Chainer's eigenvector-derivative backward (K_ij = 1/(l_i - l_j))
written in NumPy; repeated eigenvalues; the differentiable Eigh node; running statistics, eval,
errors. gradcheck/gradgradcheck, backend parity and state_dict round trips of the registered
entries run in tests/norms/test_matrix.py."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tests.helpers import assert_close, check_grads, needs_torch, torch
from tinygrad_bn.norms import REGISTRY
from tinygrad_bn.norms.decorrelated import (DecorrelatedBatchNorm, DecorrelatedBatchNormGrad, composed_backward,
                                            composed_forward, decorrelated_batch_norm, eigh)

EPS = 2e-5


# ---- the reference --------------------------------------------------------------------------------
def group_view(x, groups):
    """(N, C, *S) -> (groups, C/groups, m) with m = N * prod(S): channel c = group * d + j."""
    perm = (1, 0) + tuple(range(2, x.ndim))
    return x.transpose(perm).reshape(groups, x.shape[1] // groups, -1)


def ungroup_view(xg, shape):
    perm = (1, 0) + tuple(range(2, len(shape)))
    return xg.reshape((shape[1], shape[0]) + tuple(shape[2:])).transpose(perm)


def whitening_reference(x, groups, eps=EPS):
    """Per group, the paper's steps 2-5: (mean, U, X_c) with U = D diag(lambda^-1/2) D^T."""
    means, projs, centred = [], [], []
    for X in group_view(x, groups):
        mu = X.mean(axis=1, keepdims=True)
        Xc = X - mu
        sigma = Xc @ Xc.T / X.shape[1] + eps * np.eye(X.shape[0])
        lam, D = np.linalg.eigh(sigma)
        means.append(mu)
        projs.append(D @ np.diag(lam ** -0.5) @ D.T)
        centred.append(Xc)
    return np.stack(means), np.stack(projs), np.stack(centred)


def dbn_reference(x, weight, bias, groups, eps=EPS, mean=None, proj=None):
    """Training (mean/proj None: batch statistics) or eval (given running statistics) output."""
    if proj is None:
        _, proj, xc = whitening_reference(x, groups, eps)
    else:
        xc = group_view(x, groups) - mean
    y = ungroup_view(proj @ xc, x.shape)
    view = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    return y * weight.reshape(view) + bias.reshape(view)


def chainer_dx_reference(gy, x, groups, eps=EPS):
    """dx from Chainer's DecorrelatedBatchNormalizationGrad (the paper's eigenvector derivative,
    K_ij = 1/(lambda_i - lambda_j)), per group, in NumPy. Needs distinct eigenvalues."""
    out = []
    for G, X in zip(group_view(gy, groups), group_view(x, groups)):
        m = X.shape[1]
        Xc = X - X.mean(axis=1, keepdims=True)
        lam, D = np.linalg.eigh(Xc @ Xc.T / m + eps * np.eye(X.shape[0]))
        y_pca = np.diag(lam ** -0.5) @ D.T @ Xc
        g_pca = D.T @ G
        f = g_pca.mean(axis=1, keepdims=True)
        K = lam[:, None] - lam[None, :]
        np.fill_diagonal(K, 1)
        K = 1 / K
        np.fill_diagonal(K, 0)
        V, V_sqrt, V_invsqrt = np.diag(lam), np.diag(lam ** 0.5), np.diag(lam ** -0.5)
        F_c = g_pca @ y_pca.T / m
        M = np.diag(np.diag(F_c))
        mat = K.T * (V @ F_c.T + V_sqrt @ F_c @ V_sqrt)
        S = mat + mat.T
        R = g_pca - f + (S - M).T @ y_pca
        out.append(D @ V_invsqrt @ R)
    return ungroup_view(np.stack(out), x.shape)


def numeric_grads(f, arrays, w, h=1e-6):
    grads = []
    for i in range(len(arrays)):
        g = np.zeros_like(arrays[i])
        for j in range(g.size):
            vals = []
            for step in (h, -h):
                a = [arr.copy() for arr in arrays]
                a[i].reshape(-1)[j] += step
                vals.append((f(*a) * w).sum())
            g.reshape(-1)[j] = (vals[0] - vals[1]) / (2 * h)
        grads.append(g)
    return grads


CASES = [((6, 4), 2), ((3, 4, 2, 2), 1), ((5, 6, 3), 3), ((4, 6, 2, 3), 2)]


def _case(shape, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = rng.standard_normal(shape) * 1.5 + 0.3
    x[:, 1] += 0.8 * x[:, 0]  # correlated channels, so there is something to decorrelate
    return x, rng.uniform(0.5, 1.5, c) * rng.choice([-1, 1], c), rng.standard_normal(c)


# ---- forward ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,groups", CASES)
def test_training_output_matches_reference_and_is_white(device, shape, groups):
    x, w, b = _case(shape)
    y = decorrelated_batch_norm(tg.tensor(x, device=device), None, None, tg.tensor(w, device=device),
                                tg.tensor(b, device=device), training=True, groups=groups)
    assert y.device == device and y.shape == shape
    assert_close(y, dbn_reference(x, w, b, groups), atol=1e-12, what="output")
    # without the affine: per group, X_hat X_hat^T / m = I - eps U^2 (exactly), i.e. ~ identity
    x_hat = group_view(decorrelated_batch_norm(tg.tensor(x), training=True, groups=groups).numpy(), groups)
    _, proj, _ = whitening_reference(x, groups)
    m = x_hat.shape[2]
    cov = x_hat @ x_hat.transpose(0, 2, 1) / m
    eye = np.broadcast_to(np.eye(x_hat.shape[1]), cov.shape)
    np.testing.assert_allclose(cov, eye - EPS * proj @ proj, atol=1e-12)
    np.testing.assert_allclose(cov, eye, atol=1e-3)
    np.testing.assert_allclose(x_hat.mean(axis=2), 0, atol=1e-12)


def white_columns(m, c, seed, scale=1.0):
    """(m, c) samples with zero-mean columns and covariance exactly scale^2 * I."""
    a = np.random.default_rng(seed).standard_normal((m, c))
    q = np.linalg.qr(a - a.mean(axis=0))[0]  # orthonormal columns, still zero-mean
    return q * np.sqrt(m) * scale


def test_zca_projection_is_symmetric_and_keeps_the_axes():
    """ZCA (not PCA): U is symmetric positive definite, so an already white group passes through
    unchanged (no stochastic axis swapping)."""
    x, _, _ = _case((8, 4), seed=1)
    _, proj, _ = whitening_reference(x, 2)
    np.testing.assert_allclose(proj, proj.transpose(0, 2, 1), atol=1e-12)
    assert np.all(np.linalg.eigvalsh(proj) > 0)
    white = white_columns(8, 4, seed=2)
    layer = DecorrelatedBatchNorm(4, groups=2, eps=1e-12).double()
    assert_close(layer(tg.tensor(white)), white, atol=1e-9, what="white input passes through")


def test_float32_matches_float64():
    x, w, b = _case((16, 8, 2, 2), seed=3)
    layer = DecorrelatedBatchNorm(8, groups=2)
    with tg.no_grad():
        layer.weight.copy_(tg.tensor(w, dtype=tg.float32))
        layer.bias.copy_(tg.tensor(b, dtype=tg.float32))
    xt = tg.tensor(x.astype(np.float32), requires_grad=True)
    y = layer(xt)
    y.sum().backward()
    assert y.dtype == xt.grad.dtype == layer.weight.grad.dtype == tg.float32
    assert layer.running_projection.dtype == tg.float32
    assert_close(y, dbn_reference(x, w, b, 2), atol=2e-4, rtol=1e-4, what="float32 output")


# ---- backward --------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,groups", CASES[:3])
def test_gradients_match_central_differences_of_the_reference(shape, groups):
    x, w, b = _case(shape, seed=4)
    gy = np.random.default_rng(5).standard_normal(shape)
    xt, wt, bt = (tg.tensor(a, requires_grad=True) for a in (x, w, b))
    decorrelated_batch_norm(xt, None, None, wt, bt, training=True, groups=groups).backward(tg.tensor(gy))
    numeric = numeric_grads(lambda x, w, b: dbn_reference(x, w, b, groups), [x, w, b], gy)
    for t, n, name in zip((xt, wt, bt), numeric, ("dx", "dweight", "dbias")):
        assert_close(t.grad, n, atol=1e-7, rtol=1e-6, what=name)


@pytest.mark.parametrize("shape,groups", CASES)
def test_dx_matches_chainers_eigenvector_derivative(shape, groups):
    x, _, _ = _case(shape, seed=6)
    gy = np.random.default_rng(7).standard_normal(shape)
    xt = tg.tensor(x, requires_grad=True)
    decorrelated_batch_norm(xt, training=True, groups=groups).backward(tg.tensor(gy))
    assert_close(xt.grad, chainer_dx_reference(gy, x, groups), atol=1e-10, what="dx vs Chainer's formula")


@needs_torch
@pytest.mark.parametrize("shape,groups", CASES)
def test_gradients_match_torch_autograd_through_eigh(shape, groups):
    def torch_dbn(x, w, b):
        perm = (1, 0) + tuple(range(2, x.ndim))
        xg = x.permute(*perm).reshape(groups, x.shape[1] // groups, -1)
        xc = xg - xg.mean(2, keepdim=True)
        cov = xc @ xc.transpose(1, 2) / xc.shape[2] + EPS * torch.eye(xc.shape[1], dtype=x.dtype)
        lam, D = torch.linalg.eigh(cov)
        y = (D @ torch.diag_embed(lam.rsqrt()) @ D.transpose(1, 2) @ xc)
        y = y.reshape((x.shape[1], x.shape[0]) + tuple(x.shape[2:])).permute(*perm)
        view = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        return y * w.reshape(view) + b.reshape(view)
    x, w, b = _case(shape, seed=8)
    gy = np.random.default_rng(9).standard_normal(shape)
    ours = [tg.tensor(a, requires_grad=True) for a in (x, w, b)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    y = decorrelated_batch_norm(ours[0], None, None, ours[1], ours[2], training=True, groups=groups)
    ty = torch_dbn(*theirs)
    y.backward(tg.tensor(gy))
    ty.backward(torch.tensor(gy))
    assert_close(y, ty, atol=1e-12, what="output")
    for a, t, name in zip(ours, theirs, ("dx", "dweight", "dbias")):
        assert_close(a.grad, t.grad, atol=1e-10, what=name)


@pytest.mark.parametrize("shape,groups", [((6, 4), 2), ((2, 4, 2, 1), 1), ((3, 2, 2, 2), 2)])
def test_gradcheck_and_gradgradcheck_with_and_without_affine(device, shape, groups):
    x, w, b = _case(shape, seed=10)
    check_grads(lambda x, w, b: decorrelated_batch_norm(x, None, None, w, b, training=True, groups=groups),
                None, device=device, arrays=[x, w, b])
    check_grads(lambda x: decorrelated_batch_norm(x, training=True, groups=groups), None, device=device,
                arrays=[x])


def test_fused_backward_matches_the_composed_one_and_autograd_of_the_composed_forward():
    x, w, b = _case((5, 6, 2), seed=11)
    groups = 3
    gy = tg.tensor(np.random.default_rng(12).standard_normal(x.shape))
    xt, wt, bt = (tg.tensor(a, requires_grad=True) for a in (x, w, b))
    y = decorrelated_batch_norm(xt, None, None, wt, bt, training=True, groups=groups)
    assert_close(composed_forward(xt, wt, bt, groups=groups), y, atol=1e-12, what="composed forward")
    node = y.grad_fn
    assert node.name == "DecorrelatedBatchNormBackward"
    fused = DecorrelatedBatchNormGrad.apply(gy, xt, wt, groups=groups, eps=EPS, has_weight=True, has_bias=True,
                                            mean=node.saved_array("mean"), eigvals=node.saved_array("eigvals"),
                                            eigvecs=node.saved_array("eigvecs"))
    composed = composed_backward(gy, xt, wt, groups=groups)
    auto = tg.autograd.grad(composed_forward(xt, wt, bt, groups=groups), [xt, wt, bt], gy)
    for f, c, a, name in zip(fused, composed, auto, ("dx", "dweight", "dbias")):
        assert_close(f, c, atol=1e-11, what=f"fused vs composed {name}")
        assert_close(f, a, atol=1e-10, what=f"fused vs autograd of the composed forward {name}")
    # second order: the fused node's VJP vs differentiating autograd of the composed forward twice
    v = tg.tensor(np.random.default_rng(13).standard_normal(x.shape))
    (dx,) = tg.autograd.grad(decorrelated_batch_norm(xt, None, None, wt, bt, training=True, groups=groups),
                             [xt], gy, create_graph=True)
    (dx_ref,) = tg.autograd.grad(composed_forward(xt, wt, bt, groups=groups), [xt], gy, create_graph=True)
    second = tg.autograd.grad((dx * v).sum(), [xt, wt])
    second_ref = tg.autograd.grad((dx_ref * v).sum(), [xt, wt])
    for a, r, name in zip(second, second_ref, ("d2/dx2", "d2/dxdw")):
        assert_close(a, r, atol=1e-9, what=name)


def test_first_order_backward_is_finite_for_repeated_eigenvalues():
    """A group whose covariance is exactly c*I (all eigenvalues equal): Chainer's K_ij = 1/(l_i - l_j)
    is undefined there, the closed form P_ij = -1/(s_i s_j (s_i + s_j)) is not; U(Sigma) is smooth,
    so central differences still apply."""
    x = white_columns(8, 3, seed=14, scale=2.0)
    xc = x - x.mean(axis=0)
    cov = xc.T @ xc / 8
    assert np.allclose(cov, cov[0, 0] * np.eye(3), atol=1e-6)  # repeated eigenvalues
    gy = np.random.default_rng(15).standard_normal(x.shape)
    xt = tg.tensor(x, requires_grad=True)
    decorrelated_batch_norm(xt, training=True, groups=1).backward(tg.tensor(gy))
    assert np.all(np.isfinite(xt.grad.numpy()))
    numeric = numeric_grads(lambda x: dbn_reference(x, np.ones(3), np.zeros(3), 1), [x], gy)[0]
    assert_close(xt.grad, numeric, atol=1e-6, rtol=1e-5, what="dx at repeated eigenvalues")


@needs_torch
def test_eigh_node_gradients_match_torch(device):
    rng = np.random.default_rng(16)
    a = rng.standard_normal((2, 3, 3))
    a = a + a.transpose(0, 2, 1) + np.diag([0.0, 3.0, 7.0])  # symmetric, well separated eigenvalues
    gw = rng.standard_normal((2, 3))
    at = tg.tensor(a, device=device, requires_grad=True)
    w, v = eigh(at)
    ta = torch.tensor(a, requires_grad=True)
    tw, tv = torch.linalg.eigh(ta)
    assert_close(w, tw, atol=1e-12, what="eigenvalues")
    # eigenvectors are defined up to sign: compare sign-invariant functions of them
    sq = lambda w, v: v @ (v * (w * w).unsqueeze(-2)).transpose(-1, -2)  # noqa: E731  (A^2)
    assert_close(sq(w, v), sq(tw, tv), atol=1e-10, what="V diag(w^2) V^T")
    g = rng.standard_normal((2, 3, 3))
    (w * tg.tensor(gw, device=device)).sum().backward(retain_graph=True)
    (tw * torch.tensor(gw)).sum().backward(retain_graph=True)
    assert_close(at.grad, (ta.grad + ta.grad.transpose(1, 2)) / 2, atol=1e-10, what="d eigenvalues")
    at.grad, ta.grad = None, None
    (sq(w, v) * tg.tensor(g, device=device)).sum().backward()
    (sq(tw, tv) * torch.tensor(g)).sum().backward()
    assert_close(at.grad, (ta.grad + ta.grad.transpose(1, 2)) / 2, atol=1e-9, what="d (V diag(w^2) V^T)")


def test_eigh_node_double_backward(device):
    rng = np.random.default_rng(17)
    a = rng.standard_normal((2, 3, 3))

    def fn(a):  # symmetrise, then a sign-invariant function of eigenvalues and eigenvectors
        w, v = eigh((a + a.transpose(-1, -2)) * 0.5)
        return v @ (v * w.exp().unsqueeze(-2)).transpose(-1, -2), w
    check_grads(fn, None, device=device, arrays=[a + np.diag([0.0, 4.0, 9.0])])


# ---- running statistics and eval ---------------------------------------------------------------------
def test_running_statistics_are_emas_of_mean_and_whitening_matrix():
    x1, _, _ = _case((10, 4, 2), seed=18)
    x2, _, _ = _case((10, 4, 2), seed=19)
    layer = DecorrelatedBatchNorm(4, groups=2, momentum=0.1).double()
    layer(tg.tensor(x1))
    layer(tg.tensor(x2))
    rm, rp = np.zeros((2, 2, 1)), np.broadcast_to(np.eye(2), (2, 2, 2)).copy()
    for x in (x1, x2):
        mean, proj, _ = whitening_reference(x, 2)
        rm = 0.9 * rm + 0.1 * mean
        rp = 0.9 * rp + 0.1 * proj  # no m / (m - 1) factor (Chainer's quirk is not followed)
    assert_close(layer.running_mean, rm.reshape(4), atol=1e-12, what="running_mean")
    assert_close(layer.running_projection, rp, atol=1e-12, what="running_projection")
    assert int(layer.num_batches_tracked.item()) == 2


def test_momentum_none_is_a_cumulative_average():
    xs = [_case((6, 4), seed=s)[0] for s in (20, 21, 22)]
    layer = DecorrelatedBatchNorm(4, groups=1, momentum=None).double()
    for x in xs:
        layer(tg.tensor(x))
    stats = [whitening_reference(x, 1) for x in xs]
    assert_close(layer.running_mean, np.mean([s[0] for s in stats], axis=0).reshape(4), atol=1e-12,
                 what="running_mean")
    assert_close(layer.running_projection, np.mean([s[1] for s in stats], axis=0), atol=1e-12,
                 what="running_projection")


def test_eval_uses_the_running_statistics(device):
    x, w, b = _case((4, 6, 3), seed=23)
    layer = DecorrelatedBatchNorm(6, groups=3).double().to(device)
    with tg.no_grad():
        layer.weight.copy_(tg.tensor(w, device=device))
        layer.bias.copy_(tg.tensor(b, device=device))
    for seed in (24, 25, 26):
        layer(tg.tensor(_case((4, 6, 3), seed=seed)[0], device=device))
    layer.eval()
    before = [t.cpu().numpy().copy() for t in layer.buffers()]
    xt = tg.tensor(x, device=device, requires_grad=True)
    y = layer(xt)
    rm = layer.running_mean.cpu().numpy().reshape(3, 2, 1)
    rp = layer.running_projection.cpu().numpy()
    assert_close(y, dbn_reference(x, w, b, 3, mean=rm, proj=rp), atol=1e-12, what="eval output")
    gy = np.random.default_rng(27).standard_normal(x.shape)
    y.backward(tg.tensor(gy, device=device))
    ghat = gy * w.reshape(1, 6, 1)
    assert_close(xt.grad, ungroup_view(rp.transpose(0, 2, 1) @ group_view(ghat, 3), x.shape), atol=1e-12,
                 what="eval dx = P^T (dy * weight)")
    x_hat = ungroup_view(rp @ (group_view(x, 3) - rm), x.shape)
    assert_close(layer.weight.grad, (gy * x_hat).sum(axis=(0, 2)), atol=1e-12, what="eval dweight")
    for a, b_ in zip(before, layer.buffers()):
        np.testing.assert_array_equal(a, b_.cpu().numpy())  # eval changes nothing
    check_grads(lambda x: layer(x), None, device=device, arrays=[x])  # eval: gradcheck + gradgradcheck


def test_without_running_stats_eval_uses_batch_statistics():
    x, _, _ = _case((6, 4), seed=28)
    layer = DecorrelatedBatchNorm(4, groups=2, track_running_stats=False, affine=False).double()
    assert list(layer.state_dict()) == []
    assert_close(layer.eval()(tg.tensor(x)), dbn_reference(x, np.ones(4), np.zeros(4), 2), atol=1e-12,
                 what="eval with batch statistics")


# ---- module surface and errors ---------------------------------------------------------------------
def test_state_dict_and_repr():
    layer = DecorrelatedBatchNorm(32)
    assert list(layer.state_dict()) == ["weight", "bias", "running_mean", "running_projection",
                                        "num_batches_tracked"]
    assert layer.groups == 16 and layer.running_projection.shape == (16, 2, 2)
    np.testing.assert_array_equal(layer.running_projection.numpy(), np.broadcast_to(np.eye(2), (16, 2, 2)))
    assert repr(layer) == ("DecorrelatedBatchNorm(32, groups=16, eps=2e-05, momentum=0.1, affine=True, "
                           "track_running_stats=True)")


def test_errors_name_the_layer_and_the_values():
    with pytest.raises(ValueError, match=r"num_features \(6\) must be divisible by groups \(4\)"):
        DecorrelatedBatchNorm(6, groups=4)
    with pytest.raises(ValueError, match=r"num_features \(8\) must be divisible by groups \(16\)"):
        DecorrelatedBatchNorm(8)  # the default groups=16 needs C % 16 == 0
    with pytest.raises(ValueError, match="groups must be a positive int"):
        DecorrelatedBatchNorm(4, groups=0)
    with pytest.raises(ValueError, match="eps must be positive"):
        DecorrelatedBatchNorm(4, groups=2, eps=0)
    layer = DecorrelatedBatchNorm(4, groups=2)
    with pytest.raises(ValueError, match=r"Expected more than 1 value per channel when training, got input "
                                         r"size torch.Size\(\[1, 4\]\)"):
        layer(tg.zeros(1, 4))
    with pytest.raises(ValueError, match=r"match num_features \(4\), but got: 3"):
        layer(tg.zeros(2, 3))
    with pytest.raises(ValueError, match=r"expected at least 2D input \(got 1D input\)"):
        layer(tg.zeros(4))
    with pytest.raises(RuntimeError, match=r"running_projection should have shape \[2, 2, 2\]"):
        decorrelated_batch_norm(tg.zeros(3, 4), tg.zeros(4), tg.zeros(2, 4, 4), groups=2)
    layer.eval()
    assert layer(tg.zeros(1, 4)).shape == (1, 4)  # eval with running statistics: N=1 is fine


def test_registered_for_the_matrix_and_for_conv_nets():
    spec = REGISTRY["DecorrelatedBatchNorm"]
    assert spec.batch_independent_eval and "DecorrelatedBatchNorm-conv" in REGISTRY
    for c, groups in ((16, 1), (32, 2), (64, 4), (12, 3)):
        layer = spec.make_for_conv(c, 8)
        assert layer.groups == groups
        assert layer(tg.randn(4, c, 4, 4)).shape == (4, c, 4, 4)


@pytest.mark.parametrize("shape, groups", [((4, 16, 3, 3), 1), ((4, 16, 3, 3), 4), ((8, 4), 1),
                                           ((8, 4), 2)])
def test_nan_input_in_training_is_one_clear_error_for_every_variant(shape, groups):
    """The conv (4-D) and grouped forms used to differ: LAPACK's LinAlgError, or silent NaNs."""
    x = np.random.default_rng(0).standard_normal(shape)
    x[(0, shape[1] - 1) + (0,) * (len(shape) - 2)] = np.nan  # in the last channel group
    layer = DecorrelatedBatchNorm(shape[1], groups=groups)
    with pytest.raises(RuntimeError, match=rf"DecorrelatedBatchNorm: the batch covariance of channel "
                                           rf"group\(s\) \[{groups - 1}\] \(of {groups}\) is not finite"):
        layer(tg.tensor(x))
    assert int(layer.num_batches_tracked.item()) == 0


def test_nan_input_in_eval_propagates_like_batchnorm():
    layer = DecorrelatedBatchNorm(4, groups=1).eval()
    x = np.ones((3, 4))
    x[0, 1] = np.nan
    y = layer(tg.tensor(x)).detach().numpy()
    assert np.isnan(y[0]).any() and np.isfinite(y[1:]).all()
