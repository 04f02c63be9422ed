"""Adadelta against torch.optim.Adadelta (parameters and state after 6 steps), state_dict, errors."""
import re

import numpy as np
import pytest

from tinygrad_bn.nn.parameter import Parameter
from tinygrad_bn.optim import Adadelta
from tests.helpers import needs_torch
from tests.optim.adaptive_parity import round_trip, train_both

CONFIGS = [dict(), dict(lr=0.5), dict(rho=0.5, eps=1e-4), dict(weight_decay=0.1),
           dict(maximize=True), dict(rho=0.95, weight_decay=0.05, maximize=True)]


@needs_torch
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_matches_torch(device, config):
    train_both(Adadelta, "Adadelta", config, device)


def test_defaults():
    d = Adadelta([Parameter(np.zeros(2))]).defaults
    assert (d["lr"], d["rho"], d["eps"], d["weight_decay"], d["maximize"]) == (1.0, 0.9, 1e-6, 0, False)


def test_state_dict_round_trip(device):
    round_trip(lambda ps: Adadelta(ps, lr=0.5, rho=0.8), device)


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=-1), "Invalid learning rate: -1"), (dict(rho=1.5), "Invalid rho value: 1.5"),
    (dict(eps=-1), "Invalid epsilon value: -1"), (dict(weight_decay=-1), "Invalid weight_decay value: -1")])
def test_errors(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Adadelta([Parameter(np.zeros(2))], **kwargs)
