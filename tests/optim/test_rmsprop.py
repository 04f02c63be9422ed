"""RMSprop against torch.optim.RMSprop (parameters and state after 6 steps), state_dict, errors."""
import re

import numpy as np
import pytest

from tinygrad_bn.nn.parameter import Parameter
from tinygrad_bn.optim import RMSprop
from tests.helpers import needs_torch
from tests.optim.adaptive_parity import round_trip, train_both

CONFIGS = [dict(), dict(alpha=0.9, eps=1e-6), dict(centered=True), dict(momentum=0.9),
           dict(weight_decay=0.1), dict(maximize=True),
           dict(momentum=0.5, centered=True, weight_decay=0.05, maximize=True)]


@needs_torch
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_matches_torch(device, config):
    train_both(RMSprop, "RMSprop", config, device)


def test_defaults():
    d = RMSprop([Parameter(np.zeros(2))]).defaults
    assert (d["lr"], d["alpha"], d["eps"], d["weight_decay"], d["momentum"], d["centered"]) == \
        (1e-2, 0.99, 1e-8, 0, 0, False)


def test_state_dict_round_trip(device):
    round_trip(lambda ps: RMSprop(ps, lr=0.05, momentum=0.9, centered=True), device)


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=-1), "Invalid learning rate: -1"), (dict(eps=-1), "Invalid epsilon value: -1"),
    (dict(momentum=-1), "Invalid momentum value: -1"),
    (dict(weight_decay=-1), "Invalid weight_decay value: -1"),
    (dict(alpha=-1), "Invalid alpha value: -1")])
def test_errors(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        RMSprop([Parameter(np.zeros(2))], **kwargs)
