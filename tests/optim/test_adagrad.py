"""Adagrad against torch.optim.Adagrad (parameters and state after 6 steps), state_dict, errors."""
import re

import numpy as np
import pytest

from tinygrad_bn.nn.parameter import Parameter
from tinygrad_bn.optim import Adagrad
from tests.helpers import needs_torch
from tests.optim.adaptive_parity import round_trip, train_both

CONFIGS = [dict(), dict(lr_decay=0.1), dict(initial_accumulator_value=0.5), dict(eps=1e-3),
           dict(weight_decay=0.1), dict(maximize=True),
           dict(lr_decay=0.05, initial_accumulator_value=0.1, weight_decay=0.05, maximize=True)]


@needs_torch
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_matches_torch(device, config):
    train_both(Adagrad, "Adagrad", config, device)


def test_defaults_and_state_from_construction():
    p = Parameter(np.zeros(2))
    opt = Adagrad([p], initial_accumulator_value=0.25)
    d = opt.defaults
    assert (d["lr"], d["lr_decay"], d["weight_decay"], d["eps"]) == (1e-2, 0, 0, 1e-10)
    assert opt.state[p]["step"] == 0 and opt.state[p]["sum"].tolist() == [0.25, 0.25]


def test_state_dict_round_trip(device):
    round_trip(lambda ps: Adagrad(ps, lr=0.05, lr_decay=0.01, initial_accumulator_value=0.1), device)


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=-1), "Invalid learning rate: -1"), (dict(lr_decay=-1), "Invalid lr_decay value: -1"),
    (dict(weight_decay=-1), "Invalid weight_decay value: -1"),
    (dict(initial_accumulator_value=-1), "Invalid initial_accumulator_value value: -1"),
    (dict(eps=-1), "Invalid epsilon value: -1")])
def test_errors(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Adagrad([Parameter(np.zeros(2))], **kwargs)
