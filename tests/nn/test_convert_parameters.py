"""parameters_to_vector / vector_to_parameters (tinygrad_bn/nn/utils/convert_parameters.py)
against torch.nn.utils: the layout, the round trip, gradients through the vector, and errors."""
import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.nn as nn
from tests.helpers import needs_torch, torch
from tinygrad_bn.nn.utils import parameters_to_vector, vector_to_parameters


@needs_torch
def test_parameters_to_vector_matches_torch():
    ours, theirs = nn.Linear(3, 2), torch.nn.Linear(3, 2)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    vec, ref = parameters_to_vector(ours.parameters()), torch.nn.utils.parameters_to_vector(theirs.parameters())
    np.testing.assert_array_equal(vec.detach().numpy(), ref.detach().numpy())
    g = np.arange(8.0, dtype=np.float32)
    (vec * tg.tensor(g)).sum().backward()
    (ref * torch.tensor(g)).sum().backward()
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy(), err_msg=name)


@needs_torch
def test_vector_to_parameters_matches_torch():
    ours = [tg.zeros(2, 3, requires_grad=True), tg.zeros(4, dtype=tg.float64), tg.zeros(())]
    theirs = [torch.zeros(2, 3, requires_grad=True), torch.zeros(4, dtype=torch.float64), torch.zeros(())]
    vec = np.arange(12.0, dtype=np.float32)  # longer than needed: PyTorch ignores the tail
    vector_to_parameters(tg.tensor(vec), ours)
    torch.nn.utils.vector_to_parameters(torch.tensor(vec), theirs)
    for p, q in zip(ours, theirs):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())
        assert str(p.dtype) == str(q.dtype).replace("torch.", "")  # vec's dtype, as in PyTorch
    assert ours[0].requires_grad


def test_round_trip_and_copy_semantics(device):
    params = [tg.randn(3, 2, device=device), tg.randn(5, device=device)]
    vec = parameters_to_vector(params)
    assert vec.shape == (11,) and vec.device == device
    new = vec * 2
    vector_to_parameters(new, params)
    np.testing.assert_allclose(parameters_to_vector(params).numpy(), new.numpy())
    new.data[0] = 1e9  # the parameters hold a copy
    assert params[0].numpy()[0, 0] != 1e9


def test_vector_to_parameters_fails_a_saved_old_value():
    """Overwriting a parameter saved for backward must fail the version check, not give a wrong grad."""
    w = tg.ones(3, requires_grad=True)
    y = (w * w).sum()
    with tg.no_grad():
        vector_to_parameters(tg.zeros(3), [w])
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_convert_parameters_errors():
    with pytest.raises(TypeError, match="vector_to_parameters: expected vec to be a Tensor, but got: list"):
        vector_to_parameters([1.0, 2.0], [tg.zeros(2)])
    with pytest.raises(RuntimeError, match="vector_to_parameters: vec has 2 elements, but the parameters hold 3"):
        vector_to_parameters(tg.zeros(2), [tg.zeros(3)])
    with pytest.raises(RuntimeError, match=r"expected a 1-D vec, got shape \[2, 2\]"):
        vector_to_parameters(tg.zeros(2, 2), [tg.zeros(4)])
    with pytest.raises(ValueError, match="parameters_to_vector: expected a non-empty list of parameters"):
        parameters_to_vector([])
    with pytest.raises(TypeError, match="parameters_to_vector: found two parameters on different devices"):
        parameters_to_vector([tg.zeros(2), tg.zeros(2, device="fakegpu")])
