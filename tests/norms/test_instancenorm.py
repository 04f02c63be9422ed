"""InstanceNorm1d/2d and F.instance_norm (norm-spec section 4): errors and the channel-mismatch
warning, the plain-NumPy reference, running statistics (incl. momentum=None freezing) vs PyTorch,
unbatched inputs, state_dict. Gradcheck, backend parity, state_dict round trip and 10 steps vs
PyTorch come from the shared matrix through instancenorm.SPECS."""
import warnings

import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn.norms.instancenorm import InstanceNorm1d, InstanceNorm2d, instance_norm
from tests.helpers import assert_close, check_torch, needs_torch, torch


def reference(x, w=None, b=None, eps=1e-5, g=None, mean=None, var=None):
    """Forward (and, given the output gradient g, dx) in float64 from the equations; with
    mean/var (running statistics, per channel) those are used as constants."""
    n, c = x.shape[:2]
    xg = x.reshape(n, c, -1)
    pshape = (1, c, 1)
    if mean is None:
        mu = xg.mean(axis=2, keepdims=True)
        invstd = 1 / np.sqrt(((xg - mu) ** 2).mean(axis=2, keepdims=True) + eps)
    else:
        mu, invstd = mean.reshape(pshape), 1 / np.sqrt(var.reshape(pshape) + eps)
    x_hat = (xg - mu) * invstd
    w_ = (np.ones(c) if w is None else w).reshape(pshape)
    y = (x_hat * w_ + (0 if b is None else b.reshape(pshape))).reshape(x.shape)
    if g is None:
        return y
    g_hat = g.reshape(n, c, -1) * w_
    if mean is None:
        dx = invstd * (g_hat - g_hat.mean(axis=2, keepdims=True)
                       - x_hat * (g_hat * x_hat).mean(axis=2, keepdims=True))
    else:
        dx = g_hat * invstd
    return y, dx.reshape(x.shape)


def running_update(rm, rv, x, momentum):
    """The spec's rule: averages over the batch of the per-instance mean and unbiased variance."""
    n, c = x.shape[:2]
    xg = x.reshape(n, c, -1)
    return ((1 - momentum) * rm + momentum * xg.mean(axis=2).mean(axis=0),
            (1 - momentum) * rv + momentum * xg.var(axis=2, ddof=1).mean(axis=0))


@pytest.mark.parametrize("cls,shape", [(InstanceNorm1d, (3, 4, 5)), (InstanceNorm2d, (2, 3, 3, 2))])
def test_forward_and_backward_match_the_numpy_reference(cls, shape, device):
    rng = np.random.default_rng(0)
    layer = cls(shape[1], affine=True).to(tg.float64).to(device)
    w, b = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    with tg.no_grad():
        layer.weight.copy_(tg.tensor(w, device=device))
        layer.bias.copy_(tg.tensor(b, device=device))
    x, g = rng.standard_normal(shape) * 2 + 1, rng.standard_normal(shape)
    xt = tg.tensor(x, device=device, requires_grad=True)
    y = layer(xt)
    y.backward(tg.tensor(g, device=device))
    y_ref, dx_ref = reference(x, w, b, g=g)
    assert_close(y, y_ref, atol=1e-12, what="output")
    assert_close(xt.grad, dx_ref, atol=1e-11, what="dx")
    x_hat = reference(x)
    axes = (0,) + tuple(range(2, x.ndim))
    assert_close(layer.weight.grad, (g * x_hat).sum(axis=axes), atol=1e-11, what="dw")
    assert_close(layer.bias.grad, g.sum(axis=axes), atol=1e-11, what="db")
    assert y.grad_fn.name == f"{cls.__name__}Backward"


def test_default_eval_still_uses_instance_statistics():
    layer = InstanceNorm2d(3).eval()
    x = np.random.default_rng(1).standard_normal((2, 3, 2, 3))
    assert_close(layer(tg.tensor(x)), reference(x), atol=1e-6)
    assert list(layer.state_dict()) == []


# ---- running statistics ---------------------------------------------------------------------
@pytest.mark.parametrize("momentum", [0.1, 0.5])
def test_running_statistics_follow_the_rule_then_eval_uses_them(momentum):
    rng = np.random.default_rng(2)
    layer = InstanceNorm1d(3, momentum=momentum, affine=True, track_running_stats=True).to(tg.float64)
    rm, rv = np.zeros(3), np.ones(3)
    for step in range(3):
        x = rng.standard_normal((4, 3, 5)) * (step + 1) + step
        y = layer(tg.tensor(x))
        assert_close(y, reference(x), atol=1e-12, what="training uses instance statistics")
        rm, rv = running_update(rm, rv, x, momentum)
        assert_close(layer.running_mean, rm, atol=1e-12, what=f"running_mean at step {step}")
        assert_close(layer.running_var, rv, atol=1e-12, what=f"running_var at step {step}")
    assert int(layer.num_batches_tracked.item()) == 0  # registered, never incremented
    before_eval = layer.running_mean.numpy().copy()
    layer.eval()
    x, g = rng.standard_normal((2, 3, 5)), rng.standard_normal((2, 3, 5))
    xt = tg.tensor(x, requires_grad=True)
    y = layer(xt)
    y.backward(tg.tensor(g))
    y_ref, dx_ref = reference(x, g=g, mean=rm, var=rv)
    assert_close(y, y_ref, atol=1e-12, what="eval output with running statistics")
    assert_close(xt.grad, dx_ref, atol=1e-12, what="eval dx: the statistics are constants")
    assert_close(layer.running_mean, before_eval, atol=0, rtol=0, what="eval leaves the statistics alone")
    layer(tg.tensor(rng.standard_normal((2, 3, 1))))  # eval with running stats: one position is fine


def test_momentum_none_freezes_the_statistics():
    layer = InstanceNorm2d(2, momentum=None, track_running_stats=True)
    for _ in range(3):
        layer(tg.randn(2, 2, 3, 3) * 4 + 2)
    assert_close(layer.running_mean, np.zeros(2), atol=0, rtol=0)
    assert_close(layer.running_var, np.ones(2), atol=0, rtol=0)
    assert int(layer.num_batches_tracked.item()) == 0


@needs_torch
@pytest.mark.parametrize("cls,shape,kwargs", [
    ("InstanceNorm1d", (4, 3, 5), {"track_running_stats": True}),
    ("InstanceNorm2d", (3, 2, 3, 2), {"track_running_stats": True, "affine": True, "momentum": 0.3}),
    ("InstanceNorm1d", (2, 3, 4), {"track_running_stats": True, "momentum": None}),
    ("InstanceNorm2d", (2, 3, 2), {"track_running_stats": True, "affine": True}),  # unbatched (C, H, W)
    ("InstanceNorm1d", (3, 6), {"track_running_stats": True}),                    # unbatched (C, L)
])
def test_several_steps_then_eval_match_pytorch(cls, shape, kwargs):
    channels = shape[1] if len(shape) == {"InstanceNorm1d": 3, "InstanceNorm2d": 4}[cls] else shape[0]
    ours = {"InstanceNorm1d": InstanceNorm1d, "InstanceNorm2d": InstanceNorm2d}[cls](channels, **kwargs)
    ours = ours.to(tg.float64)
    theirs = getattr(torch.nn, cls)(channels, **kwargs).double()
    rng = np.random.default_rng(4)
    if kwargs.get("affine"):
        w, b = rng.standard_normal(channels), rng.standard_normal(channels)
        with tg.no_grad():
            ours.weight.copy_(tg.tensor(w)), ours.bias.copy_(tg.tensor(b))
        with torch.no_grad():
            theirs.weight.copy_(torch.tensor(w)), theirs.bias.copy_(torch.tensor(b))
    for step in range(4):
        if step == 3:
            ours.eval(), theirs.eval()
        x = rng.standard_normal(shape) * (step + 1) - step
        g = rng.standard_normal(shape)
        xt, tx = tg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        y, ty = ours(xt), theirs(tx)
        assert_close(y, ty, atol=1e-10, what=f"output at step {step}")
        y.backward(tg.tensor(g)), ty.backward(torch.tensor(g))
        assert_close(xt.grad, tx.grad, atol=1e-10, what=f"dx at step {step}")
        for (name, p), tp in zip(ours.named_parameters(), theirs.parameters()):
            assert_close(p.grad, tp.grad, atol=1e-10, what=f"grad of {name} at step {step}")
        for (name, buf), tbuf in zip(ours.named_buffers(), theirs.buffers()):
            assert_close(buf, tbuf, atol=1e-12, what=f"{name} after step {step}")


@needs_torch
@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 3, 2, 3)])
def test_functional_parity(shape, device):
    c = shape[1]
    check_torch(lambda x, w, b: instance_norm(x, weight=w, bias=b, eps=1e-3),
                lambda x, w, b: torch.nn.functional.instance_norm(x, weight=w, bias=b, eps=1e-3),
                [shape, (c,), (c,)], device=device, atol=1e-10, rtol=1e-8)
    rng = np.random.default_rng(5)
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2, c)
    check_torch(lambda x: instance_norm(x, tg.tensor(rm, device=device), tg.tensor(rv, device=device),
                                        use_input_stats=False),
                lambda x: torch.nn.functional.instance_norm(x, torch.tensor(rm), torch.tensor(rv),
                                                            use_input_stats=False),
                [shape], device=device, atol=1e-10, rtol=1e-8)


def test_functional_updates_given_buffers_in_place():
    x = np.random.default_rng(6).standard_normal((2, 3, 4))
    rm, rv = tg.zeros(3, dtype=tg.float64), tg.ones(3, dtype=tg.float64)
    instance_norm(tg.tensor(x), rm, rv, momentum=0.2)
    expected = running_update(np.zeros(3), np.ones(3), x, 0.2)
    assert_close(rm, expected[0], atol=1e-12)
    assert_close(rv, expected[1], atol=1e-12)


def test_empty_batch_leaves_the_statistics_alone():
    # (PyTorch writes NaN into them: the mean over an empty batch)
    layer = InstanceNorm1d(3, track_running_stats=True)
    assert layer(tg.randn(0, 3, 4)).shape == (0, 3, 4)
    assert_close(layer.running_mean, np.zeros(3), atol=0, rtol=0)
    assert_close(layer.running_var, np.ones(3), atol=0, rtol=0)


# ---- unbatched inputs -----------------------------------------------------------------------
@pytest.mark.parametrize("cls,shape", [(InstanceNorm1d, (3, 5)), (InstanceNorm2d, (3, 2, 4))])
def test_unbatched_input_is_a_batch_of_one(cls, shape):
    rng = np.random.default_rng(7)
    x, g = rng.standard_normal(shape), rng.standard_normal(shape)
    layer = cls(3, affine=True).to(tg.float64)
    with tg.no_grad():
        layer.weight.copy_(tg.tensor(rng.standard_normal(3)))
        layer.bias.copy_(tg.tensor(rng.standard_normal(3)))
    xt, xb = tg.tensor(x, requires_grad=True), tg.tensor(x[None], requires_grad=True)
    y, yb = layer(xt), layer(xb)
    assert y.shape == shape
    assert_close(y, yb.detach().numpy()[0], atol=1e-13)
    y.backward(tg.tensor(g))
    w_grad = layer.weight.grad.detach().numpy().copy()
    layer.zero_grad()
    yb.backward(tg.tensor(g[None]))
    assert_close(xt.grad, xb.grad.detach().numpy()[0], atol=1e-13)
    assert_close(layer.weight.grad, w_grad, atol=1e-13)


def test_3d_input_to_instancenorm2d_is_unbatched():
    x = tg.randn(3, 4, 4)
    assert InstanceNorm2d(3)(x).shape == (3, 4, 4)
    with pytest.warns(UserWarning, match=r"^input's size at dim=0 does not match num_features"):
        InstanceNorm2d(4)(x)  # dim 0 holds the channels of an unbatched input


# ---- errors and warnings --------------------------------------------------------------------
def test_wrong_number_of_dimensions():
    with pytest.raises(ValueError, match=r"^InstanceNorm1d\(3\): expected 2D or 3D input \(got 4D input\); input of shape \[2, 3, 4, 4\]$"):
        InstanceNorm1d(3)(tg.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"^InstanceNorm2d\(3\): expected 3D or 4D input \(got 2D input\)"):
        InstanceNorm2d(3)(tg.randn(2, 3))


@pytest.mark.parametrize("make,shape,printed", [
    (lambda: InstanceNorm1d(3), (2, 3, 1), r"\(2, 3, 1\)"),
    (lambda: InstanceNorm1d(3).eval(), (2, 3, 1), r"\(2, 3, 1\)"),   # no buffers: eval too
    (lambda: InstanceNorm2d(3, track_running_stats=True), (2, 3, 1, 1), r"\(2, 3, 1, 1\)"),
    (lambda: InstanceNorm1d(3), (3, 1), r"\(1, 3, 1\)"),             # unbatched
])
def test_one_spatial_element_with_instance_statistics(make, shape, printed):
    with pytest.raises(ValueError, match=r"^Expected more than 1 spatial element when training, got input "
                                         r"size " + printed + "$"):
        make()(tg.randn(*shape))


def test_channel_mismatch_with_affine_is_an_error():
    with pytest.raises(ValueError, match=r"^InstanceNorm1d\(3\): expected input's size at dim=1 to match "
                                         r"num_features \(3\), but got: 5\. Input of shape \[2, 5, 4\]\.$"):
        InstanceNorm1d(3, affine=True)(tg.randn(2, 5, 4))
    with pytest.raises(ValueError, match=r"^InstanceNorm2d\(3\): expected input's size at dim=0 to match "
                                         r"num_features \(3\), but got: 5\. Input of shape \[5, 4, 4\]\.$"):
        InstanceNorm2d(3, affine=True)(tg.randn(5, 4, 4))


def test_channel_mismatch_without_affine_only_warns_and_runs():
    x = np.random.default_rng(8).standard_normal((2, 5, 4))
    with pytest.warns(UserWarning, match=r"^input's size at dim=1 does not match num_features\. You can "
                                         r"silence this warning by not passing in num_features, which is "
                                         r"not used because affine=False$"):
        y = InstanceNorm1d(3)(tg.tensor(x))
    assert_close(y, reference(x), atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        InstanceNorm1d(5)(tg.tensor(x))  # matching channels: no warning
    # with running statistics the buffers' size is then wrong: an error naming the layer
    with pytest.warns(UserWarning), pytest.raises(RuntimeError,
                                                  match=r"^InstanceNorm1d\(3\): expected input with 3 channels "
                                                        r"\(dim 1\), got input of shape \[2, 5, 4\]$"):
        InstanceNorm1d(3, track_running_stats=True)(tg.tensor(x))


def test_functional_errors():
    x = tg.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"^running_mean and running_var must either both be None or "
                                         r"neither be None$"):
        instance_norm(x, tg.zeros(3), None)
    with pytest.raises(RuntimeError, match=r"^Expected running_mean and running_var to be defined when "
                                           r"use_input_stats is false$"):
        instance_norm(x, use_input_stats=False)
    with pytest.raises(RuntimeError, match=r"^weight should contain 6 elements not 8"):
        instance_norm(x, weight=tg.ones(4))
    with pytest.raises(RuntimeError, match=r"^bias should contain 6 elements not 10"):
        instance_norm(x, weight=tg.ones(3), bias=tg.ones(5))
    with pytest.raises(ValueError, match=r"^Expected more than 1 spatial element when training, got input "
                                         r"size \(3, 4\)$"):
        instance_norm(tg.randn(3, 4))
    layer = InstanceNorm1d(3, track_running_stats=True).eval()
    layer.running_mean = layer.running_var = None
    with pytest.raises(RuntimeError, match="to be defined when use_input_stats is false"):
        layer(x)


# ---- module API -----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,keys", [
    ({}, []), ({"affine": True}, ["weight", "bias"]), ({"affine": True, "bias": False}, ["weight"]),
    ({"track_running_stats": True}, ["running_mean", "running_var", "num_batches_tracked"]),
    ({"affine": True, "track_running_stats": True},
     ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]),
])
def test_state_dict_keys(kwargs, keys):
    assert list(InstanceNorm2d(3, **kwargs).state_dict()) == keys


def test_loading_old_checkpoints():
    layer = InstanceNorm1d(3, track_running_stats=True)
    state = layer.state_dict()
    del state["num_batches_tracked"]
    state._metadata[""]["version"] = 1  # before num_batches_tracked existed: filled with 0
    layer.load_state_dict(state)
    untracked = InstanceNorm1d(3)
    old = {"running_mean": tg.zeros(3), "running_var": tg.ones(3)}  # a pre-0.4 checkpoint
    with pytest.raises(RuntimeError, match=r'Unexpected running stats buffer\(s\) "running_mean" and '
                                           r'"running_var" for InstanceNorm1d with '
                                           r'track_running_stats=False'):
        untracked.load_state_dict(old)


@needs_torch
@pytest.mark.parametrize("cls", ["InstanceNorm1d", "InstanceNorm2d"])
@pytest.mark.parametrize("kwargs", [{}, {"affine": True, "momentum": None}, {"eps": 1e-3, "bias": False},
                                    {"track_running_stats": True, "affine": True}])
def test_repr_matches_pytorch(cls, kwargs):
    ours = {"InstanceNorm1d": InstanceNorm1d, "InstanceNorm2d": InstanceNorm2d}[cls](4, **kwargs)
    assert repr(ours) == repr(getattr(torch.nn, cls)(4, **kwargs))


@needs_torch
@pytest.mark.parametrize("shape", [(3, 1, 4), (1, 4)])
def test_one_channel_with_affine(shape):
    """A one-element weight and bias (the kernel's bias-gradient shape is easy to get wrong)."""
    rng = np.random.default_rng(9)
    x, g = rng.standard_normal(shape), rng.standard_normal(shape)
    ours = InstanceNorm1d(1, affine=True).to(tg.float64)
    theirs = torch.nn.InstanceNorm1d(1, affine=True).double()
    xt, tx = tg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, ty = ours(xt), theirs(tx)
    y.backward(tg.tensor(g)), ty.backward(torch.tensor(g))
    assert_close(y, ty, atol=1e-12)
    assert_close(xt.grad, tx.grad, atol=1e-10)
    assert_close(ours.weight.grad, theirs.weight.grad, atol=1e-10)
    assert_close(ours.bias.grad, theirs.bias.grad, atol=1e-10)
