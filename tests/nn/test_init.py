"""nn.init: PyTorch's gains and fans, the distributions' bounds and spreads (against torch's own
draws), in-place semantics, seeding, errors."""
import math

import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.nn as nn
from tinygrad_bn.nn import init
from tests.helpers import needs_torch, torch

SHAPE = (128, 64, 3)  # fan_in = 192, fan_out = 384; 24k samples: sample std within ~1%


@needs_torch
@pytest.mark.parametrize("nonlinearity, param", [
    ("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None), ("relu", None),
    ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", 3), ("selu", None)])
def test_calculate_gain_matches_torch(nonlinearity, param):
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(
        torch.nn.init.calculate_gain(nonlinearity, param))


def test_calculate_gain_errors():
    with pytest.raises(ValueError, match="Unsupported nonlinearity gelu"):
        init.calculate_gain("gelu")
    with pytest.raises(ValueError, match="negative_slope True not a valid number"):
        init.calculate_gain("leaky_relu", True)


@needs_torch
@pytest.mark.parametrize("shape", [(3, 4), (8, 4, 3, 3), (5, 2, 7)])
def test_fans_match_torch(shape):
    assert init._calculate_fan_in_and_fan_out(tg.empty(*shape)) == \
        torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(*shape))


def test_fans_need_two_dims():
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init._calculate_fan_in_and_fan_out(tg.empty(5))


def _stats(t):
    a = t.detach().numpy().ravel()  # a tinygrad_bn or a torch tensor
    return a.mean(), a.std(), np.abs(a).max()


CASES = [
    ("kaiming_uniform_", dict()),
    ("kaiming_uniform_", dict(a=math.sqrt(5))),
    ("kaiming_uniform_", dict(mode="fan_out", nonlinearity="relu")),
    ("kaiming_normal_", dict()),
    ("kaiming_normal_", dict(a=0.1, mode="fan_out", nonlinearity="leaky_relu")),
    ("xavier_uniform_", dict()),
    ("xavier_uniform_", dict(gain=2.0)),
    ("xavier_normal_", dict(gain=0.5)),
    ("uniform_", dict(a=-2.0, b=3.0)),
    ("normal_", dict(mean=1.5, std=0.3)),
]


@needs_torch
@pytest.mark.parametrize("name, kwargs", CASES, ids=[f"{n}{k}" for n, k in CASES])
def test_distribution_matches_torch(device, name, kwargs):
    torch.manual_seed(0)
    ours = getattr(init, name)(tg.empty(*SHAPE, device=device), **kwargs)
    theirs = getattr(torch.nn.init, name)(torch.empty(*SHAPE), **kwargs)
    (m, s, top), (tm, ts, ttop) = _stats(ours), _stats(theirs)
    assert abs(m - tm) < 0.05 * ts + 0.01 * abs(tm)
    assert abs(s - ts) < 0.03 * ts
    if "uniform" in name:  # the same support: both reach (and never pass) the bound
        assert abs(top - ttop) < 0.01 * ttop


def test_kaiming_uniform_bound_formula():
    w = init.kaiming_uniform_(tg.empty(*SHAPE), a=0.0, nonlinearity="relu")
    bound = math.sqrt(2.0) * math.sqrt(3.0 / 192)
    top = np.abs(w.numpy()).max()
    assert bound * 0.99 < top <= bound


def test_constant_fills(device):
    t = tg.empty(3, 2, device=device)
    assert init.constant_(t, 0.25) is t
    np.testing.assert_array_equal(t.numpy(), np.full((3, 2), 0.25))
    np.testing.assert_array_equal(init.ones_(t).numpy(), np.ones((3, 2)))
    np.testing.assert_array_equal(init.zeros_(t).numpy(), np.zeros((3, 2)))


def test_in_place_on_parameters_without_graph(device):
    p = nn.Parameter(tg.zeros(4, 3, device=device))
    version = p._version[0]
    out = init.xavier_uniform_(p)
    assert out is p and p.is_leaf and p.requires_grad and p.grad_fn is None
    assert p._version[0] == version + 1
    assert p.device == device and p.dtype == np.float32


def test_seeded_and_device_local(device):
    tg.manual_seed(11)
    a = init.normal_(tg.empty(5, 5, device=device)).numpy()
    tg.manual_seed(11)
    b = init.normal_(tg.empty(5, 5, device=device)).numpy()
    np.testing.assert_array_equal(a, b)


def test_float16_and_float64():
    assert init.kaiming_normal_(tg.empty(4, 4, dtype=tg.float16)).dtype == np.float16
    assert init.uniform_(tg.empty(4, 4, dtype=tg.float64)).dtype == np.float64


def test_errors():
    with pytest.raises(ValueError,
                       match=r"Mode fan_avg not supported, please use one of \['fan_in', 'fan_out'\]"):
        init.kaiming_uniform_(tg.empty(3, 3), mode="fan_avg")
    with pytest.raises(TypeError, match="init.normal_: expected a floating-point tensor"):
        init.normal_(tg.zeros(3, dtype=tg.int64))
    with pytest.warns(UserWarning, match="Initializing zero-element tensors is a no-op"):
        init.kaiming_normal_(tg.empty(0, 3))
