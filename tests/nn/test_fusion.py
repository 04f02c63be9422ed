"""Conv/Linear + BatchNorm folding (tinygrad_bn/nn/utils/fusion.py): fused outputs equal the
unfused eval outputs (float64 to 1e-12, float32 to ~1e-5), fused weights equal
torch.nn.utils.fusion's on the same weights, grouped / bias-free / transposed convs, BN without
affine, the eval-only and running-statistics checks, and fuse_bn on whole models: Sequential
neighbours, declared fuse_pairs, and graph tracing through ResNet-style blocks (post- and
pre-activation), with the cases that must not be fused."""
import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.nn as nn
from tinygrad_bn.nn.utils import parametrize
from tinygrad_bn.nn.utils.fusion import fuse_bn, fuse_conv_bn_eval, fuse_linear_bn_eval
from tinygrad_bn.nn.utils.parametrizations import spectral_norm, weight_norm
from tinygrad_bn.norms.batchnorm import BatchNorm1d, BatchNorm2d
from tests.helpers import HAVE_TORCH, assert_close, needs_torch, torch

TOL = {np.float64: dict(atol=1e-12, rtol=1e-12), np.float32: dict(atol=2e-5, rtol=1e-5)}


def randomize(module, seed=0):
    """Non-trivial parameters and running statistics everywhere (running_var > 0)."""
    rng = np.random.default_rng(seed)
    with tg.no_grad():
        for _, p in module.named_parameters():
            p.data[...] = rng.uniform(-1.5, 1.5, p.shape)
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.data[...] = rng.uniform(-1, 1, b.shape)
            elif name.endswith("running_var"):
                b.data[...] = rng.uniform(0.2, 2.0, b.shape)
    return module


def x_for(shape, dtype=np.float64, device="cpu", seed=1):
    return tg.tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype), device=device)


CONV_CASES = {
    "default": (dict(in_channels=3, out_channels=4, kernel_size=3), {}),
    "no-bias": (dict(in_channels=3, out_channels=4, kernel_size=3, bias=False), {}),
    "grouped-strided": (dict(in_channels=4, out_channels=6, kernel_size=3, groups=2, stride=2,
                             padding=1, dilation=1), {}),
    "bn-no-affine": (dict(in_channels=3, out_channels=4, kernel_size=1), dict(affine=False)),
    "bn-no-bias": (dict(in_channels=3, out_channels=4, kernel_size=2, bias=False), dict(bias=False)),
}


def conv_bn(case, dtype=np.float64, device="cpu", lib=nn):
    """An eval-mode (conv, bn) pair: ours randomized, or PyTorch's (lib=torch.nn) to copy into."""
    conv_kwargs, bn_kwargs = CONV_CASES[case]
    conv = lib.Conv2d(**conv_kwargs)
    bn = (BatchNorm2d if lib is nn else lib.BatchNorm2d)(conv_kwargs["out_channels"], **bn_kwargs)
    if lib is nn:
        randomize(conv), randomize(bn, seed=1)
        conv.to(device).to(dtype), bn.to(device).to(dtype)
    return conv.eval(), bn.eval()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_fused_conv_equals_conv_then_bn(case, dtype, device):
    conv, bn = conv_bn(case, dtype, device)
    weight_before = conv.weight.detach().numpy().copy() if device == "cpu" else None
    fused = fuse_conv_bn_eval(conv, bn)
    x = x_for((2, conv.in_channels, 5, 5), dtype, device)
    assert_close(fused(x), bn(conv(x)), **TOL[dtype], what="fused vs conv -> bn")
    assert type(fused) is nn.Conv2d and fused is not conv
    assert fused.weight.dtype == dtype and fused.bias.dtype == dtype and fused.bias.device == device
    assert isinstance(fused.weight, nn.Parameter) and isinstance(fused.bias, nn.Parameter)
    assert (conv.bias is None) == (case in ("no-bias", "bn-no-bias"))  # the input is untouched
    if weight_before is not None:
        np.testing.assert_array_equal(conv.weight.detach().numpy(), weight_before)
    assert "bias=False" not in repr(fused)


@needs_torch
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_fused_conv_weights_match_torch(case):
    ours_conv, ours_bn = conv_bn(case)
    theirs_conv, theirs_bn = conv_bn(case, lib=torch.nn)
    for ours, theirs in ((ours_conv, theirs_conv.double()), (ours_bn, theirs_bn.double())):
        state = theirs.state_dict()
        for key, value in ours.state_dict().items():
            state[key].copy_(torch.tensor(value.numpy()))
    fused = fuse_conv_bn_eval(ours_conv, ours_bn)
    their_fused = torch.nn.utils.fusion.fuse_conv_bn_eval(theirs_conv, theirs_bn)
    assert_close(fused.weight, their_fused.weight, atol=1e-14)
    assert_close(fused.bias, their_fused.bias, atol=1e-14)
    assert fused.weight.requires_grad == their_fused.weight.requires_grad
    assert fused.bias.requires_grad == their_fused.bias.requires_grad  # False for a bias-free conv
    assert repr(fused) == repr(their_fused)


class ConvTranspose2d(nn.Module):
    """A minimal transposed convolution (tinygrad_bn.nn has none yet): weight (in, out, k, k)."""

    def __init__(self, c_in, c_out, k, bias=True):
        super().__init__()
        self.in_channels, self.out_channels, self.groups = c_in, c_out, 1
        self.weight = nn.Parameter(tg.randn(c_in, c_out, k, k))
        self.bias = nn.Parameter(tg.randn(c_out)) if bias else None

    def forward(self, x):
        from tinygrad_bn.ops.conv import conv_transpose2d
        return conv_transpose2d(x, self.weight, self.bias)


@pytest.mark.parametrize("bias", [True, False])
def test_transposed_conv_fusion(bias):
    conv = randomize(ConvTranspose2d(3, 5, 2, bias=bias)).double().eval()
    bn = randomize(BatchNorm2d(5), seed=2).double().eval()
    fused = fuse_conv_bn_eval(conv, bn, transpose=True)
    x = x_for((2, 3, 3, 3))
    assert_close(fused(x), bn(conv(x)), **TOL[np.float64])
    if HAVE_TORCH:
        theirs = torch.nn.ConvTranspose2d(3, 5, 2, bias=bias).double().eval()
        tbn = torch.nn.BatchNorm2d(5).double().eval()
        with torch.no_grad():
            theirs.weight.copy_(torch.tensor(conv.weight.detach().numpy()))
            if bias:
                theirs.bias.copy_(torch.tensor(conv.bias.detach().numpy()))
            for key, value in bn.state_dict().items():
                tbn.state_dict()[key].copy_(torch.tensor(value.numpy()))
        their_fused = torch.nn.utils.fusion.fuse_conv_bn_eval(theirs, tbn, transpose=True)
        assert_close(fused.weight, their_fused.weight, atol=1e-14)
        assert_close(fused.bias, their_fused.bias, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bias,affine", [(True, True), (False, True), (True, False)])
def test_fused_linear_equals_linear_then_bn(bias, affine, dtype, device):
    lin = randomize(nn.Linear(3, 4, bias=bias)).to(device).to(dtype).eval()
    bn = randomize(BatchNorm1d(4, affine=affine), seed=3).to(device).to(dtype).eval()
    fused = fuse_linear_bn_eval(lin, bn)
    x = x_for((5, 3), dtype, device)
    assert_close(fused(x), bn(lin(x)), **TOL[dtype])
    assert fused.weight.dtype == dtype and type(fused) is nn.Linear


@needs_torch
@pytest.mark.parametrize("features", [4, 1])
def test_fused_linear_weights_match_torch(features):
    lin, bn = randomize(nn.Linear(3, 4)).double().eval(), randomize(BatchNorm1d(features), 2).double().eval()
    tlin, tbn = torch.nn.Linear(3, 4).double().eval(), torch.nn.BatchNorm1d(features).double().eval()
    for ours, theirs in ((lin, tlin), (bn, tbn)):
        for key, value in ours.state_dict().items():
            theirs.state_dict()[key].copy_(torch.tensor(value.numpy()))
    fused, their_fused = fuse_linear_bn_eval(lin, bn), torch.nn.utils.fusion.fuse_linear_bn_eval(tlin, tbn)
    assert_close(fused.weight, their_fused.weight, atol=1e-14)
    assert_close(fused.bias, their_fused.bias, atol=1e-14)


@needs_torch
def test_errors_match_torch():
    for ours, theirs in (((nn.Conv2d(2, 3, 1), BatchNorm2d(3)),
                          (torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3))),):
        for train_conv in (True, False):
            ours[0].train(train_conv), ours[1].train(not train_conv)
            theirs[0].train(train_conv), theirs[1].train(not train_conv)
            with pytest.raises(AssertionError) as their_error:
                torch.nn.utils.fusion.fuse_conv_bn_eval(*theirs)
            with pytest.raises(AssertionError) as our_error:
                fuse_conv_bn_eval(*ours)
            assert str(our_error.value) == str(their_error.value) == "Fusion only for eval!"
    with pytest.raises(AssertionError, match=r"^bn.running_mean and bn.running_var must not be None$"):
        fuse_conv_bn_eval(nn.Conv2d(2, 3, 1).eval(), BatchNorm2d(3, track_running_stats=False).eval())
    with pytest.raises(AssertionError, match="Fusion only for eval!"):
        fuse_linear_bn_eval(nn.Linear(2, 3), BatchNorm1d(3).eval())
    with pytest.raises(AssertionError) as their_error:
        torch.nn.utils.fusion.fuse_linear_bn_eval(torch.nn.Linear(2, 3).eval(),
                                                  torch.nn.BatchNorm1d(2).eval())
    with pytest.raises(AssertionError) as our_error:
        fuse_linear_bn_eval(nn.Linear(2, 3).eval(), BatchNorm1d(2).eval())
    assert str(our_error.value) == str(their_error.value)
    with pytest.raises(AssertionError, match="conv out_channels=3 and bn.num_features=2"):
        fuse_conv_bn_eval(nn.Conv2d(2, 3, 1).eval(), BatchNorm2d(2).eval())


@pytest.mark.parametrize("reparametrize", [weight_norm, spectral_norm])
def test_parametrized_conv_is_fused_with_its_current_weight(reparametrize):
    conv = reparametrize(randomize(nn.Conv2d(3, 4, 3))).double().eval()
    bn = randomize(BatchNorm2d(4), 1).double().eval()
    fused = fuse_conv_bn_eval(conv, bn)
    assert type(fused) is nn.Conv2d and not parametrize.is_parametrized(fused)
    assert parametrize.is_parametrized(conv)
    x = x_for((2, 3, 5, 5))
    assert_close(fused(x), bn(conv(x)), **TOL[np.float64])


# ---- whole models ------------------------------------------------------------------------------
def sequential_model():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, bias=False), BatchNorm2d(4, affine=False), nn.ReLU(),
        nn.Conv2d(4, 2, 1, groups=2), BatchNorm2d(2, track_running_stats=False),  # batch stats: kept
        nn.Flatten(), nn.Linear(2 * 3 * 3, 3), BatchNorm1d(3))


def check_fused(model, fused, x, dtype=np.float64):
    assert_close(fused(x), model(x), **TOL[dtype], what="fused model vs model")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fuse_bn_sequential_neighbours(dtype, device):
    model = randomize(sequential_model()).to(device).to(dtype).eval()
    fused = fuse_bn(model)
    kinds = [type(m).__name__ for m in fused]
    assert kinds == ["Conv2d", "Identity", "ReLU", "Conv2d", "Identity", "ReLU", "Conv2d",
                     "BatchNorm2d", "Flatten", "Linear", "BatchNorm1d"]
    assert type(model[1]) is BatchNorm2d and fused[0] is not model[0]  # the model is untouched
    check_fused(model, fused, x_for((3, 3, 5, 5), dtype, device), dtype)
    # with an example input, Linear -> BatchNorm1d on (N, features) is folded too
    traced = fuse_bn(model, x_for((3, 3, 5, 5), dtype, device))
    assert [type(m).__name__ for m in traced][-1] == "Identity"
    assert type(traced[7]) is BatchNorm2d
    check_fused(model, traced, x_for((3, 3, 5, 5), dtype, device, seed=4), dtype)


def test_fuse_bn_refuses_training_mode():
    model = sequential_model()
    with pytest.raises(AssertionError, match=r"^Fusion only for eval! .*call model.eval\(\) first"):
        fuse_bn(model)
    model.eval()
    model[1].train()
    with pytest.raises(AssertionError, match="modules in training mode: 1"):
        fuse_bn(model)


class PostActBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + bn_s(conv_s(x)))."""

    def __init__(self, c_in, c_out, declare=False):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), BatchNorm2d(c_out)
        self.conv2, self.bn2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), BatchNorm2d(c_out)
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), BatchNorm2d(c_out))
        if declare:
            self.fuse_pairs = (("conv1", "bn1"), ("conv2", "bn2"))

    def forward(self, x):
        y = self.bn1(self.conv1(x)).relu()
        return (self.bn2(self.conv2(y)) + self.shortcut(x)).relu()


class PreActBlock(nn.Module):
    """conv2(relu(bn2(conv1(relu(bn1(x)))))) + x: bn1 normalizes the block input, not a conv's."""

    def __init__(self, c):
        super().__init__()
        self.bn1, self.conv1 = BatchNorm2d(c), nn.Conv2d(c, c, 3, padding=1)
        self.bn2, self.conv2 = BatchNorm2d(c), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        y = self.conv1(self.bn1(x).relu())
        return self.conv2(self.bn2(y).relu()) + x


class SharedOutput(nn.Module):
    """The conv output feeds the BN and also the residual sum: folding would change the sum."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(2, 2, 1), BatchNorm2d(2)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def names_of(model, cls):
    return sorted(name for name, m in model.named_modules() if type(m) is cls)


def test_fuse_bn_traces_post_activation_blocks():
    model = randomize(nn.Sequential(PostActBlock(3, 4), PostActBlock(4, 4))).double().eval()
    x = x_for((2, 3, 5, 5))
    # without an input only the shortcut Sequentials' BNs are known to follow their convs
    assert names_of(fuse_bn(model), BatchNorm2d) == ["0.bn1", "0.bn2", "1.bn1", "1.bn2"]
    fused = fuse_bn(model, x)
    assert names_of(fused, BatchNorm2d) == []
    assert len(names_of(fused, nn.Identity)) == 6
    check_fused(model, fused, x_for((2, 3, 5, 5), seed=7))


def test_fuse_bn_uses_declared_pairs_without_an_input():
    model = randomize(nn.Sequential(PostActBlock(3, 4, declare=True),
                                   PostActBlock(4, 4, declare=True))).double().eval()
    fused = fuse_bn(model)
    assert names_of(fused, BatchNorm2d) == []
    check_fused(model, fused, x_for((2, 3, 5, 5)))
    bad = PostActBlock(3, 4)
    bad.fuse_pairs = (("conv1", "bn9"),)
    with pytest.raises(ValueError, match=r"PostActBlock.fuse_pairs names \('conv1', 'bn9'\)"):
        fuse_bn(bad.eval())
    bad.fuse_pairs = (("shortcut", "bn1"),)
    with pytest.raises(ValueError, match="cannot follow it"):
        fuse_bn(bad.eval())


def test_fuse_bn_pre_activation_block_folds_only_conv_outputs():
    model = randomize(nn.Sequential(PreActBlock(3), PreActBlock(3))).double().eval()
    x = x_for((2, 3, 4, 4))
    fused = fuse_bn(model, x)
    assert names_of(fused, BatchNorm2d) == ["0.bn1", "1.bn1"]
    assert names_of(fused, nn.Identity) == ["0.bn2", "1.bn2"]
    check_fused(model, fused, x_for((2, 3, 4, 4), seed=3))


def test_fuse_bn_leaves_shared_outputs_and_shared_modules_alone():
    model = randomize(SharedOutput()).double().eval()
    x = x_for((2, 2, 3, 3))
    assert names_of(fuse_bn(model, x), BatchNorm2d) == ["bn"]
    conv = nn.Conv2d(2, 2, 1)
    shared = randomize(nn.Sequential(conv, BatchNorm2d(2), conv)).double().eval()  # one conv, used twice
    assert names_of(fuse_bn(shared), BatchNorm2d) == ["1"]
    assert names_of(fuse_bn(shared, x), BatchNorm2d) == ["1"]
    check_fused(shared, fuse_bn(shared, x), x)


def test_fuse_bn_whole_network_float32():
    model = randomize(nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), BatchNorm2d(4), nn.ReLU(),
        nn.Sequential(PostActBlock(4, 4), PreActBlock(4)),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3), BatchNorm1d(3))).float().eval()
    x = x_for((4, 3, 6, 6), np.float32)
    fused = fuse_bn(model, x)
    assert names_of(fused, BatchNorm2d) == ["3.1.bn1"]
    assert names_of(fused, BatchNorm1d) == []
    check_fused(model, fused, x_for((4, 3, 6, 6), np.float32, seed=5), np.float32)
    assert fused[0].weight.dtype == np.float32
