"""Learning-rate schedulers against torch.optim.lr_scheduler: the lr of every param group for
30 steps, state_dict round-trips mid-schedule, and construction errors."""
import numpy as np
import pytest

from tinygrad_bn import optim
from tinygrad_bn.nn.parameter import Parameter
from tinygrad_bn.optim import lr_scheduler
from tests.helpers import needs_torch, torch

STEPS = 30
SCHEDULES = {
    "StepLR": lambda m, opt: m.StepLR(opt, step_size=7, gamma=0.5),
    "MultiStepLR": lambda m, opt: m.MultiStepLR(opt, milestones=[3, 10, 10, 22], gamma=0.3),
    "ExponentialLR": lambda m, opt: m.ExponentialLR(opt, gamma=0.9),
    "LinearLR": lambda m, opt: m.LinearLR(opt, start_factor=0.1, end_factor=0.8, total_iters=12),
    "CosineAnnealingLR": lambda m, opt: m.CosineAnnealingLR(opt, T_max=30, eta_min=1e-4),
    "CosineAnnealingLR-restarts": lambda m, opt: m.CosineAnnealingLR(opt, T_max=8),
    "SequentialLR-warmup-cosine": lambda m, opt: m.SequentialLR(
        opt, [m.LinearLR(opt, start_factor=0.1, total_iters=5), m.CosineAnnealingLR(opt, T_max=25)],
        milestones=[5]),
    "SequentialLR-three": lambda m, opt: m.SequentialLR(
        opt, [m.LinearLR(opt, start_factor=0.25, total_iters=4), m.StepLR(opt, step_size=3, gamma=0.5),
              m.CosineAnnealingLR(opt, T_max=10, eta_min=0.01)],
        milestones=[6, 15]),
}


def _our_optimizer():
    ps = [Parameter(np.zeros(2, np.float32)) for _ in range(2)]
    return optim.SGD([{"params": ps[:1], "lr": 0.1}, {"params": ps[1:], "lr": 0.03}], momentum=0.9)


def _torch_optimizer():
    ps = [torch.zeros(2, requires_grad=True) for _ in range(2)]
    return torch.optim.SGD([{"params": ps[:1], "lr": 0.1}, {"params": ps[1:], "lr": 0.03}], momentum=0.9)


def _lrs(scheduler, optimizer, steps):
    """get_last_lr() and the groups' lr after construction and after each of `steps` steps."""
    seen = [(list(scheduler.get_last_lr()), [g["lr"] for g in optimizer.param_groups])]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        seen.append((list(scheduler.get_last_lr()), [g["lr"] for g in optimizer.param_groups]))
    return seen


@needs_torch
@pytest.mark.parametrize("name", SCHEDULES)
def test_lr_sequence_matches_torch(name):
    opt, topt = _our_optimizer(), _torch_optimizer()
    ours = _lrs(SCHEDULES[name](lr_scheduler, opt), opt, STEPS)
    theirs = _lrs(SCHEDULES[name](torch.optim.lr_scheduler, topt), topt, STEPS)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert a == b, f"{name} step {step}: {a} != {b}"  # the same float arithmetic: exact


@pytest.mark.parametrize("name", SCHEDULES)
def test_state_dict_round_trip_mid_schedule(name):
    """Save after 11 steps, restore into a fresh optimizer + scheduler: the rest is identical."""
    opt = _our_optimizer()
    sched = SCHEDULES[name](lr_scheduler, opt)
    _lrs(sched, opt, 11)
    saved_opt, saved_sched = opt.state_dict(), sched.state_dict()
    expected = _lrs(sched, opt, 19)

    opt2 = _our_optimizer()
    sched2 = SCHEDULES[name](lr_scheduler, opt2)  # construct first, then load (PyTorch's order)
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved_sched)
    assert _lrs(sched2, opt2, 19) == expected


def test_scheduler_state_dict_excludes_the_optimizer():
    opt = _our_optimizer()
    state = lr_scheduler.SequentialLR(opt, [lr_scheduler.LinearLR(opt), lr_scheduler.StepLR(opt, 2)],
                                      milestones=[3]).state_dict()
    assert "optimizer" not in state
    assert all("optimizer" not in s for s in state["_schedulers"])
    assert state["_milestones"] == [3]


def test_multistep_state_dict_survives_plain_dict_milestones():
    """A checkpoint brings the Counter back as a plain dict (maybe with string keys)."""
    opt = _our_optimizer()
    sched = lr_scheduler.MultiStepLR(opt, milestones=[2, 4], gamma=0.5)
    state = sched.state_dict()
    state["milestones"] = {str(k): v for k, v in state["milestones"].items()}
    sched2 = lr_scheduler.MultiStepLR(_our_optimizer(), milestones=[9])
    sched2.load_state_dict(state)
    assert sched2.milestones == {2: 1, 4: 1}


def test_scheduler_errors():
    opt = _our_optimizer()
    with pytest.raises(TypeError, match="is not an Optimizer"):
        lr_scheduler.StepLR(object(), step_size=2)
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.StepLR(opt, step_size=2, last_epoch=4)
    with pytest.raises(ValueError, match="Starting multiplicative factor"):
        lr_scheduler.LinearLR(opt, start_factor=0)
    with pytest.raises(ValueError, match="Ending multiplicative factor"):
        lr_scheduler.LinearLR(opt, end_factor=1.5)
    with pytest.raises(ValueError, match="one more than the number of milestone"):
        lr_scheduler.SequentialLR(opt, [lr_scheduler.StepLR(opt, 2)], milestones=[3])
    with pytest.raises(ValueError, match="at least one scheduler"):
        lr_scheduler.SequentialLR(opt, [], milestones=[])
    other = _our_optimizer()
    with pytest.raises(ValueError, match="same optimizer"):
        lr_scheduler.SequentialLR(opt, [lr_scheduler.StepLR(opt, 2), lr_scheduler.StepLR(other, 2)],
                                  milestones=[3])
