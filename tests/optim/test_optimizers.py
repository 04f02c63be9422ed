"""SGD, Adam, AdamW against torch.optim: parameters after 5 steps of a tiny hand-rolled model,
param groups, state_dict round-trips, zero_grad and PyTorch's error messages."""
import re

import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn import backend
from tinygrad_bn.nn.parameter import Parameter
from tinygrad_bn.optim import SGD, Adam, AdamW
from tests.helpers import assert_close, needs_torch, torch

STEPS = 5
SGD_CONFIGS = [
    dict(),
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.3),
    dict(momentum=0.9, nesterov=True),
    dict(weight_decay=0.1),
    dict(maximize=True),
    dict(momentum=0.8, weight_decay=0.05, nesterov=True, maximize=True),
]
ADAM_CONFIGS = [dict(), dict(amsgrad=True), dict(weight_decay=0.1), dict(maximize=True),
                dict(betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, amsgrad=True)]


def _initial_arrays(seed=0):
    """Weights W (4, 3), bias b (4,), and a fixed batch x (8, 3) with targets y (8, 4)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in [(4, 3), (4,), (8, 3), (8, 4)]]


def _train(opt_name, config, device, steps=STEPS):
    """Train tanh(x @ W.T + b) on a squared error with ours and with torch; return both params."""
    W0, b0, x0, y0 = _initial_arrays()
    ours = [Parameter(tg.tensor(a, device=device)) for a in (W0, b0)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (W0, b0)]
    x, y = tg.tensor(x0, device=device), tg.tensor(y0, device=device)
    tx, ty = torch.tensor(x0), torch.tensor(y0)
    # two groups: W with its own lr, b with the default one
    opt = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}[opt_name](
        [{"params": [ours[0]], "lr": 0.1}, {"params": [ours[1]]}], lr=0.05, **config)
    topt = getattr(torch.optim, opt_name)(
        [{"params": [theirs[0]], "lr": 0.1}, {"params": [theirs[1]]}], lr=0.05, **config)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((tg.tanh(x @ ours[0].T + ours[1]) - y) ** 2).mean()
        loss.backward()
        opt.step()
        topt.zero_grad()
        tloss = ((torch.tanh(tx @ theirs[0].T + theirs[1]) - ty) ** 2).mean()
        tloss.backward()
        topt.step()
    return ours, theirs


@needs_torch
@pytest.mark.parametrize("config", SGD_CONFIGS, ids=str)
def test_sgd_matches_torch(device, config):
    ours, theirs = _train("SGD", config, device)
    for name, a, b in zip("Wb", ours, theirs):
        assert a.device == device
        assert_close(a.detach(), b, atol=1e-6, rtol=1e-5, what=f"SGD{config} {name}")


@needs_torch
@pytest.mark.parametrize("opt_name", ["Adam", "AdamW"])
@pytest.mark.parametrize("config", ADAM_CONFIGS, ids=str)
def test_adam_matches_torch(device, opt_name, config):
    ours, theirs = _train(opt_name, config, device)
    for name, a, b in zip("Wb", ours, theirs):
        assert a.device == device
        assert_close(a.detach(), b, atol=1e-6, rtol=1e-5, what=f"{opt_name}{config} {name}")


def test_adamw_default_weight_decay():
    p = Parameter(np.zeros(2, np.float32))
    assert AdamW([p]).defaults["weight_decay"] == 1e-2
    assert Adam([p]).defaults["weight_decay"] == 0


@pytest.mark.parametrize("make", [
    lambda ps: SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1, maximize=True),
    lambda ps: Adam(ps, lr=0.1, weight_decay=0.1, amsgrad=True, maximize=True),
    lambda ps: AdamW(ps, lr=0.1),
])
def test_step_never_writes_the_shared_gradient(device, make):
    """Two parameters share one gradient buffer: a step reads it and bumps each parameter's version."""
    grad = tg.tensor([1.0, -2.0, 3.0], device=device)
    before = backend.to_numpy(grad.data).copy()
    params = [Parameter(tg.ones(3, device=device)), Parameter(tg.ones(3, device=device))]
    for p in params:
        p.grad = grad
    opt = make(params)
    for _ in range(2):
        opt.step()
    np.testing.assert_array_equal(backend.to_numpy(grad.data), before)
    assert all(p._version[0] == 2 for p in params)
    assert all(p.grad is grad for p in params)
    assert not np.allclose(backend.to_numpy(params[0].data), 1.0)  # the step did happen


def test_parameters_without_grad_are_skipped(device):
    a, b = Parameter(tg.ones(2, device=device)), Parameter(tg.ones(2, device=device))
    a.grad = tg.ones(2, device=device)
    Adam([a, b], lr=0.1).step()
    assert backend.to_numpy(b.data).tolist() == [1.0, 1.0]
    assert b._version[0] == 0 and a._version[0] == 1


def test_zero_grad(device):
    p = Parameter(tg.ones(3, device=device))
    grad = tg.full((3,), 5.0, device=device)
    p.grad = grad
    opt = SGD([p], lr=0.1)
    opt.zero_grad(set_to_none=False)
    assert p.grad is not grad and backend.to_numpy(p.grad.data).tolist() == [0.0] * 3
    assert p.grad.device == device
    assert backend.to_numpy(grad.data).tolist() == [5.0] * 3  # the old buffer was not zeroed
    opt.zero_grad()
    assert p.grad is None


def test_closure_is_evaluated_with_grad():
    p = Parameter(np.array([2.0], np.float32))
    opt = SGD([p], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    with tg.no_grad():
        loss = opt.step(closure)
    assert loss.item() == 4.0 and p.item() == 1.0  # 2 - 0.25 * 2 * 2


# ---- param groups and state_dict --------------------------------------------------------------
def test_param_groups_and_add_param_group():
    a, b, c = (Parameter(np.zeros(2, np.float32)) for _ in range(3))
    opt = SGD([{"params": [a], "lr": 0.5}, {"params": b}], lr=0.1, momentum=0.9)
    opt.add_param_group({"params": [c], "momentum": 0.0})
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.1, 0.1]
    assert [g["momentum"] for g in opt.param_groups] == [0.9, 0.9, 0.0]
    assert opt.param_groups[1]["params"][0] is b


def _grads(step, device):
    rng = np.random.default_rng(100 + step)
    return [tg.tensor(rng.standard_normal(s).astype(np.float32), device=device) for s in [(3, 2), (2,)]]


@pytest.mark.parametrize("make", [
    lambda ps: SGD([{"params": ps[:1], "lr": 0.2}, {"params": ps[1:]}], lr=0.1, momentum=0.9, nesterov=True),
    lambda ps: Adam([{"params": ps[:1], "lr": 0.2}, {"params": ps[1:]}], lr=0.1, amsgrad=True),
    lambda ps: AdamW(ps, lr=0.1),
])
def test_state_dict_round_trip_continues_identically(device, make):
    """Train 3 steps, save, restore into a fresh optimizer on copied params: 3 more steps match."""
    start = [np.full((3, 2), 0.5, np.float32), np.full((2,), -0.5, np.float32)]
    params = [Parameter(tg.tensor(a, device=device)) for a in start]
    opt = make(params)
    for step in range(3):
        for p, g in zip(params, _grads(step, device)):
            p.grad = g
        opt.step()
    saved = opt.state_dict()
    assert sorted(saved["state"]) == [0, 1]
    assert [g["params"] for g in saved["param_groups"]] in ([[0], [1]], [[0, 1]])
    clones = [Parameter(tg.tensor(backend.to_numpy(p.data), device=device)) for p in params]
    resumed = make(clones)
    resumed.load_state_dict(saved)
    for step in range(3, 6):
        for ps in (params, clones):
            for p, g in zip(ps, _grads(step, device)):
                p.grad = g
        opt.step()
        resumed.step()
    for a, b in zip(params, clones):
        np.testing.assert_array_equal(backend.to_numpy(a.data), backend.to_numpy(b.data))


def test_state_dict_is_a_snapshot():
    p = Parameter(np.zeros(2, np.float32))
    p.grad = tg.ones(2)
    opt = SGD([p], lr=0.1, momentum=0.9)
    opt.step()
    saved = opt.state_dict()
    opt.step()
    assert saved["state"][0]["momentum_buffer"].tolist() == [1.0, 1.0]


def test_load_state_dict_moves_state_to_the_params_device_and_dtype(device):
    p = Parameter(np.zeros(2, np.float32))
    p.grad = tg.ones(2)
    opt = Adam([p], lr=0.1)
    opt.step()
    saved = opt.state_dict()
    saved["state"][0]["exp_avg"] = saved["state"][0]["exp_avg"].data.astype(np.float64)  # a raw array
    q = Parameter(tg.zeros(2, device=device))
    other = Adam([q], lr=0.5)
    other.load_state_dict(saved)
    state = other.state[q]
    assert state["step"] == 1
    assert state["exp_avg"].device == device and state["exp_avg"].dtype == np.float32
    assert state["exp_avg_sq"].device == device
    assert other.param_groups[0]["lr"] == 0.1 and other.param_groups[0]["params"][0] is q


def test_load_state_dict_mismatch_errors():
    a, b = Parameter(np.zeros(2, np.float32)), Parameter(np.zeros(2, np.float32))
    saved = SGD([a, b]).state_dict()
    with pytest.raises(ValueError, match="different number of parameter groups"):
        SGD([{"params": [a]}, {"params": [b]}]).load_state_dict(saved)
    with pytest.raises(ValueError, match="doesn't match the size"):
        SGD([a]).load_state_dict(saved)


# ---- errors, as PyTorch words them -------------------------------------------------------------
def _p():
    return Parameter(np.zeros(2, np.float32))


@pytest.mark.parametrize("make, error, message", [
    (lambda: SGD([]), ValueError, "optimizer got an empty parameter list"),
    (lambda: Adam([]), ValueError, "optimizer got an empty parameter list"),
    (lambda: SGD([_p()], lr=-0.1), ValueError, "Invalid learning rate: -0.1"),
    (lambda: Adam([_p()], lr=-0.1), ValueError, "Invalid learning rate: -0.1"),
    (lambda: SGD([_p()], momentum=-0.5), ValueError, "Invalid momentum value: -0.5"),
    (lambda: SGD([_p()], weight_decay=-1), ValueError, "Invalid weight_decay value: -1"),
    (lambda: SGD([_p()], nesterov=True), ValueError, "Nesterov momentum requires a momentum and zero dampening"),
    (lambda: SGD([_p()], momentum=0.9, dampening=0.1, nesterov=True), ValueError, "Nesterov momentum requires"),
    (lambda: Adam([_p()], betas=(1.0, 0.999)), ValueError, "Invalid beta parameter at index 0: 1.0"),
    (lambda: Adam([_p()], betas=(0.9, -0.1)), ValueError, "Invalid beta parameter at index 1: -0.1"),
    (lambda: Adam([_p()], eps=-1e-8), ValueError, "Invalid epsilon value: -1e-08"),
    (lambda: AdamW([_p()], weight_decay=-0.1), ValueError, "Invalid weight_decay value: -0.1"),
    (lambda: SGD([np.zeros(2)]), TypeError, "optimizer can only optimize Tensors, but one of the params is numpy.ndarray"),
    (lambda: SGD(_p()), TypeError, "should be an iterable of Tensors or dicts"),
    (lambda: SGD([{"params": {_p()}}]), TypeError, "ordered collections"),
    (lambda: SGD([_p() * 2]), ValueError, "can't optimize a non-leaf Tensor"),
])
def test_errors(make, error, message):
    with pytest.raises(error, match=re.escape(message)):
        make()


def test_parameter_in_two_groups_is_refused():
    p = _p()
    with pytest.raises(ValueError, match="more than one parameter group"):
        SGD([{"params": [p]}, {"params": [p]}])
