"""Padding modules (tinygrad_bn/nn/padding.py): PyTorch parity of every module (output and input
gradient), their padding arguments, reprs and errors."""
import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.nn as nn
from tests.helpers import check_grads, needs_torch, torch
from tests.nn.parity import check_module

tnn = torch.nn  # the MissingOracle stand-in when PyTorch is absent: its tests skip

# (module name, constructor arguments, input shape)
MODULE_CASES = [
    ("ConstantPad1d", (2, 3.5), (2, 3, 4)),
    ("ConstantPad1d", ((1, -1), -1.0), (3, 4)),
    ("ConstantPad2d", ((1, 0, 2, 3), 0.5), (2, 3, 4, 4)),
    ("ConstantPad3d", (1, 2.0), (1, 2, 2, 3, 3)),
    ("ConstantPad1d", (1, 2.0), (2, 2, 2, 3)),       # constant padding takes any rank, as in PyTorch
    ("ZeroPad1d", ((0, 2),), (2, 3, 4)),
    ("ZeroPad2d", (2,), (3, 4, 4)),
    ("ZeroPad3d", ((1, 0, 0, 1, 1, 1),), (2, 1, 2, 3, 3)),
    ("ReflectionPad1d", (3,), (2, 3, 4)),
    ("ReflectionPad2d", ((1, 2, 3, 0),), (2, 3, 4, 5)),
    ("ReflectionPad2d", (1,), (3, 4, 5)),
    ("ReflectionPad3d", (1,), (1, 2, 2, 3, 3)),
    ("ReplicationPad1d", ((2, 5),), (2, 3, 4)),
    ("ReplicationPad2d", ((3, 0, 1, 4),), (1, 2, 3, 3)),
    ("ReplicationPad3d", ((1, 0, 2, 1, 0, 1),), (2, 2, 3, 3)),
    ("CircularPad1d", (2,), (2, 3, 4)),
    ("CircularPad2d", ((1, 2, 3, 1),), (2, 3, 4, 5)),
    ("CircularPad3d", (1,), (1, 1, 2, 3, 3)),
]


@needs_torch
@pytest.mark.parametrize("name,args,shape", MODULE_CASES, ids=lambda v: str(v))
def test_padding_modules_match_torch(device, name, args, shape):
    ours, theirs = getattr(nn, name)(*args), getattr(tnn, name)(*args)
    assert ours.padding == tuple(theirs.padding)
    assert repr(ours) == repr(theirs)
    check_module(ours, theirs, shape, device=device, atol=1e-12, rtol=0)


def test_padding_modules_gradcheck_and_double_backward(device):
    check_grads(lambda x: nn.ReflectionPad2d((2, 1, 0, 1))(x) ** 2, [(1, 2, 3, 3)], device=device)
    check_grads(lambda x: nn.CircularPad1d(2)(x) ** 2, [(2, 3)], device=device)


def test_padding_modules_are_exported():
    for name in ("ConstantPad1d", "ConstantPad2d", "ConstantPad3d", "ZeroPad1d", "ZeroPad2d", "ZeroPad3d",
                 "ReflectionPad1d", "ReflectionPad2d", "ReflectionPad3d", "ReplicationPad1d",
                 "ReplicationPad2d", "ReplicationPad3d", "CircularPad1d", "CircularPad2d", "CircularPad3d"):
        assert name in nn.__all__ and issubclass(getattr(nn, name), nn.Module)


def test_padding_module_errors():
    with pytest.raises(ValueError, match=r"ReflectionPad2d: padding must be an int or a tuple of 4 ints, "
                                         r"got \(1, 2\)"):
        nn.ReflectionPad2d((1, 2))
    with pytest.raises(ValueError, match="ZeroPad1d: padding must be an int or a tuple of 2 ints"):
        nn.ZeroPad1d(1.5)
    with pytest.raises(NotImplementedError, match=r"ReflectionPad2d: expected 3D or 4D input, got input of "
                                                  r"shape \[3, 3\]"):
        nn.ReflectionPad2d(1)(tg.zeros(3, 3))
    with pytest.raises(RuntimeError, match="pad: padding size should be less than"):
        nn.ReflectionPad1d(4)(tg.zeros(1, 4))


def test_reflection_pad_then_conv_is_torchs_conv_padding_mode():
    """The image-model idiom: ReflectionPad2d(1) + Conv2d(padding=0) equals padding_mode='reflect'."""
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 5)).astype(np.float32)
    conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
    plain = nn.Conv2d(3, 4, 3)
    plain.load_state_dict(conv.state_dict())
    np.testing.assert_allclose(conv(tg.tensor(x)).detach().numpy(),
                               plain(nn.ReflectionPad2d(1)(tg.tensor(x))).detach().numpy(),
                               atol=1e-6)
