"""BatchRenorm1d/2d (Chainer's variant) against a plain-NumPy float64 reference written from the
paper's Algorithm 1 and Chainer's equations, against PyTorch autograd of the same forward with
r and d detached, and against BatchNorm for rmax=1, dmax=0. The shared matrix adds gradcheck/
gradgradcheck (with r and d clipped, see test_the_matrix_configuration_has_r_and_d_clipped),
backend parity, eval independence, state_dict and repr."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn.autograd import gradcheck, gradgradcheck
from tinygrad_bn.norms import REGISTRY
from tinygrad_bn.norms.batchnorm import BatchNorm1d, BatchNorm2d
from tinygrad_bn.norms.batchrenorm import (BatchRenorm1d, BatchRenorm2d, BatchRenormBackward, LinearRamp,
                                           batch_renorm, composed_renorm_backward, renorm_schedule)
from tests.helpers import assert_close, needs_torch, to_numpy, torch

C = 3
TOL = {"atol": 1e-10, "rtol": 1e-10}


def reference_step(x, g, w, b, running, rmax, dmax, eps, momentum):
    """Chainer's batch_renormalization forward/backward and update, plain NumPy float64.
    running = [mean, var, steps]; returns y, gx, ggamma, gbeta, r, d."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    m = x.size // C
    w = np.ones(C) if w is None else w
    b = np.zeros(C) if b is None else b
    mu, var = x.mean(axes), x.var(axes)
    std, sigma = np.sqrt(var + eps), np.sqrt(running[1] + eps)
    r = np.clip(std / sigma, 1 / rmax, rmax)
    d = np.clip((mu - running[0]) / sigma, -dmax, dmax)
    x_hat = (x - mu.reshape(shape)) / std.reshape(shape)
    y = w.reshape(shape) * (x_hat * r.reshape(shape) + d.reshape(shape)) + b.reshape(shape)
    # Chainer's backward, r and d constants
    gbeta = g.sum(axes)
    ggamma = (g * (x_hat * r.reshape(shape) + d.reshape(shape))).sum(axes)
    gx = (r * w / std).reshape(shape) * (g - (x_hat * (g * x_hat).sum(axes).reshape(shape)
                                              + gbeta.reshape(shape)) / m)
    running[2] += 1
    f = momentum if momentum is not None else 1 / running[2]
    running[0] = (1 - f) * running[0] + f * mu
    running[1] = (1 - f) * running[1] + f * var * m / max(m - 1, 1)
    return y, gx, ggamma, gbeta, r, d


def _layer_class(ndim):
    return BatchRenorm2d if ndim == 4 else BatchRenorm1d


@pytest.mark.parametrize("shape, options", [
    pytest.param((6, C, 2, 2), {"rmax": 1.5, "dmax": 0.5}, id="2d"),
    pytest.param((8, C, 3), {"rmax": 1.2, "dmax": 0.2, "momentum": None}, id="3d-cumulative"),
    pytest.param((10, C), {"rmax": 3.0, "dmax": 5.0, "affine": False, "momentum": 0.3}, id="2d-input-no-affine"),
])
def test_matches_the_numpy_reference_over_several_steps(shape, options):
    layer = _layer_class(len(shape))(C, **options).double()
    rng = np.random.default_rng(0)
    w = rng.uniform(0.5, 1.5, C) * rng.choice([-1, 1], C) if layer.affine else None
    b = rng.uniform(-1, 1, C) if layer.affine else None
    if layer.affine:
        with tg.no_grad():
            layer.weight.data[...], layer.bias.data[...] = w, b
    running = [np.zeros(C), np.ones(C), 0]
    clipped = unclipped = 0
    for step in range(6):
        # drifting scale and shift per channel: r and d leave and re-enter their bounds
        x = rng.standard_normal(shape) * np.array([1.0, 2.5, 0.4]).reshape((1, C) + (1,) * (len(shape) - 2)) \
            * (1 + 0.3 * step) + np.array([0.0, 1.0, -2.0]).reshape((1, C) + (1,) * (len(shape) - 2)) * step / 3
        g = rng.standard_normal(shape)
        xt = tg.tensor(x, requires_grad=True)
        y = layer(xt)
        y.backward(tg.tensor(g))
        ry, rgx, rgw, rgb, r, d = reference_step(x, g, w, b, running, layer.rmax, layer.dmax, layer.eps,
                                                 layer.momentum)
        clipped += int(np.sum(np.isclose(np.abs(d), layer.dmax)) + np.sum(np.isclose(r, layer.rmax)
                                                                            | np.isclose(r, 1 / layer.rmax)))
        unclipped += int(np.sum(np.abs(d) < layer.dmax * 0.999))
        assert_close(layer.last_r, r, **TOL, what=f"r, step {step}")
        assert_close(layer.last_d, d, **TOL, what=f"d, step {step}")
        assert_close(y, ry, **TOL, what=f"output, step {step}")
        assert_close(xt.grad, rgx, **TOL, what=f"dx, step {step}")
        if layer.affine:
            assert_close(layer.weight.grad, rgw, **TOL, what=f"dw, step {step}")
            assert_close(layer.bias.grad, rgb, **TOL, what=f"db, step {step}")
            layer.zero_grad()
        assert_close(layer.running_mean, running[0], **TOL, what=f"running_mean, step {step}")
        assert_close(layer.running_var, running[1], **TOL, what=f"running_var, step {step}")
        assert int(layer.num_batches_tracked.item()) == running[2]
    assert clipped > 0 and unclipped > 0  # both regimes were exercised
    layer.eval()
    x = rng.standard_normal(shape)
    shape_c = (1, -1) + (1,) * (len(shape) - 2)
    expected = (x - running[0].reshape(shape_c)) / np.sqrt(running[1].reshape(shape_c) + layer.eps)
    if layer.affine:
        expected = expected * w.reshape(shape_c) + b.reshape(shape_c)
    assert_close(layer(tg.tensor(x)), expected, **TOL, what="eval: w (x - rm)/sqrt(rv + eps) + b")


@needs_torch
def test_gradients_match_pytorch_autograd_with_r_and_d_detached():
    rng = np.random.default_rng(1)
    layer = BatchRenorm2d(C, rmax=1.3, dmax=0.4).double()
    w, b = rng.uniform(0.5, 1.5, C), rng.uniform(-1, 1, C)
    rm, rv = rng.uniform(-1, 1, C), rng.uniform(0.3, 3.0, C)
    with tg.no_grad():
        layer.weight.data[...], layer.bias.data[...] = w, b
        layer.running_mean.data[...], layer.running_var.data[...] = rm, rv
    x, g = rng.standard_normal((5, C, 2, 3)) * 1.7 + 0.4, rng.standard_normal((5, C, 2, 3))
    xt = tg.tensor(x, requires_grad=True)
    y = layer(xt)
    y.backward(tg.tensor(g))

    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    mu = tx.mean((0, 2, 3), keepdim=True)
    var = tx.var((0, 2, 3), unbiased=False, keepdim=True)
    std = (var + layer.eps).sqrt()
    sigma = torch.tensor(np.sqrt(rv + layer.eps)).reshape(1, -1, 1, 1)
    r = (std / sigma).clamp(1 / 1.3, 1.3).detach()
    d = ((mu - torch.tensor(rm).reshape(1, -1, 1, 1)) / sigma).clamp(-0.4, 0.4).detach()
    ty = tw.reshape(1, -1, 1, 1) * ((tx - mu) / std * r + d) + tb.reshape(1, -1, 1, 1)
    ty.backward(torch.tensor(g))
    assert_close(y, ty, **TOL, what="output")
    assert_close(xt.grad, tx.grad, **TOL, what="dx")
    assert_close(layer.weight.grad, tw.grad, **TOL, what="dw")
    assert_close(layer.bias.grad, tb.grad, **TOL, what="db")


@pytest.mark.parametrize("bn_class, renorm_class, shape", [(BatchNorm2d, BatchRenorm2d, (4, C, 2, 2)),
                                                           (BatchNorm1d, BatchRenorm1d, (7, C))])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_rmax_1_dmax_0_is_batchnorm_exactly(bn_class, renorm_class, shape, momentum):
    """Outputs, gradients and (Chainer's variant: unbiased running variance) running statistics."""
    bn, renorm = bn_class(C, momentum=momentum).double(), renorm_class(C, momentum=momentum).double()
    rng = np.random.default_rng(2)
    for step in range(3):
        x, g = rng.standard_normal(shape) * 2 + step, rng.standard_normal(shape)
        outs = []
        for layer in (bn, renorm):
            xt = tg.tensor(x, requires_grad=True)
            y = layer(xt)
            y.backward(tg.tensor(g))
            outs.append([to_numpy(t) for t in (y, xt.grad, layer.weight.grad, layer.bias.grad,
                                                  layer.running_mean, layer.running_var)])
            layer.zero_grad()
        for a, b in zip(*outs):
            np.testing.assert_allclose(a, b, atol=1e-15, rtol=1e-15)
    np.testing.assert_array_equal(renorm.last_r, np.ones(C))
    np.testing.assert_array_equal(renorm.last_d, np.zeros(C))
    assert int(renorm.num_batches_tracked.item()) == int(bn.num_batches_tracked.item()) == 3


def test_clipping_is_engaged_at_both_bounds():
    """Channel 0: batch much wider and higher than the running statistics (r = rmax, d = dmax);
    channel 1: much narrower and lower (r = 1/rmax, d = -dmax); channel 2: inside the bounds."""
    rmax, dmax = 2.0, 0.5
    layer = BatchRenorm1d(C, rmax=rmax, dmax=dmax).double()
    rng = np.random.default_rng(3)
    z = rng.standard_normal((64, C))
    z = (z - z.mean(0)) / z.std(0)  # exactly mean 0, std 1 per channel
    x = z * np.array([10.0, 0.1, 1.2]) + np.array([5.0, -5.0, 0.1])
    g = rng.standard_normal(x.shape)
    xt = tg.tensor(x, requires_grad=True)
    y = layer(xt)
    y.backward(tg.tensor(g))
    np.testing.assert_allclose(layer.last_r[:2], [rmax, 1 / rmax])
    np.testing.assert_allclose(layer.last_d[:2], [dmax, -dmax])
    assert 1 / rmax < layer.last_r[2] < rmax and -dmax < layer.last_d[2] < dmax
    running = [np.zeros(C), np.ones(C), 0]
    ry, rgx, rgw, rgb, r, d = reference_step(x, g, np.ones(C), np.zeros(C), running, rmax, dmax, layer.eps, 0.1)
    assert_close(y, ry, **TOL)
    assert_close(xt.grad, rgx, **TOL)
    assert_close(layer.weight.grad, rgw, **TOL)
    # the clipped output differs from BatchNorm's: the correction is really applied
    bn = to_numpy(BatchNorm1d(C).double()(tg.tensor(x)))
    assert np.abs(to_numpy(y)[:, 0] - bn[:, 0]).max() > 0.4


def test_gradcheck_where_r_and_d_are_clipped():
    """With r and d at their bounds they are locally constant, so the stop-gradient backward is
    the true derivative and gradcheck / gradgradcheck apply."""
    layer = BatchRenorm2d(C, rmax=1.1, dmax=0.1).double()
    with tg.no_grad():
        layer.running_mean.data[...] = [2.0, -2.0, 1.5]
        layer.running_var.data[...] = [0.2, 9.0, 0.1]
    rng = np.random.default_rng(4)
    x = tg.tensor(rng.standard_normal((3, C, 2, 2)), requires_grad=True)
    w = tg.tensor(rng.uniform(0.5, 1.5, C), requires_grad=True)
    b = tg.tensor(rng.uniform(-1, 1, C), requires_grad=True)
    rm, rv = to_numpy(layer.running_mean).copy(), to_numpy(layer.running_var).copy()

    def fn(x, w, b):
        layer.running_mean.data[...], layer.running_var.data[...] = rm, rv
        return batch_renorm(x, layer.running_mean, layer.running_var, w, b, training=True, rmax=1.1, dmax=0.1)

    _, r, d = batch_renorm(tg.tensor(to_numpy(x)), tg.tensor(rm), tg.tensor(rv), training=True, rmax=1.1,
                           dmax=0.1, return_rd=True)
    np.testing.assert_allclose(np.abs(d), 0.1)
    np.testing.assert_allclose(np.maximum(r, 1 / r), 1.1)
    assert gradcheck(fn, [x, w, b])
    assert gradgradcheck(fn, [x, w, b])


def test_the_matrix_configuration_has_r_and_d_clipped():
    """The shared matrix gradchecks the SPECS entries on its own data: r and d must sit at their
    bounds there, with a margin far larger than gradcheck's perturbation."""
    from tests.norms.test_matrix import make_layer, random_input
    for name in ("BatchRenorm2d", "BatchRenorm1d"):
        spec = REGISTRY[name]
        layer = make_layer(spec)
        x = random_input(spec, batch=spec.test_options.get("gradcheck_batch"))
        axes = tuple(i for i in range(x.ndim) if i != 1)
        sigma = np.sqrt(to_numpy(layer.running_var) + layer.eps)
        ratio = np.sqrt(x.var(axes) + layer.eps) / sigma
        shift = (x.mean(axes) - to_numpy(layer.running_mean)) / sigma
        assert np.all(np.abs(np.log(ratio)) > np.log(layer.rmax) + 0.02), (name, ratio)
        assert np.all(np.abs(shift) > layer.dmax + 0.02), (name, shift)


@pytest.mark.parametrize("affine", [True, False])
def test_fused_backward_equals_the_composed_one(affine):
    rng = np.random.default_rng(5)
    x, dy = rng.standard_normal((4, C, 3)), rng.standard_normal((4, C, 3))
    w = [tg.tensor(rng.uniform(0.5, 1.5, C))] if affine else []
    mean = x.mean((0, 2), keepdims=True)
    invstd = 1 / np.sqrt(x.var((0, 2), keepdims=True) + 1e-5)
    r, d = rng.uniform(0.5, 2, (1, C, 1)), rng.uniform(-1, 1, (1, C, 1))
    fused = BatchRenormBackward.apply(tg.tensor(dy), tg.tensor(x), *w, mean=mean, invstd=invstd, r=r, d=d,
                                      eps=1e-5, has_weight=affine, has_bias=affine)
    composed = [c for c in composed_renorm_backward(tg.tensor(dy), tg.tensor(x), *w, r=r, d=d, eps=1e-5,
                                                    has_bias=affine) if c is not None]
    assert len(fused) == len(composed) == (3 if affine else 1)
    for f, c in zip(fused, composed):
        assert_close(f, c, atol=1e-12, rtol=1e-12)


def test_schedule_callables_get_the_step_count_before_the_update():
    seen = []

    def rmax(step):
        seen.append(step)
        return 1.0 + step

    layer = BatchRenorm1d(C, rmax=rmax, dmax=lambda step: 0.25 * step).double()
    with tg.no_grad():
        layer.running_var.data[...] = 1e-4  # tiny running sigma: r wants to be huge, d too
        layer.running_mean.data[...] = -100.0
    x = np.random.default_rng(6).standard_normal((5, C)) * 3
    for step in range(4):
        layer(tg.tensor(x))
        np.testing.assert_allclose(layer.last_r, 1.0 + step)
        np.testing.assert_allclose(layer.last_d, 0.25 * step)
        with tg.no_grad():
            layer.running_var.data[...], layer.running_mean.data[...] = 1e-4, -100.0
    assert seen == [0, 1, 2, 3]
    assert layer.clipping() == (5.0, 1.0)
    assert layer.clipping(step=10) == (11.0, 2.5)
    layer.eval()
    layer(tg.tensor(x))
    assert seen[-1] == 10  # eval does not consult the schedule


def test_the_papers_warm_up_schedule():
    rmax, dmax = renorm_schedule()
    assert [rmax(s) for s in (0, 5000, 22500, 40000, 10 ** 6)] == [1.0, 1.0, 2.0, 3.0, 3.0]
    assert [dmax(s) for s in (0, 5000, 15000, 25000, 10 ** 6)] == [0.0, 0.0, 2.5, 5.0, 5.0]
    assert repr(rmax) == "LinearRamp(1, 3, begin_step=5000, end_step=40000)"
    layer = BatchRenorm2d(4, rmax=rmax, dmax=dmax)
    assert layer.clipping() == (1.0, 0.0)
    with tg.no_grad():
        layer.num_batches_tracked.data[...] = 22500
    assert layer.clipping() == (2.0, 4.375)
    with pytest.raises(ValueError, match="end_step"):
        LinearRamp(1, 2, 10, 5)


def test_errors():
    with pytest.raises(ValueError, match="BatchRenorm2d: rmax must be a number >= 1, got 0.5"):
        BatchRenorm2d(C, rmax=0.5)
    with pytest.raises(ValueError, match="BatchRenorm1d: dmax must be a number >= 0, got -1"):
        BatchRenorm1d(C, dmax=-1)
    layer = BatchRenorm1d(C, rmax=lambda step: 0.9)
    with pytest.raises(ValueError, match="BatchRenorm1d at step 0: rmax must be a number >= 1, got 0.9"):
        layer(tg.tensor(np.ones((4, C), np.float32)))
    with pytest.raises(ValueError, match=r"^BatchRenorm2d\(3\): expected 4D input \(got 2D input\); input of shape \[4, 3\]$"):
        BatchRenorm2d(C)(tg.tensor(np.ones((4, C), np.float32)))
    with pytest.raises(ValueError, match=r"^BatchRenorm1d\(3\): expected 2D or 3D input \(got 4D input\)"):
        BatchRenorm1d(C)(tg.tensor(np.ones((4, C, 1, 1), np.float32)))
    with pytest.raises(ValueError, match=r"Expected more than 1 value per channel when training, "
                                         r"got input size \(1, 3, 1\)"):
        BatchRenorm1d(C)(tg.tensor(np.ones((1, C, 1), np.float32)))
    with pytest.raises(RuntimeError, match="running_mean should contain 3 elements not 4"):
        BatchRenorm1d(4)(tg.tensor(np.ones((2, C), np.float32)))
    no_buffers = BatchRenorm1d(C)
    no_buffers.running_mean = None
    with pytest.raises(RuntimeError, match="needs the running statistics"):
        no_buffers(tg.tensor(np.ones((2, C), np.float32)))


def test_eval_with_n_1_frozen_statistics_and_an_empty_batch():
    layer = BatchRenorm2d(C, rmax=2, dmax=1).double()
    x = np.random.default_rng(7).standard_normal((1, C, 1, 1))
    layer.eval()
    assert_close(layer(tg.tensor(x)), x / np.sqrt(1 + layer.eps), atol=1e-12)
    layer.train().freeze_running_stats()
    assert_close(layer(tg.tensor(x)), x / np.sqrt(1 + layer.eps), atol=1e-12)
    assert int(layer.num_batches_tracked.item()) == 0
    layer.freeze_running_stats(False)
    y = layer(tg.tensor(np.zeros((0, C, 2, 2))))
    assert y.shape == (0, C, 2, 2) and int(layer.num_batches_tracked.item()) == 1
    np.testing.assert_array_equal(to_numpy(layer.running_var), np.ones(C))


def test_repr_state_dict_and_graph_node():
    layer = BatchRenorm2d(8, rmax=3.0, dmax=5.0)
    assert repr(layer) == "BatchRenorm2d(8, rmax=3.0, dmax=5.0, eps=1e-05, momentum=0.1, affine=True, bias=True)"
    assert list(layer.state_dict()) == list(BatchNorm2d(8).state_dict())
    x = tg.tensor(np.random.default_rng(8).standard_normal((2, 8, 2, 2)).astype(np.float32), requires_grad=True)
    y = layer(x)
    assert y.dtype == np.float32
    assert y.grad_fn.name == "BatchRenorm2dBackward"
    assert sorted(y.grad_fn.saved_shapes()) == ["d", "invstd", "mean", "r", "weight", "x"]
    gx, = tg.autograd.grad([y], [x], [tg.ones_like(y)], create_graph=True)
    assert gx.grad_fn.name == "BatchRenormBackwardBackward"
