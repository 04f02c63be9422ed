"""tinygrad_bn.nn.utils.parametrize and .parametrizations (weight_norm, spectral_norm) against
torch.nn.utils.parametrize / parametrizations: state_dict keys, parameter and buffer names, repr,
outputs and gradients with the weights (and u, v) copied across, u and v after training steps,
eval without iteration, the registration warm start, dim rules, errors, and the mechanism itself
(class swap, right_inverse on assignment, chaining, unsafe, buffers, removal, deepcopy, pickle,
caching, optimizers, old-checkpoint loading)."""
import copy
import pickle
import warnings

import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.nn as nn
from tinygrad_bn.autograd import gradcheck, gradgradcheck
from tinygrad_bn.nn.utils import parametrize as P
from tinygrad_bn.nn.utils.parametrizations import spectral_norm, weight_norm
from tests.helpers import assert_close, needs_torch, torch
from tests.nn.parity import check_module, load_from_torch

tnn = torch.nn
tP = torch.nn.utils.parametrizations

LAYERS = {
    "Linear": (lambda m: m.Linear(3, 4), (5, 3)),
    "Linear-no-bias": (lambda m: m.Linear(3, 4, bias=False), (5, 3)),
    "Conv2d": (lambda m: m.Conv2d(2, 3, 3, padding=1), (2, 2, 4, 4)),
    "Conv1d-groups": (lambda m: m.Conv1d(4, 2, 3, groups=2), (2, 4, 5)),
}


def ours_and_theirs(layer, apply_ours, apply_theirs):
    make, shape = LAYERS[layer]
    # float64 on both sides before any copying (loading casts to the receiving dtype)
    return apply_ours(make(nn)).double(), apply_theirs(make(tnn).double()), shape


# ---- names, keys, repr ----------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("layer", list(LAYERS))
@pytest.mark.parametrize("which", ["weight_norm", "spectral_norm"])
def test_keys_names_shapes_and_repr_match_torch(layer, which):
    ours, theirs, _ = ours_and_theirs(layer, globals()[which], getattr(tP, which))
    assert type(ours).__name__ == type(theirs).__name__  # ParametrizedLinear
    assert repr(ours) == repr(theirs)
    ours_state, their_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(their_state)
    for key in ours_state:
        assert ours_state[key].shape == tuple(their_state[key].shape), key
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert isinstance(ours, getattr(nn, layer.split("-")[0]))


def test_spec_key_names():
    assert list(weight_norm(nn.Linear(2, 3)).state_dict()) == [
        "bias", "parametrizations.weight.original0", "parametrizations.weight.original1"]
    assert list(spectral_norm(nn.Linear(2, 3)).state_dict()) == [
        "bias", "parametrizations.weight.original", "parametrizations.weight.0._u",
        "parametrizations.weight.0._v"]


# ---- weight_norm ------------------------------------------------------------------------------------
WN_CASES = [("Conv2d", d) for d in (0, 1, 2, -1, -2, None)] + \
           [("Linear", d) for d in (0, 1, -1, None)] + [("Conv1d-groups", 0), ("Linear-no-bias", 0)]


@needs_torch
@pytest.mark.parametrize("layer,dim", WN_CASES)
def test_weight_norm_matches_torch(layer, dim, device):
    ours, theirs, shape = ours_and_theirs(layer, lambda m: weight_norm(m, dim=dim),
                                          lambda m: tP.weight_norm(m, dim=dim))
    with torch.no_grad():  # g away from ||v|| so that the test sees g and v separately
        theirs.parametrizations.weight.original0.mul_(1.7)
    out = check_module(ours, theirs, shape, device=device, atol=1e-12, rtol=1e-10)
    assert out.grad_fn is not None
    assert_close(ours.weight, theirs.weight, atol=1e-12)


@pytest.mark.parametrize("shape,dim,g_shape", [
    ((4, 3, 2, 2), 0, (4, 1, 1, 1)), ((4, 3, 2, 2), 1, (1, 3, 1, 1)), ((4, 3, 2, 2), -2, (1, 1, 2, 1)),
    ((4, 3, 2, 2), -1, ()), ((4, 3, 2, 2), None, ()), ((4, 3), 0, (4, 1)), ((4, 3), -1, ())])
def test_weight_norm_g_shape_and_start(shape, dim, g_shape):
    """dim=-1 means the whole tensor (not the last axis), like dim=None; the weight is unchanged."""
    layer = nn.Conv2d(3, 4, 2) if len(shape) == 4 else nn.Linear(3, 4)
    w = layer.weight.detach().numpy().copy()
    weight_norm(layer, dim=dim)
    g = layer.parametrizations.weight.original0
    v = layer.parametrizations.weight.original1
    assert g.shape == g_shape and v.shape == shape
    assert isinstance(g, nn.Parameter) and isinstance(v, nn.Parameter)
    axes = None if dim in (None, -1) else tuple(i for i in range(len(shape)) if i != dim % len(shape))
    assert_close(g, np.sqrt((w * w).sum(axis=axes, keepdims=axes is not None)).reshape(g_shape), atol=1e-6)
    np.testing.assert_array_equal(v.detach().numpy(), w)
    assert_close(layer.weight, w, atol=1e-6)
    assert layer.weight.grad_fn.name == "WeightNormBackward"


def test_weight_norm_double_backward_through_the_module():
    layer = weight_norm(nn.Linear(3, 2)).double()
    plist = layer.parametrizations.weight
    rng = np.random.default_rng(0)

    def fn(x, g, v, b):
        saved = dict(plist._parameters), layer._parameters["bias"]
        plist._parameters.update(original0=g, original1=v)
        layer._parameters["bias"] = b
        try:
            return layer(x)
        finally:
            plist._parameters.update(saved[0])
            layer._parameters["bias"] = saved[1]

    inputs = [tg.tensor(rng.standard_normal((4, 3)), requires_grad=True)]
    inputs += [tg.tensor(p.data.copy() * 1.3, requires_grad=True)
               for p in (plist.original0, plist.original1, layer.bias)]
    assert gradcheck(fn, inputs)
    assert gradgradcheck(fn, inputs)


@needs_torch
def test_weight_norm_sgd_steps_match_torch():
    from tinygrad_bn.optim import SGD
    ours, theirs, shape = ours_and_theirs("Conv2d", weight_norm, tP.weight_norm)
    load_from_torch(ours, theirs)
    opt, topt = SGD(ours.parameters(), lr=0.1, momentum=0.9), torch.optim.SGD(theirs.parameters(), lr=0.1,
                                                                              momentum=0.9)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.standard_normal(shape)
        loss, tloss = (ours(tg.tensor(x)) ** 2).sum(), (theirs(torch.tensor(x)) ** 2).sum()
        opt.zero_grad(), topt.zero_grad()
        loss.backward(), tloss.backward()
        opt.step(), topt.step()
    for (name, p), tp in zip(ours.named_parameters(), theirs.parameters()):
        assert_close(p, tp, atol=1e-10, what=name)


def test_weight_norm_errors():
    with pytest.raises(ValueError, match="has no parameter or buffer with name 'kernel'"):
        weight_norm(nn.Linear(2, 3), name="kernel")
    with pytest.raises(IndexError, match=r"expected to be in range of \[-2, 1\], but got 2"):
        weight_norm(nn.Linear(2, 3), dim=2)


@needs_torch
def test_old_weight_norm_checkpoint_loads_into_the_parametrization():
    """As PyTorch's load hook does: weight_g / weight_v become original0 / original1."""
    old = torch.nn.Linear(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.nn.utils.weight_norm(old)
    state = {k: v.detach().numpy() for k, v in old.state_dict().items()}
    assert sorted(state) == ["bias", "weight_g", "weight_v"]
    ours = weight_norm(nn.Linear(3, 4))
    ours.load_state_dict(state)
    assert_close(ours.parametrizations.weight.original0, state["weight_g"], atol=0)
    assert_close(ours.weight, old.weight, atol=1e-6)
    nested = nn.Sequential(weight_norm(nn.Linear(3, 4)))  # the hook works under a prefix too
    nested.load_state_dict({"0." + k: v for k, v in state.items()})
    assert_close(nested[0].weight, old.weight, atol=1e-6)


# ---- spectral_norm -----------------------------------------------------------------------------------
SN_CASES = [("Linear", 0, 1), ("Linear", 1, 1), ("Linear", -1, 2), ("Linear", None, 3),
            ("Conv2d", 0, 1), ("Conv2d", 1, 1), ("Conv2d", -1, 1), ("Conv1d-groups", None, 2)]


@needs_torch
@pytest.mark.parametrize("layer,dim,n", SN_CASES)
def test_spectral_norm_training_steps_then_eval_match_torch(layer, dim, n, device):
    """u, v copied from PyTorch; every training step must agree on the output, the gradients of
    the original weight and bias, and u, v after the in-place power iteration; eval must agree
    and leave u, v alone."""
    ours, theirs, shape = ours_and_theirs(
        layer, lambda m: spectral_norm(m, n_power_iterations=n, dim=dim),
        lambda m: tP.spectral_norm(m, n_power_iterations=n, dim=dim))
    load_from_torch(ours, theirs).to(device)
    rng = np.random.default_rng(0)
    tol = dict(atol=1e-11, rtol=1e-9)
    for step in range(5):
        x = rng.standard_normal(shape)
        xt = torch.tensor(x, requires_grad=True)
        y, yt = ours(tg.tensor(x, device=device)), theirs(xt)
        assert_close(y, yt, **tol, what=f"output at step {step}")
        g = rng.standard_normal(yt.shape)
        y.backward(tg.tensor(g, device=device))
        yt.backward(torch.tensor(g))
        for (name, p), tp in zip(ours.named_parameters(), theirs.parameters()):
            assert_close(p.grad, tp.grad, **tol, what=f"gradient of {name} at step {step}")
            p.grad, tp.grad = None, None
        for (name, b), tb in zip(ours.named_buffers(), theirs.buffers()):
            assert_close(b, tb, **tol, what=f"{name} after step {step}")
    ours.eval(), theirs.eval()
    u = ours.parametrizations.weight[0]._u.detach().numpy().copy()
    x = rng.standard_normal(shape)
    assert_close(ours(tg.tensor(x, device=device)), theirs(torch.tensor(x)), **tol, what="eval output")
    assert_close(ours.weight, theirs.weight, **tol, what="eval weight")
    np.testing.assert_array_equal(ours.parametrizations.weight[0]._u.detach().numpy(), u)


def replay_registration(w, dim, iterations, draw):
    mat = np.moveaxis(w, dim, 0).reshape(w.shape[dim], -1)

    def normalize(a):
        return a / max(np.linalg.norm(a), 1e-12)
    u, v = normalize(draw(mat.shape[0])), normalize(draw(mat.shape[1]))
    for _ in range(iterations):
        u = normalize(mat @ v)
        v = normalize(mat.T @ u)
    return u, v


@pytest.mark.parametrize("training,iterations", [(True, 16), (False, 15)])
def test_spectral_norm_registration_warm_start(training, iterations):
    """15 iterations in _SpectralNorm's constructor, plus one more in training mode: registration
    reads the parametrized tensor once to check its shape (that is also what PyTorch does)."""
    layer = nn.Linear(3, 4).double().train(training)
    w = layer.weight.detach().numpy().copy()
    tg.manual_seed(5)
    u, v = replay_registration(w, 0, iterations, lambda n: tg.randn(n, dtype=tg.float64).numpy())
    tg.manual_seed(5)
    spectral_norm(layer)
    assert_close(layer.parametrizations.weight[0]._u, u, atol=1e-14)
    assert_close(layer.parametrizations.weight[0]._v, v, atol=1e-14)


@needs_torch
@pytest.mark.parametrize("training,iterations", [(True, 16), (False, 15)])
def test_torch_registration_does_the_same_number_of_iterations(training, iterations):
    """The claim above, checked on PyTorch itself by replaying its generator."""
    layer = torch.nn.Linear(3, 4).double().train(training)
    w = layer.weight.detach().numpy().copy()
    torch.manual_seed(5)
    u, v = replay_registration(w, 0, iterations,
                               lambda n: torch.empty(n, dtype=torch.float64).normal_(0, 1).numpy())
    torch.manual_seed(5)
    tP.spectral_norm(layer)
    assert_close(layer.parametrizations.weight[0]._u, u, atol=1e-14)


class ConvTranspose2d(nn.Module):
    """A minimal transposed convolution (tinygrad_bn.nn has none yet): weight (in, out, k, k)."""

    def __init__(self, c_in, c_out, k):
        super().__init__()
        self.weight = nn.Parameter(tg.randn(c_in, c_out, k, k))

    def forward(self, x):
        from tinygrad_bn.ops.conv import conv_transpose2d
        return conv_transpose2d(x, self.weight)


class Transposed(nn.Module):
    transposed = True  # any module that declares a transposed weight layout

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(tg.randn(3, 5))


@pytest.mark.parametrize("make,dim,u_len", [
    (lambda: nn.Linear(3, 4), None, 4), (lambda: nn.Linear(3, 4), -1, 3),
    (lambda: nn.Conv2d(2, 6, 3), None, 6), (lambda: ConvTranspose2d(3, 5, 2), None, 5),
    (lambda: ConvTranspose2d(3, 5, 2), 0, 3), (lambda: Transposed(), None, 5)])
def test_spectral_norm_dim_rules(make, dim, u_len):
    layer = spectral_norm(make(), dim=dim)
    assert layer.parametrizations.weight[0]._u.shape == (u_len,)


@needs_torch
def test_spectral_norm_conv_transpose_matches_torch():
    ours = spectral_norm(ConvTranspose2d(3, 5, 2)).double()
    theirs = tP.spectral_norm(torch.nn.ConvTranspose2d(3, 5, 2, bias=False)).double()
    assert theirs.parametrizations.weight[0].dim == 1
    load_from_torch(ours, theirs)
    x = np.random.default_rng(0).standard_normal((2, 3, 3, 3))
    assert_close(ours(tg.tensor(x)), theirs(torch.tensor(x)), atol=1e-12)


@needs_torch
def test_spectral_norm_on_a_vector_matches_torch():
    ours, theirs = nn.Linear(3, 4).double(), torch.nn.Linear(3, 4).double()
    spectral_norm(ours, name="bias"), tP.spectral_norm(theirs, name="bias")
    assert list(ours.state_dict()) == list(theirs.state_dict()) == [
        "weight", "parametrizations.bias.original"]
    load_from_torch(ours, theirs)
    assert_close(ours.bias, theirs.bias, atol=1e-12)
    assert_close(ours.bias, ours.parametrizations.bias.original.detach().numpy()
                 / np.linalg.norm(ours.parametrizations.bias.original.detach().numpy()), atol=1e-12)


def test_spectral_norm_eval_sigma_is_from_stored_u_v():
    layer = spectral_norm(nn.Linear(5, 4), n_power_iterations=50).double()
    layer(tg.randn(2, 5, dtype=tg.float64))  # converge
    layer.eval()
    sn = layer.parametrizations.weight[0]
    w = layer.parametrizations.weight.original.detach().numpy()
    sigma = sn._u.numpy() @ w @ sn._v.numpy()
    assert_close(layer.weight, w / sigma, atol=1e-14)
    assert_close(sigma, np.linalg.svd(w, compute_uv=False)[0], atol=1e-10)
    assert_close(np.linalg.svd(layer.weight.detach().numpy(), compute_uv=False)[0], 1.0, atol=1e-10)


@needs_torch
@pytest.mark.parametrize("kwargs", [dict(n_power_iterations=0), dict(dim=2), dict(dim=-3),
                                    dict(name="kernel")])
def test_spectral_norm_errors_match_torch(kwargs):
    with pytest.raises((IndexError, ValueError)) as theirs:
        tP.spectral_norm(torch.nn.Linear(2, 3), **kwargs)
    with pytest.raises(theirs.type) as ours:
        spectral_norm(nn.Linear(2, 3), **kwargs)
    if "name" not in kwargs:  # that message embeds the module's repr
        assert str(ours.value) == str(theirs.value)
    else:
        assert "has no parameter or buffer with name 'kernel'" in str(ours.value)


@needs_torch
def test_spectral_norm_loads_torch_state_dict_with_u_v():
    theirs = tP.spectral_norm(torch.nn.Conv2d(2, 3, 2))
    ours = spectral_norm(nn.Conv2d(2, 3, 2))
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    ours.eval(), theirs.eval()
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 3)).astype(np.float32)
    assert_close(ours(tg.tensor(x)), theirs(torch.tensor(x)), atol=1e-6)


# ---- the mechanism ----------------------------------------------------------------------------------
class Double(nn.Module):
    def forward(self, x):
        return x * 2

    def right_inverse(self, x):
        return x / 2


class AddOne(nn.Module):
    def forward(self, x):
        return x + 1


class Transpose(nn.Module):
    def forward(self, x):
        return x.T


class Sum(nn.Module):
    """Two originals: weight = a + b; right_inverse splits w into (w, 0)."""

    def forward(self, a, b):
        return a + b

    def right_inverse(self, w):
        return w, tg.zeros_like(w)


def test_register_swaps_the_class_and_computes_on_access():
    layer = nn.Linear(3, 2)
    w = layer.weight.detach().numpy().copy()
    assert not P.is_parametrized(layer)
    P.register_parametrization(layer, "weight", Double())
    assert P.is_parametrized(layer) and P.is_parametrized(layer, "weight")
    assert not P.is_parametrized(layer, "bias")
    assert type(layer).__name__ == "ParametrizedLinear" and isinstance(layer, nn.Linear)
    assert P.type_before_parametrizations(layer) is nn.Linear
    assert "weight" not in layer._parameters
    assert_close(layer.parametrizations.weight.original, w / 2, atol=0)
    assert_close(layer.weight, w, atol=0)
    assert layer.weight is not layer.weight  # recomputed on every access
    x = tg.randn(4, 3)
    assert_close(layer(x), x.numpy() @ w.T + layer.bias.detach().numpy(), atol=1e-6)
    layer(x).sum().backward()
    assert layer.parametrizations.weight.original.grad is not None


def test_assignment_goes_through_right_inverse():
    layer = P.register_parametrization(nn.Linear(3, 2), "weight", Double())
    original = layer.parametrizations.weight.original
    layer.weight = tg.ones(2, 3)
    assert layer.parametrizations.weight.original is original  # same Parameter, new values
    assert_close(original, np.full((2, 3), 0.5), atol=0)
    assert_close(layer.weight, np.ones((2, 3)), atol=0)
    with pytest.raises(KeyError, match="attribute 'weight' already exists"):
        layer.weight = nn.Parameter(tg.ones(2, 3))
    P.register_parametrization(layer, "weight", AddOne())
    with pytest.raises(RuntimeError, match="parametrization AddOne does not implement right_inverse"):
        layer.weight = tg.ones(2, 3)


def test_chained_parametrizations_apply_in_order():
    layer = P.register_parametrization(nn.Linear(3, 2), "weight", Double())
    P.register_parametrization(layer, "weight", AddOne())
    assert len(layer.parametrizations.weight) == 2
    original = layer.parametrizations.weight.original.detach().numpy()
    assert_close(layer.weight, original * 2 + 1, atol=1e-7)
    assert list(layer.state_dict()) == ["bias", "parametrizations.weight.original"]


class BadInverse(nn.Module):
    def forward(self, x):
        return x

    def right_inverse(self, x):
        return x.T


def test_chaining_checks_the_new_right_inverse():
    layer = P.register_parametrization(nn.Linear(3, 2), "weight", Double())
    with pytest.raises(ValueError, match="right_inverse must have the same dtype and shape"):
        P.register_parametrization(layer, "weight", BadInverse())
    assert len(layer.parametrizations.weight) == 1
    P.register_parametrization(layer, "weight", BadInverse(), unsafe=True)
    assert len(layer.parametrizations.weight) == 2


def test_tuple_right_inverse_gives_original0_original1():
    layer = nn.Linear(3, 2)
    w = layer.weight.detach().numpy().copy()
    P.register_parametrization(layer, "weight", Sum())
    plist = layer.parametrizations.weight
    assert plist.ntensors == 2 and not plist.is_tensor
    assert isinstance(plist.original0, nn.Parameter) and isinstance(plist.original1, nn.Parameter)
    assert_close(layer.weight, w, atol=0)
    layer.weight = tg.full((2, 3), 3.0)
    assert_close(plist.original0, np.full((2, 3), 3.0), atol=0)
    with pytest.raises(ValueError, match="Cannot leave unparametrized"):
        P.remove_parametrizations(layer, "weight", leave_parametrized=False)


@needs_torch
def test_unsafe_and_checks_match_torch_messages():
    with pytest.raises(ValueError) as theirs:
        torch.nn.utils.parametrize.register_parametrization(torch.nn.Linear(3, 2), "weight",
                                                            TorchTranspose())
    with pytest.raises(ValueError) as ours:
        P.register_parametrization(nn.Linear(3, 2), "weight", Transpose())
    assert str(ours.value).splitlines()[0] == str(theirs.value).splitlines()[0]
    assert "unparametrized shape: [2, 3]" in str(ours.value)
    layer = P.register_parametrization(nn.Linear(3, 3), "weight", Transpose())  # square: fine
    layer = P.register_parametrization(nn.Linear(3, 2), "weight", Transpose(), unsafe=True)
    assert layer.weight.shape == (3, 2) and layer.parametrizations.weight.unsafe


class TorchTranspose(torch.nn.Module):
    def forward(self, x):
        return x.T


def test_buffers_can_be_parametrized():
    bn = nn.Linear(2, 2)
    bn.register_buffer("scale", tg.ones(2))
    P.register_parametrization(bn, "scale", Double())
    assert "parametrizations.scale.original" in bn.state_dict()
    assert not any(n.endswith("scale.original") for n, _ in bn.named_parameters())
    assert_close(bn.scale, np.ones(2), atol=0)
    P.remove_parametrizations(bn, "scale")
    assert "scale" in bn._buffers and list(bn.state_dict())[-1] == "scale"


@needs_torch
@pytest.mark.parametrize("leave", [True, False])
def test_remove_parametrizations_matches_torch(leave):
    ours, theirs = nn.Linear(3, 4).double(), torch.nn.Linear(3, 4).double()
    spectral_norm(ours), tP.spectral_norm(theirs)
    load_from_torch(ours, theirs)
    ours.eval(), theirs.eval()
    expected = (theirs.weight if leave else theirs.parametrizations.weight.original).detach().clone()
    P.remove_parametrizations(ours, "weight", leave_parametrized=leave)
    torch.nn.utils.parametrize.remove_parametrizations(theirs, "weight", leave_parametrized=leave)
    assert type(ours) is nn.Linear and not P.is_parametrized(ours)
    assert "parametrizations" not in ours._modules
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["bias", "weight"]
    assert isinstance(ours.weight, nn.Parameter)
    assert_close(ours.weight, expected, atol=1e-12)
    assert repr(ours) == repr(theirs)
    with pytest.raises(ValueError, match="does not have a parametrization on weight"):
        P.remove_parametrizations(ours, "weight")


def test_remove_one_of_two_parametrized_names():
    layer = P.register_parametrization(nn.Linear(3, 2), "weight", Double())
    P.register_parametrization(layer, "bias", Double())
    assert type(layer).__name__ == "ParametrizedLinear"
    P.remove_parametrizations(layer, "weight")
    assert P.is_parametrized(layer) and not P.is_parametrized(layer, "weight")
    assert isinstance(layer.weight, nn.Parameter)       # a plain parameter again
    assert layer.bias.grad_fn is not None                # still computed
    assert type(layer) is not nn.Linear
    P.remove_parametrizations(layer, "bias")
    assert type(layer) is nn.Linear


def test_remove_weight_norm_keeps_the_weight_value():
    layer = weight_norm(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="Cannot leave unparametrized"):
        P.remove_parametrizations(layer, "weight", leave_parametrized=False)
    w = layer.weight.detach().numpy().copy()
    P.remove_parametrizations(layer, "weight")
    assert list(layer.state_dict()) == ["bias", "weight"]
    assert_close(layer.weight, w, atol=0)


def test_deepcopy_is_independent_and_pickle_round_trips():
    layer = spectral_norm(weight_norm(nn.Linear(3, 2), name="bias"))
    clone = copy.deepcopy(layer)
    assert type(clone) is type(layer)
    x = tg.randn(4, 3)
    layer.eval(), clone.eval()
    assert_close(clone(x), layer(x), atol=0)
    P.remove_parametrizations(clone, "weight")     # changes the copy's class, not the original's
    assert P.is_parametrized(layer, "weight") and layer.weight.grad_fn is not None
    assert clone.parametrizations.bias.original0 is not layer.parametrizations.bias.original0
    restored = pickle.loads(pickle.dumps(layer))
    assert type(restored).__name__ == "ParametrizedLinear"
    assert_close(restored(x), layer(x), atol=0)
    assert list(restored.state_dict()) == list(layer.state_dict())


def test_cached_computes_once_per_block():
    layer = P.register_parametrization(nn.Linear(3, 2), "weight", Double())
    with P.cached():
        first = layer.weight
        assert layer.weight is first
        with P.cached():
            assert layer.weight is first
    assert layer.weight is not first


def test_registration_errors():
    with pytest.raises(ValueError, match="does not have a parameter, a buffer, or a parametrized "
                                         "element with name 'kernel'"):
        P.register_parametrization(nn.Linear(2, 2), "kernel", Double())
    with pytest.raises(ValueError, match="requires one or more modules"):
        P.ParametrizationList([], tg.ones(2))


def test_parametrization_follows_the_module_training_flag_and_device(device):
    layer = nn.Linear(3, 2).eval()
    spectral_norm(layer)
    assert not layer.parametrizations.weight[0].training
    layer.train().to(device)
    assert layer.parametrizations.weight[0].training
    assert layer.parametrizations.weight[0]._u.device == device
    y = layer(tg.randn(4, 3, device=device))
    assert y.device == device
