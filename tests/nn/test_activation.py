"""The activation modules (tinygrad_bn/nn/activation.py): each is its functional form with
PyTorch's constructor arguments, defaults and repr; PReLU's learnable slope matches PyTorch's
module, gradient included."""
import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.nn as nn
import tinygrad_bn.nn.functional as F
from tests.helpers import needs_torch, torch

MODULES = [
    (lambda: nn.GELU(), lambda x: F.gelu(x), "GELU(approximate='none')"),
    (lambda: nn.GELU("tanh"), lambda x: F.gelu(x, approximate="tanh"), "GELU(approximate='tanh')"),
    (lambda: nn.SiLU(), F.silu, "SiLU()"),
    (lambda: nn.ELU(alpha=0.5), lambda x: F.elu(x, 0.5), "ELU(alpha=0.5)"),
    (lambda: nn.Hardtanh(-2.0, 3.0), lambda x: F.hardtanh(x, -2.0, 3.0), "Hardtanh(min_val=-2.0, max_val=3.0)"),
    (lambda: nn.ReLU6(), F.relu6, "ReLU6()"),
]


@pytest.mark.parametrize("make, functional, text", MODULES, ids=[m[2] for m in MODULES])
def test_module_is_its_functional_form(make, functional, text):
    x = tg.randn(3, 4) * 4
    module = make()
    np.testing.assert_array_equal(module(x).numpy(), functional(x).numpy())
    assert repr(module) == text
    assert list(module.parameters()) == []


@needs_torch
@pytest.mark.parametrize("name, args", [("GELU", ()), ("GELU", ("tanh",)), ("SiLU", ()), ("ELU", (0.3,)),
                                        ("Hardtanh", (-0.5, 0.5)), ("ReLU6", ())])
def test_module_repr_and_output_match_torch(name, args):
    x = np.random.default_rng(0).standard_normal((2, 5)) * 4
    ours, theirs = getattr(nn, name)(*args), getattr(torch.nn, name)(*args)
    np.testing.assert_allclose(ours(tg.tensor(x)).numpy(), theirs(torch.tensor(x)).numpy(), rtol=1e-12, atol=1e-15)
    assert repr(ours) == repr(theirs)


@needs_torch
@pytest.mark.parametrize("num_parameters", [1, 3])
def test_prelu_module_matches_torch(num_parameters):
    x = np.random.default_rng(1).standard_normal((2, 3, 4))
    ours, theirs = nn.PReLU(num_parameters, init=0.1).double(), torch.nn.PReLU(num_parameters, init=0.1).double()
    assert repr(ours) == repr(theirs)
    xo, xt = tg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    ours(xo).sum().backward()
    theirs(xt).sum().backward()
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(xo.grad.numpy(), xt.grad.numpy(), rtol=1e-12)


def test_prelu_module_defaults_and_state_dict():
    m = nn.PReLU()
    assert m.weight.shape == (1,) and float(m.weight.detach().numpy()[0]) == 0.25
    assert list(m.state_dict()) == ["weight"]


@pytest.mark.parametrize("make, exc, pattern", [
    (lambda: nn.PReLU(-1), RuntimeError, r"PReLU: num_parameters must be non-negative"),
    (lambda: nn.PReLU(1.5), TypeError, r"PReLU: num_parameters must be an int"),
    (lambda: nn.PReLU(3)(tg.ones(2, 4)), RuntimeError, r"prelu: Mismatch of parameter numbers and input channel size"),
    (lambda: nn.Hardtanh(1.0, -1.0), AssertionError, r"Hardtanh: max_val \(-1.0\) must be greater than min_val \(1.0\)"),
    (lambda: nn.GELU("erf")(tg.ones(2)), RuntimeError, r"gelu: approximate argument must be either none or tanh"),
])
def test_module_bad_arguments(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()
