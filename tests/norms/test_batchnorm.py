"""BatchNorm1d/2d beyond the shared matrix: the spec's rules and PyTorch's exact errors."""
import collections
import warnings

import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.nn.functional as F
from tinygrad_bn import nn
from tinygrad_bn.norms._meanvar import NormalizeBackward, composed_backward
from tests.helpers import HAVE_TORCH, assert_close, needs_torch, torch


def test_defaults_and_state_dict_keys():
    bn = nn.BatchNorm2d(3)
    assert (bn.eps, bn.momentum, bn.affine, bn.track_running_stats) == (1e-5, 0.1, True, True)
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert bn.num_batches_tracked.dtype == tg.int64 and bn.num_batches_tracked.shape == ()
    assert list(nn.BatchNorm2d(3, affine=False).state_dict()) == ["running_mean", "running_var", "num_batches_tracked"]
    assert list(nn.BatchNorm2d(3, bias=False).state_dict()) == ["weight", "running_mean", "running_var", "num_batches_tracked"]
    assert list(nn.BatchNorm2d(3, track_running_stats=False).state_dict()) == ["weight", "bias"]


@pytest.mark.parametrize("layer,shape,message", [
    (lambda: nn.BatchNorm1d(3), (2, 3, 4, 5), r"expected 2D or 3D input \(got 4D input\)"),
    (lambda: nn.BatchNorm2d(3), (2, 3, 4), r"expected 4D input \(got 3D input\)"),
    (lambda: nn.BatchNorm1d(3), (1, 3), r"Expected more than 1 value per channel when training, got input size \(1, 3\)"),
    (lambda: nn.BatchNorm1d(3), (1, 3, 1), r"got input size \(1, 3, 1\)"),
    (lambda: nn.BatchNorm2d(3), (1, 3, 1, 1), r"got input size \(1, 3, 1, 1\)"),
    (lambda: nn.BatchNorm2d(3, eps=0), (2, 3, 2, 2), "batch_norm eps must be positive during training, but got 0"),
])
def test_value_errors_match_pytorch(layer, shape, message):
    with pytest.raises(ValueError, match=message):
        layer()(tg.randn(*shape))
    if HAVE_TORCH:  # the same message from PyTorch itself
        torch_layer = {"BatchNorm1d": torch.nn.BatchNorm1d, "BatchNorm2d": torch.nn.BatchNorm2d}[type(layer()).__name__]
        ours = layer()
        theirs = message.split("got input size")[0] or "Expected more than 1 value per channel"  # PyTorch prints the size as torch.Size([...])
        with pytest.raises(ValueError, match=theirs):
            torch_layer(3, eps=ours.eps)(torch.randn(*shape))


def test_eval_eps_must_be_non_negative():
    bn = nn.BatchNorm2d(3, eps=-0.1).eval()
    with pytest.raises(ValueError, match="batch_norm eps must be non-negative, but got -0.1"):
        bn(tg.randn(2, 3, 2, 2))


@pytest.mark.parametrize("layer,message", [
    (lambda: nn.BatchNorm1d(3), r"^BatchNorm1d\(3\): expected input with 3 channels \(dim 1\), got input of "
                                r"shape \[5, 4\]$"),
    (lambda: nn.BatchNorm1d(3, track_running_stats=False), r"^BatchNorm1d\(3\): expected input with 3 channels"),
])
def test_channel_mismatch_errors(layer, message):
    with pytest.raises(RuntimeError, match=message):
        layer()(tg.randn(5, 4))


def test_channel_mismatch_without_affine_or_buffers_is_not_detected():
    y = nn.BatchNorm1d(4, affine=False, track_running_stats=False)(tg.randn(5, 3))
    assert y.shape == (5, 3)


def test_single_value_rules():
    nn.BatchNorm1d(3)(tg.randn(1, 3, 2))          # (1, C, 2): two values per channel, fine
    nn.BatchNorm1d(3).eval()(tg.randn(1, 3))       # eval with buffers accepts N=1
    no_buffers = nn.BatchNorm1d(3, track_running_stats=False).eval()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        no_buffers(tg.randn(1, 3))                 # eval without buffers uses batch statistics


@needs_torch
def test_eval_without_buffers_uses_batch_statistics():
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 2))
    ours = nn.BatchNorm2d(3, track_running_stats=False).double().eval()
    theirs = torch.nn.BatchNorm2d(3, track_running_stats=False).double().eval()
    assert_close(ours(tg.tensor(x)), theirs(torch.tensor(x)), atol=1e-12)
    manual = nn.BatchNorm2d(3).double()
    manual.running_mean, manual.running_var = None, None
    manual.eval()
    assert_close(manual(tg.tensor(x)), torch.nn.functional.batch_norm(torch.tensor(x), None, None, training=True), atol=1e-12)


def test_empty_batch_keeps_stats_and_counts():
    bn = nn.BatchNorm2d(3)
    before = bn.running_mean.numpy().copy(), bn.running_var.numpy().copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice" warnings either
        y = bn(tg.randn(0, 3, 2, 2))
    assert y.shape == (0, 3, 2, 2)
    assert bn.num_batches_tracked.item() == 1
    np.testing.assert_array_equal(bn.running_mean.numpy(), before[0])
    np.testing.assert_array_equal(bn.running_var.numpy(), before[1])


def test_momentum_none_is_a_cumulative_average_that_discards_the_initial_values():
    bn = nn.BatchNorm1d(2, momentum=None).double()
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((5, 2)) * (i + 1) + i for i in range(4)]
    for b in batches:
        bn(tg.tensor(b))
    assert_close(bn.running_mean, np.mean([b.mean(0) for b in batches], 0), atol=1e-12)
    assert_close(bn.running_var, np.mean([b.var(0, ddof=1) for b in batches], 0), atol=1e-12)
    assert bn.num_batches_tracked.item() == 4


def test_running_variance_is_unbiased_and_eval_does_not_move_anything():
    bn = nn.BatchNorm1d(2, momentum=1.0).double()
    x = np.random.default_rng(1).standard_normal((6, 2, 3))
    bn(tg.tensor(x))
    assert_close(bn.running_var, x.transpose(1, 0, 2).reshape(2, -1).var(1, ddof=1), atol=1e-12)
    bn.eval()
    state = {k: v.numpy().copy() for k, v in bn.state_dict().items()}
    bn(tg.tensor(x))
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), state[k])


def test_frozen_running_stats_survive_train_and_still_train_the_affine():
    bn = nn.BatchNorm2d(3).double()
    bn(tg.randn(4, 3, 2, 2, dtype=tg.float64) * 3 + 1)
    bn.freeze_running_stats()
    bn.train()  # must not unfreeze
    frozen = {k: v.numpy().copy() for k, v in bn.state_dict().items() if k.startswith(("running", "num"))}
    x = tg.randn(4, 3, 2, 2, dtype=tg.float64)
    y = bn(x)
    y.sum().backward()
    for k, v in frozen.items():
        np.testing.assert_array_equal(bn.state_dict()[k].numpy(), v)
    assert bn.weight.grad is not None and bn.bias.grad is not None
    expected = (x.numpy() - frozen["running_mean"].reshape(1, 3, 1, 1)) / np.sqrt(frozen["running_var"].reshape(1, 3, 1, 1) + 1e-5)
    assert_close(y, expected, atol=1e-12)
    bn.freeze_running_stats(False)
    bn(x)
    assert bn.num_batches_tracked.item() == 2
    with pytest.raises(RuntimeError, match="no running statistics"):
        nn.BatchNorm2d(3, track_running_stats=False).freeze_running_stats()


def test_old_checkpoint_without_num_batches_tracked():
    bn = nn.BatchNorm2d(3)
    state = collections.OrderedDict((k, v) for k, v in bn.state_dict().items() if k != "num_batches_tracked")
    state._metadata = {"": {"version": 1}}
    fresh = nn.BatchNorm2d(3)
    fresh.num_batches_tracked.fill_(7)
    fresh.load_state_dict(state)
    assert fresh.num_batches_tracked.item() == 0
    state._metadata = {"": {"version": 2}}
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "num_batches_tracked"'):
        nn.BatchNorm2d(3).load_state_dict(state)


def test_functional_batch_norm_updates_buffers_in_place():
    x = tg.randn(4, 3, 2, 2)
    rm, rv = tg.zeros(3), tg.ones(3)
    F.batch_norm(x, rm, rv, training=True, momentum=0.5)
    assert_close(rm, 0.5 * x.numpy().mean((0, 2, 3)), atol=1e-6)


@pytest.mark.parametrize("fixed", [False, True])
@pytest.mark.parametrize("affine", [True, False])
def test_fused_backward_matches_the_composed_oracle(fixed, affine, device):
    rng = np.random.default_rng(2)
    x = tg.tensor(rng.standard_normal((5, 3, 2, 2)), device=device)
    dy = tg.tensor(rng.standard_normal((5, 3, 2, 2)), device=device)
    w = tg.tensor(rng.standard_normal(3), device=device) if affine else None
    geometry = dict(group_shape=(5, 3, 4), axes=(0, 2), param_shape=(1, 3, 1, 1), eps=1e-5, center=True, has_bias=True)
    mean = invstd = None
    if fixed:
        mean = x.data.mean(axis=(0, 2, 3)).reshape(1, 3, 1) * 0.5
        invstd = (1 / (x.data.var(axis=(0, 2, 3)) + 0.3) ** 0.5).reshape(1, 3, 1)
    else:
        xg = x.data.reshape(5, 3, 4)
        mean = xg.mean(axis=(0, 2), keepdims=True)
        invstd = 1 / (xg.var(axis=(0, 2), keepdims=True) + 1e-5) ** 0.5
    expected = composed_backward(dy, x, w, mean=mean if fixed else None, invstd=invstd if fixed else None, **geometry)
    for param_group_shape in (None, (1, 3, 1)):  # the general path and the BN fast path
        inputs = [dy, x] + ([w] if affine else [])
        got = NormalizeBackward.apply(*inputs, mean=mean, invstd=invstd, fixed_stats=fixed,
                                      has_weight=affine, param_group_shape=param_group_shape, **geometry)
        want = [e for e in expected if e is not None]
        assert len(got) == len(want)
        for g, e in zip(got, want):
            assert_close(g, e, atol=1e-12)
