"""Conv3d and ConvTranspose1d/2d/3d (tinygrad_bn/nn/layers.py): PyTorch's constructor, weight
layout, default init bounds and repr; forward and input/weight/bias gradients against PyTorch's
modules with the same weights (float64), output_size, gradcheck + gradgradcheck, and errors."""
import math

import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.nn as nn
from tests.helpers import check_grads, needs_torch, torch

#: (class name, constructor args, kwargs, input shape)
CASES = [
    ("Conv3d", (2, 4, 3), {}, (2, 2, 5, 4, 4)),
    ("Conv3d", (4, 6, (3, 1, 2)), {"stride": (2, 1, 1), "padding": 1, "dilation": (1, 2, 1), "groups": 2}, (1, 4, 5, 5, 4)),
    ("Conv3d", (2, 3, 3), {"padding": "same", "bias": False}, (2, 2, 3, 4, 3)),
    ("ConvTranspose1d", (3, 4, 3), {"stride": 2, "padding": 1, "output_padding": 1}, (2, 3, 5)),
    ("ConvTranspose1d", (4, 6, 2), {"groups": 2, "dilation": 3, "bias": False}, (4, 6)),
    ("ConvTranspose2d", (3, 2, 3), {}, (2, 3, 4, 5)),
    ("ConvTranspose2d", (4, 4, (3, 2)), {"stride": (2, 3), "padding": (1, 0), "output_padding": (1, 2), "groups": 4}, (1, 4, 3, 3)),
    ("ConvTranspose3d", (2, 3, 2), {"stride": 2}, (1, 2, 2, 3, 2)),
    ("ConvTranspose3d", (2, 2, 3), {"padding": 1, "dilation": 2, "output_padding": 1, "stride": 2}, (2, 2, 2, 2)),
]
IDS = [f"{c[0]}-{i}" for i, c in enumerate(CASES)]


def _pair(name, args, kwargs):
    tg.manual_seed(0)
    ours = getattr(nn, name)(*args, **kwargs).double()
    theirs = getattr(torch.nn, name)(*args, **kwargs).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(ours.weight.detach().numpy()))
        if ours.bias is not None:
            theirs.bias.copy_(torch.tensor(ours.bias.detach().numpy()))
    return ours, theirs


@needs_torch
@pytest.mark.parametrize("name, args, kwargs, shape", CASES, ids=IDS)
def test_module_matches_torch(name, args, kwargs, shape):
    ours, theirs = _pair(name, args, kwargs)
    assert repr(ours) == repr(theirs)
    assert ours.weight.shape == tuple(theirs.weight.shape)
    x = np.random.default_rng(1).standard_normal(shape)
    xo, xt = tg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out, ref = ours(xo), theirs(xt)
    assert out.shape == tuple(ref.shape)
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = np.random.default_rng(2).standard_normal(tuple(ref.shape))
    out.backward(tg.tensor(g))
    ref.backward(torch.tensor(g))
    np.testing.assert_allclose(xo.grad.numpy(), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
    if ours.bias is not None:
        np.testing.assert_allclose(ours.bias.grad.numpy(), theirs.bias.grad.numpy(), rtol=1e-10, atol=1e-12)


@needs_torch
@pytest.mark.parametrize("name, args, kwargs, x_shape, size", [
    ("ConvTranspose2d", (2, 3, 3), {"stride": 2, "padding": 1}, (1, 2, 4, 4), (8, 8)),
    ("ConvTranspose2d", (2, 3, 3), {"stride": 2, "padding": 1}, (1, 2, 4, 4), (1, 3, 7, 8)),
    ("ConvTranspose1d", (2, 2, 4), {"stride": 3}, (2, 2, 5), (18,)),
    ("ConvTranspose3d", (1, 1, 2), {"stride": 2}, (1, 1, 2, 2, 2), (5, 4, 5)),
])
def test_output_size_picks_the_output_padding_as_torch(name, args, kwargs, x_shape, size):
    ours, theirs = _pair(name, args, kwargs)
    x = np.random.default_rng(3).standard_normal(x_shape)
    out, ref = ours(tg.tensor(x), output_size=size), theirs(torch.tensor(x), output_size=size)
    assert out.shape == tuple(ref.shape)
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name, args, kwargs, shape", [
    ("Conv3d", (2, 2, 2), {"padding": 1}, (1, 2, 2, 3, 2)),
    ("ConvTranspose3d", (2, 2, 2), {"stride": 2, "groups": 2}, (1, 2, 2, 2, 1)),
    ("ConvTranspose1d", (2, 3, 3), {"stride": 2, "output_padding": 1}, (2, 2, 3)),
])
def test_gradcheck_and_double_backward(name, args, kwargs, shape):
    module = getattr(nn, name)(*args, **kwargs).double()
    check_grads(lambda x, w, b: type(module)._functional(x, w, b, module.stride, module.padding,
                                                         *((module.output_padding, module.groups, module.dilation)
                                                           if module._transposed else (module.dilation, module.groups))),
                [shape, tuple(module.weight.shape), tuple(module.bias.shape)])


@pytest.mark.parametrize("name, args", [("ConvTranspose2d", (4, 6, 3)), ("ConvTranspose3d", (2, 8, (2, 3, 1))),
                                        ("Conv3d", (3, 5, 2))])
def test_default_init_bounds_follow_the_fan_in(name, args):
    """kaiming_uniform(a=sqrt(5)) gives U(+-1/sqrt(fan_in)) for weight and bias, with fan_in from
    weight dim 1 (out/groups for the transposed ones, as PyTorch computes it)."""
    tg.manual_seed(0)
    m = getattr(nn, name)(*args)
    fan_in = m.weight.shape[1] * math.prod(m.weight.shape[2:])
    bound = 1 / math.sqrt(fan_in)
    for p in (m.weight, m.bias):
        values = p.detach().numpy()
        assert values.min() >= -bound and values.max() <= bound and values.std() > bound / 4


@pytest.mark.parametrize("make, exc, pattern", [
    (lambda: nn.ConvTranspose2d(3, 4, 3, groups=2), ValueError, r"ConvTranspose2d: in_channels \(3\) must be divisible by groups \(2\)"),
    (lambda: nn.ConvTranspose2d(2, 4, 3, stride=2, output_padding=2), ValueError,
     r"ConvTranspose2d: output padding must be non-negative and smaller than either stride or dilation"),
    (lambda: nn.ConvTranspose1d(2, 4, 3, padding_mode="reflect"), ValueError, r'ConvTranspose1d: Only "zeros" padding mode is supported'),
    (lambda: nn.ConvTranspose1d(2, 4, 3, padding="same"), ValueError, r"ConvTranspose1d: padding must be an int or a tuple"),
    (lambda: nn.Conv3d(2, 4, (3, 3)), ValueError, r"Conv3d: kernel_size must be an int or a tuple of 3 ints, got \(3, 3\)"),
    (lambda: nn.Conv3d(2, 4, 3)(tg.ones(1, 3, 4, 4, 4)), RuntimeError,
     r"Conv3d\(2, 4, .*\): expected input of shape \(N, 2, D, H, W\) or \(2, D, H, W\), got \[1, 3, 4, 4, 4\]"),
    (lambda: nn.ConvTranspose3d(2, 4, 3)(tg.ones(2, 4, 4)), RuntimeError,
     r"ConvTranspose3d\(2, 4, .*\): expected input of shape \(N, 2, D, H, W\) or \(2, D, H, W\), got \[2, 4, 4\]"),
    (lambda: nn.ConvTranspose2d(2, 3, 3, stride=2)(tg.ones(1, 2, 4, 4), output_size=(12, 9)), ValueError,
     r"requested an output size of \[12, 9\], but valid sizes range from \[9, 9\] to \[10, 10\] \(for an input of \[4, 4\]\)"),
    (lambda: nn.ConvTranspose2d(2, 3, 3)(tg.ones(1, 2, 4, 4), output_size=(6,)), ValueError,
     r"output_size must have 2 or 4 elements, got \[6\]"),
])
def test_bad_arguments(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()
