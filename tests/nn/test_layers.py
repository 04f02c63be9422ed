"""Layers: PyTorch parity of outputs, input and parameter gradients (torch weights copied in),
gradcheck + gradgradcheck in float64, PyTorch's default initialisation, construction errors.

Conv and pooling layers call tinygrad_bn/ops/conv.py and ops/pool.py; their tests fail with an
ImportError until those files exist."""
import math

import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.nn as nn
import tinygrad_bn.nn.functional as F
from tests.helpers import check_grads, needs_torch, torch
from tests.nn.parity import check_module

tnn = torch.nn


# ---- Linear -----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4), (4,)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_parity(device, shape, bias):
    check_module(nn.Linear(4, 3, bias=bias), tnn.Linear(4, 3, bias=bias), shape, device=device)


def test_linear_parity_float32(device):
    check_module(nn.Linear(6, 5), tnn.Linear(6, 5), (4, 6), device=device, dtype=np.float32,
                 atol=1e-5, rtol=1e-4)


def test_linear_grads(device):
    check_grads(lambda x, w, b: F.linear(x, w, b), [(2, 3), (4, 3), (4,)], device=device)
    check_grads(lambda x, w: F.linear(x, w), [(2, 2, 3), (2, 3)], device=device)


# ---- convolution (needs ops/conv.py) ----------------------------------------------------------
CONV2D_CASES = [
    dict(),
    dict(stride=2, padding=1),
    dict(padding=(1, 2), dilation=2, bias=False),
    dict(groups=2, stride=(2, 1)),
    dict(padding="same"),
    dict(padding="valid"),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # PyTorch's own note
@pytest.mark.parametrize("kw", CONV2D_CASES, ids=str)
def test_conv2d_parity(device, kw):
    k = (2, 3) if kw.get("padding") == "same" else 3  # an even kernel needs asymmetric padding
    check_module(nn.Conv2d(4, 6, k, **kw), tnn.Conv2d(4, 6, k, **kw), (2, 4, 7, 6), device=device)


def test_conv2d_unbatched(device):
    check_module(nn.Conv2d(2, 3, 3), tnn.Conv2d(2, 3, 3), (2, 5, 5), device=device)


@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1, dilation=2), dict(groups=2, bias=False)],
                         ids=str)
def test_conv1d_parity(device, kw):
    check_module(nn.Conv1d(4, 6, 3, **kw), tnn.Conv1d(4, 6, 3, **kw), (2, 4, 9), device=device)


@needs_torch
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("kw", [dict(padding=1), dict(padding=(2, 1), stride=2), dict(padding="same", dilation=2),
                                dict(padding="valid")], ids=str)
def test_conv_padding_modes_match_torch(device, mode, kw):
    k = (2, 3) if kw.get("padding") == "same" else 3
    check_module(nn.Conv2d(2, 3, k, padding_mode=mode, **kw), tnn.Conv2d(2, 3, k, padding_mode=mode, **kw),
                 (2, 2, 7, 6), device=device)
    kw1 = {key: v[0] if isinstance(v, tuple) else v for key, v in kw.items()}
    check_module(nn.Conv1d(2, 3, 3, padding_mode=mode, **kw1), tnn.Conv1d(2, 3, 3, padding_mode=mode, **kw1),
                 (2, 2, 7), device=device)


def test_conv2d_grads(device):
    check_grads(lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), [(1, 2, 4, 4), (2, 2, 3, 3), (2,)],
                device=device)


def test_conv1d_grads(device):
    check_grads(lambda x, w, b: F.conv1d(x, w, b, padding=1), [(1, 2, 5), (2, 2, 3), (2,)], device=device)


# ---- pooling (needs ops/pool.py) --------------------------------------------------------------
@pytest.mark.parametrize("ours, theirs", [
    (lambda: nn.MaxPool2d(2), lambda: tnn.MaxPool2d(2)),
    (lambda: nn.MaxPool2d(3, stride=2, padding=1), lambda: tnn.MaxPool2d(3, stride=2, padding=1)),
    (lambda: nn.MaxPool2d(2, ceil_mode=True), lambda: tnn.MaxPool2d(2, ceil_mode=True)),
    (lambda: nn.AvgPool2d(2), lambda: tnn.AvgPool2d(2)),
    (lambda: nn.AvgPool2d(3, 2, 1, count_include_pad=False),
     lambda: tnn.AvgPool2d(3, 2, 1, count_include_pad=False)),
    (lambda: nn.AdaptiveAvgPool2d(1), lambda: tnn.AdaptiveAvgPool2d(1)),
    (lambda: nn.AdaptiveAvgPool2d((2, 3)), lambda: tnn.AdaptiveAvgPool2d((2, 3))),
], ids=["max2", "max3s2p1", "max_ceil", "avg2", "avg_nopad", "adaptive1", "adaptive2x3"])
def test_pool_parity(device, ours, theirs):
    check_module(ours(), theirs(), (2, 3, 7, 6), device=device)


@pytest.mark.parametrize("module", [lambda: nn.MaxPool2d(2), lambda: nn.AvgPool2d(2, padding=1),
                                    lambda: nn.AdaptiveAvgPool2d(2)], ids=["max", "avg", "adaptive"])
def test_pool_grads(device, module):
    check_grads(module(), [(1, 2, 4, 4)], device=device)


# ---- parameter-free layers --------------------------------------------------------------------
SIMPLE = [
    (lambda: nn.ReLU(), lambda: tnn.ReLU()),
    (lambda: nn.LeakyReLU(), lambda: tnn.LeakyReLU()),
    (lambda: nn.LeakyReLU(0.3), lambda: tnn.LeakyReLU(0.3)),
    (lambda: nn.Sigmoid(), lambda: tnn.Sigmoid()),
    (lambda: nn.Tanh(), lambda: tnn.Tanh()),
    (lambda: nn.Softmax(dim=1), lambda: tnn.Softmax(dim=1)),
    (lambda: nn.LogSoftmax(dim=-1), lambda: tnn.LogSoftmax(dim=-1)),
    (lambda: nn.Flatten(), lambda: tnn.Flatten()),
    (lambda: nn.Flatten(0, 1), lambda: tnn.Flatten(0, 1)),
    (lambda: nn.Identity(54, unused=True), lambda: tnn.Identity(54, unused=True)),
    (lambda: nn.Dropout(0.5).eval(), lambda: tnn.Dropout(0.5).eval()),
    (lambda: nn.Dropout2d(0.5).eval(), lambda: tnn.Dropout2d(0.5).eval()),
]
SIMPLE_IDS = ["relu", "leaky", "leaky0.3", "sigmoid", "tanh", "softmax", "log_softmax", "flatten",
              "flatten01", "identity", "dropout_eval", "dropout2d_eval"]


@pytest.mark.parametrize("ours, theirs", SIMPLE, ids=SIMPLE_IDS)
def test_simple_layer_parity(device, ours, theirs):
    check_module(ours(), theirs(), (2, 3, 2, 2), device=device)
    assert repr(ours()) == repr(theirs())


@pytest.mark.parametrize("ours", [s[0] for s in SIMPLE], ids=SIMPLE_IDS)
def test_simple_layer_grads(device, ours):
    check_grads(ours(), [(2, 3, 1, 2)], device=device)


def test_relu_inplace():
    x = tg.tensor([-1.0, 2.0], requires_grad=True)
    h = x * 1
    assert nn.ReLU(inplace=True)(h) is h
    h.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 1.0])
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        nn.ReLU(inplace=True)(x)


def test_dropout_module_train_vs_eval(device):
    drop = nn.Dropout(0.5)
    x = tg.ones(4, 100, device=device)
    y = drop(x).numpy()
    assert set(np.unique(y)) == {0.0, 2.0}
    assert drop.eval()(x) is x
    assert nn.Dropout2d(0.5).eval()(x.reshape(4, 100, 1, 1)).shape == (4, 100, 1, 1)


# ---- loss modules -----------------------------------------------------------------------------
@needs_torch
def test_loss_modules(device):
    w = np.array([1.0, 2.0, 0.5])
    ours = nn.CrossEntropyLoss(weight=tg.tensor(w), ignore_index=1, label_smoothing=0.1).to(device)
    theirs = tnn.CrossEntropyLoss(weight=torch.tensor(w), ignore_index=1, label_smoothing=0.1)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    assert ours.weight.device == device
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((4, 3)), np.array([0, 1, 2, 2])
    np.testing.assert_allclose(ours(tg.tensor(x, device=device), tg.tensor(t, device=device)).item(),
                               theirs(torch.tensor(x), torch.tensor(t)).item(), rtol=1e-6)
    nll = nn.NLLLoss(reduction="sum")
    np.testing.assert_allclose(nll(tg.tensor(x), tg.tensor(t)).item(),
                               tnn.NLLLoss(reduction="sum")(torch.tensor(x), torch.tensor(t)).item())
    mse = nn.MSELoss(reduction="none")
    np.testing.assert_allclose(mse(tg.tensor(x), tg.zeros(4, 3, dtype=tg.float64)).numpy(), x ** 2)
    assert repr(ours) == repr(theirs) == "CrossEntropyLoss()"
    with pytest.raises(ValueError, match="MSELoss: 'avg' is not a valid value for reduction"):
        nn.MSELoss(reduction="avg")
    with pytest.warns(UserWarning, match="size_average and reduce"):
        assert nn.MSELoss(size_average=False).reduction == "sum"


# ---- PyTorch's default initialisation ---------------------------------------------------------
def _bound_and_std(t):
    a = t.detach().numpy().ravel()
    return np.abs(a).max(), a.std()


@pytest.mark.parametrize("make, fan_in", [
    (lambda device: nn.Linear(60, 50, device=device), 60),
    (lambda device: nn.Conv2d(8, 40, 3, device=device), 72),
    (lambda device: nn.Conv2d(8, 40, (1, 3), groups=4, device=device), 6),
    (lambda device: nn.Conv1d(6, 30, 5, device=device), 30),
], ids=["linear", "conv2d", "conv2d_groups", "conv1d"])
def test_default_init_has_pytorch_bounds(device, make, fan_in):
    """kaiming_uniform(a=sqrt(5)) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the bias the same."""
    layer = make(device)
    bound = 1 / math.sqrt(fan_in)
    w_max, w_std = _bound_and_std(layer.weight)
    assert w_max <= bound and w_max > 0.95 * bound
    assert abs(w_std - bound / math.sqrt(3)) < 0.08 * bound  # the std of U(-b, b) is b/sqrt(3)
    b_max, _ = _bound_and_std(layer.bias)
    assert b_max <= bound
    assert layer.weight.device == device and layer.weight.dtype == np.float32


@needs_torch
def test_default_init_matches_torch_statistics():
    torch.manual_seed(0)
    for ours, theirs in [(nn.Linear(300, 200), tnn.Linear(300, 200)),
                         (nn.Conv2d(16, 64, 3), tnn.Conv2d(16, 64, 3))]:
        assert ours.weight.shape == tuple(theirs.weight.shape)
        o_max, o_std = _bound_and_std(ours.weight)
        t_max, t_std = theirs.weight.detach().abs().max().item(), theirs.weight.detach().std().item()
        assert abs(o_max - t_max) < 0.01 * t_max and abs(o_std - t_std) < 0.02 * t_std


def test_init_is_reproducible_with_manual_seed(device):
    tg.manual_seed(5)
    a = nn.Linear(3, 3, device=device).weight.detach().numpy()
    tg.manual_seed(5)
    b = nn.Linear(3, 3, device=device).weight.detach().numpy()
    np.testing.assert_array_equal(a, b)


def test_dtype_argument():
    layer = nn.Conv2d(1, 2, 3, dtype=tg.float64)
    assert layer.weight.dtype == np.float64 and layer.bias.dtype == np.float64


# ---- errors, raised where the mistake is made ---------------------------------------------------
def test_linear_errors():
    with pytest.raises(RuntimeError, match=r"Linear\(in_features=4, .*expected input with last "
                                           r"dimension 4, got input of shape \[2, 3\]"):
        nn.Linear(4, 2)(tg.randn(2, 3))
    with pytest.raises(ValueError, match="Linear: in_features must be a non-negative int"):
        nn.Linear(-1, 2)


def test_conv_construction_errors():
    with pytest.raises(ValueError, match=r"Conv2d: in_channels \(3\) must be divisible by groups \(2\)"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match=r"out_channels \(5\) must be divisible by groups \(2\)"):
        nn.Conv2d(4, 5, 3, groups=2)
    with pytest.raises(ValueError, match="groups must be a positive integer"):
        nn.Conv2d(4, 4, 3, groups=0)
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        nn.Conv2d(1, 1, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match="Invalid padding string 'full'"):
        nn.Conv2d(1, 1, 3, padding="full")
    with pytest.raises(ValueError, match="padding='same' is not supported for strided convolutions"):
        nn.Conv2d(1, 1, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match=r"kernel_size must be an int or a tuple of 2 ints"):
        nn.Conv2d(1, 1, (3, 3, 3))


def test_conv_input_errors():
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(RuntimeError, match=r"Conv2d\(3, 4, .*expected input of shape \(N, 3, H, W\) "
                                           r"or \(3, H, W\), got \[1, 2, 5, 5\]"):
        conv(tg.randn(1, 2, 5, 5))
    with pytest.raises(RuntimeError, match=r"got \[5, 5\]"):
        conv(tg.randn(5, 5))


@needs_torch
def test_max_pool_return_indices(device):
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 6))
    values, indices = nn.MaxPool2d(2, return_indices=True)(tg.tensor(x, device=device))
    t_values, t_indices = tnn.MaxPool2d(2, return_indices=True)(torch.tensor(x))
    np.testing.assert_array_equal(values.numpy(), t_values.numpy())
    np.testing.assert_array_equal(indices.numpy(), t_indices.numpy())


@needs_torch
def test_avg_pool_divisor_override_matches_torch(device):
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 6))
    ours = nn.AvgPool2d(3, 2, 1, divisor_override=4)(tg.tensor(x, device=device))
    np.testing.assert_allclose(ours.numpy(), tnn.AvgPool2d(3, 2, 1, divisor_override=4)(torch.tensor(x)).numpy(),
                               atol=1e-12)


def test_dropout_module_bad_p():
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got 1.5"):
        nn.Dropout(1.5)
    with pytest.raises(ValueError, match="but got -1"):
        nn.Dropout2d(-1)
