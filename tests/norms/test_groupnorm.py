"""GroupNorm and F.group_norm (norm-spec section 4): errors, the plain-NumPy reference, the
equivalences with InstanceNorm and LayerNorm, PyTorch parity. Gradcheck, backend parity, state_dict
round trip and 10 steps vs PyTorch come from the shared matrix through groupnorm.SPECS."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn.norms.groupnorm import GroupNorm, group_norm, groups_for_conv
from tinygrad_bn.norms.instancenorm import InstanceNorm2d
from tinygrad_bn.norms.layernorm import LayerNorm
from tests.helpers import assert_close, check_torch, needs_torch, torch


def reference(x, groups, w=None, b=None, eps=1e-5, g=None):
    """Forward (and, given the output gradient g, dx, dw, db) in float64 from the equations."""
    n, c = x.shape[:2]
    xg = x.reshape(n, groups, -1)
    mu = xg.mean(axis=2, keepdims=True)
    invstd = 1 / np.sqrt(((xg - mu) ** 2).mean(axis=2, keepdims=True) + eps)
    x_hat = ((xg - mu) * invstd).reshape(x.shape)
    pshape = (1, c) + (1,) * (x.ndim - 2)
    w_ = np.ones(c) if w is None else w
    y = x_hat * w_.reshape(pshape) + (0 if b is None else b.reshape(pshape))
    if g is None:
        return y
    g_hat = (g * w_.reshape(pshape)).reshape(n, groups, -1)
    xh = x_hat.reshape(n, groups, -1)
    dx = invstd * (g_hat - g_hat.mean(axis=2, keepdims=True) - xh * (g_hat * xh).mean(axis=2, keepdims=True))
    axes = (0,) + tuple(range(2, x.ndim))
    return y, dx.reshape(x.shape), (g * x_hat).sum(axis=axes), g.sum(axis=axes)


def _with_params(layer, rng, device="cpu"):
    layer = layer.to(tg.float64).to(device)
    with tg.no_grad():
        for p in layer.parameters():
            p.copy_(tg.tensor(rng.standard_normal(p.shape), device=device))
    return layer


@pytest.mark.parametrize("groups,shape", [(2, (3, 4, 5)), (1, (2, 6, 2, 2)), (6, (2, 6, 3)), (3, (4, 6))])
def test_forward_and_backward_match_the_numpy_reference(groups, shape, device):
    rng = np.random.default_rng(0)
    layer = _with_params(GroupNorm(groups, shape[1]), rng, device)
    x = rng.standard_normal(shape) * 2 + 1
    g = rng.standard_normal(shape)
    xt = tg.tensor(x, device=device, requires_grad=True)
    y = layer(xt)
    y.backward(tg.tensor(g, device=device))
    w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    y_ref, dx_ref, dw_ref, db_ref = reference(x, groups, w, b, g=g)
    assert_close(y, y_ref, atol=1e-12, what="output")
    assert_close(xt.grad, dx_ref, atol=1e-11, what="dx")
    assert_close(layer.weight.grad, dw_ref, atol=1e-11, what="dw")
    assert_close(layer.bias.grad, db_ref, atol=1e-11, what="db")
    assert y.grad_fn.name == "GroupNormBackward" and y.grad_fn.attrs["num_groups"] == groups


def test_c_groups_equals_instance_norm_with_affine():
    rng = np.random.default_rng(1)
    gn = _with_params(GroupNorm(4, 4), rng)
    inorm = InstanceNorm2d(4, affine=True).to(tg.float64)
    inorm.load_state_dict(gn.state_dict())
    x = rng.standard_normal((3, 4, 3, 3))
    xa, xb = tg.tensor(x, requires_grad=True), tg.tensor(x, requires_grad=True)
    ya, yb = gn(xa), inorm(xb)
    assert_close(ya, yb, atol=1e-13)
    g = tg.tensor(rng.standard_normal(x.shape))
    ya.backward(g), yb.backward(g)
    assert_close(xa.grad, xb.grad, atol=1e-12)
    assert_close(gn.weight.grad, inorm.weight.grad, atol=1e-12)
    assert_close(ya, reference(x, 4, gn.weight.detach().numpy(), gn.bias.detach().numpy()), atol=1e-12)


def test_one_group_equals_layer_norm_over_chw_with_a_per_channel_affine():
    rng = np.random.default_rng(2)
    gn = _with_params(GroupNorm(1, 3), rng)
    x = rng.standard_normal((2, 3, 4, 4))
    w, b = gn.weight.detach().numpy().reshape(1, 3, 1, 1), gn.bias.detach().numpy().reshape(1, 3, 1, 1)
    ln = LayerNorm([3, 4, 4], elementwise_affine=False).to(tg.float64)
    expected = ln(tg.tensor(x)).numpy() * w + b
    assert_close(gn(tg.tensor(x)), expected, atol=1e-12)
    # ... and not a LayerNorm whose weight is per element: same statistics, different parameters
    assert_close(gn(tg.tensor(x)), reference(x, 1, gn.weight.detach().numpy(), gn.bias.detach().numpy()),
                 atol=1e-12)


def test_train_and_eval_agree():
    layer = GroupNorm(2, 4)
    x = tg.randn(2, 4, 3)
    assert_close(layer.eval()(x), layer.train()(x), atol=0, rtol=0)


def test_groups_for_conv_divides_the_channels():
    assert [groups_for_conv(c) for c in (16, 64, 256, 24, 3)] == [16, 32, 32, 8, 1]


# ---- errors ---------------------------------------------------------------------------------
def test_construction_errors():
    with pytest.raises(ValueError, match=r"^num_channels \(6\) must be divisible by num_groups \(4\)$"):
        GroupNorm(4, 6)
    with pytest.raises(ValueError, match="num_groups must be positive"):
        GroupNorm(0, 6)  # PyTorch: ZeroDivisionError from `6 % 0`


def test_input_errors_are_pytorchs():
    with pytest.raises(RuntimeError, match=r"^Expected at least 2 dimensions for input tensor but "
                                           r"received 1$"):
        GroupNorm(2, 6)(tg.randn(6))
    # the layer names itself first (issue 15); F.group_norm keeps PyTorch's message
    with pytest.raises(RuntimeError, match=r"^GroupNorm\(2, 6\): expected input with 6 channels \(dim 1\), got "
                                           r"input of shape \[3, 8, 4\]$"):
        GroupNorm(2, 6)(tg.randn(3, 8, 4))
    with pytest.raises(RuntimeError, match=r"^Expected weight to be a vector of size equal to the number of "
                                           r"channels in input, but got weight of shape \[6\] and input of "
                                           r"shape \[3, 8, 4\]$"):
        group_norm(tg.randn(3, 8, 4), 2, tg.ones(6))
    with pytest.raises(RuntimeError, match=r"^Expected number of channels in input to be divisible by "
                                           r"num_groups, but got input of shape \[3, 5, 4\] and "
                                           r"num_groups=2$"):
        GroupNorm(2, 6, affine=False)(tg.randn(3, 5, 4))
    with pytest.raises(RuntimeError, match=r"^Expected num groups to be greater than 0, got -2$"):
        group_norm(tg.randn(2, 4, 3), -2)
    with pytest.raises(RuntimeError, match=r"weight to be a vector.*weight of shape \[2, 2\]"):
        group_norm(tg.randn(2, 4, 3), 2, tg.randn(2, 2))
    # PyTorch prints the weight's shape here (a slip in its message); we print the bias's
    with pytest.raises(RuntimeError, match=r"^Expected bias to be a vector of size equal to the number of "
                                           r"channels in input, but got bias of shape \[5\] and input of "
                                           r"shape \[3, 6, 4\]$"):
        group_norm(tg.randn(3, 6, 4), 2, tg.randn(6), tg.randn(5))


def test_without_affine_a_divisible_channel_mismatch_is_accepted():
    y = GroupNorm(2, 6, affine=False)(tg.randn(3, 8, 4))
    assert y.shape == (3, 8, 4)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("layer,shape,printed", [(lambda: GroupNorm(6, 6), (1, 6), "[1, 6]"),
                                                 (lambda: GroupNorm(6, 6), (1, 6, 1, 1), "[1, 6, 1, 1]"),
                                                 (lambda: GroupNorm(2, 2, affine=False), (1, 2), "[1, 2]")])
def test_one_value_per_group_fails_even_in_eval(layer, shape, printed, mode):
    module = layer().train(mode == "train")
    with pytest.raises(ValueError, match=r"^Expected more than 1 value per channel when training, got input "
                                         r"size " + printed.replace("[", r"\[").replace("]", r"\]") + "$"):
        module(tg.randn(*shape))
    GroupNorm(3, 6).train(mode == "train")(tg.randn(1, 6))  # two channels per group: fine


def test_empty_batch():
    assert GroupNorm(2, 4)(tg.randn(0, 4, 3)).shape == (0, 4, 3)


# ---- module API -----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,keys", [({}, ["weight", "bias"]), ({"bias": False}, ["weight"]),
                                         ({"affine": False}, [])])
def test_state_dict_keys_and_per_channel_parameters(kwargs, keys):
    layer = GroupNorm(2, 6, **kwargs)
    assert list(layer.state_dict()) == keys
    assert all(v.shape == (6,) for v in layer.state_dict().values())


@needs_torch
@pytest.mark.parametrize("args,kwargs", [((2, 4), {}), ((1, 4), {"bias": False}), ((4, 4), {"affine": False}),
                                         ((3, 6), {"eps": 1e-3})])
def test_repr_matches_pytorch(args, kwargs):
    assert repr(GroupNorm(*args, **kwargs)) == repr(torch.nn.GroupNorm(*args, **kwargs))


@needs_torch
@pytest.mark.parametrize("groups,shape", [(2, (3, 4, 5)), (1, (2, 6, 3, 2)), (6, (2, 6, 4)), (2, (5, 4)),
                                          (4, (2, 8, 2, 2, 2))])
def test_pytorch_parity(groups, shape, device):
    c = shape[1]
    check_torch(lambda x, w, b: group_norm(x, groups, w, b, eps=1e-4),
                lambda x, w, b: torch.nn.functional.group_norm(x, groups, w, b, eps=1e-4),
                [shape, (c,), (c,)], device=device, atol=1e-10, rtol=1e-8)


@needs_torch
def test_float32_parity_on_conv_maps():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 8, 5, 5)).astype(np.float32) * 3 + 2
    ours, theirs = GroupNorm(4, 8), torch.nn.GroupNorm(4, 8)
    xt, tx = tg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, ty = ours(xt), theirs(tx)
    assert y.dtype == np.float32
    assert_close(y, ty, atol=2e-6, rtol=1e-5)
    g = rng.standard_normal(x.shape).astype(np.float32)
    y.backward(tg.tensor(g)), ty.backward(torch.tensor(g))
    assert_close(xt.grad, tx.grad, atol=2e-5, rtol=1e-4)
    assert_close(ours.weight.grad, theirs.weight.grad, atol=1e-4, rtol=1e-4)


@needs_torch
@pytest.mark.parametrize("groups,channels", [(1, 1), (1, 2), (2, 2)])
def test_single_channel_and_single_group_parameters(groups, channels):
    """Size-1 parameter and group dims (the kernel's bias-gradient shape is easy to get wrong)."""
    check_torch(lambda x, w, b: group_norm(x, groups, w, b), lambda x, w, b: torch.nn.functional.group_norm(
        x, groups, w, b), [(3, channels, 2), (channels,), (channels,)], atol=1e-10, rtol=1e-8)
