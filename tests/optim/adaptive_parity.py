"""Shared by test_rmsprop, test_adagrad and test_adadelta: train the same tiny model with ours and
with torch.optim, in float64, and compare the parameters and the state after a few steps."""
import numpy as np

import tinygrad_bn as tg
from tinygrad_bn import backend
from tinygrad_bn.nn.parameter import Parameter
from tests.helpers import assert_close, torch


def train_both(ours_cls, name, config, device, steps=6):
    """tanh(x W^T + b) on a squared error, two param groups (W with lr 0.1); returns both optims."""
    rng = np.random.default_rng(0)
    W0, b0, x0, y0 = (rng.standard_normal(s) for s in [(4, 3), (4,), (8, 3), (8, 4)])
    ours = [Parameter(tg.tensor(a, device=device)) for a in (W0, b0)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (W0, b0)]
    x, y, tx, ty = tg.tensor(x0, device=device), tg.tensor(y0, device=device), torch.tensor(x0), torch.tensor(y0)
    opt = ours_cls([{"params": [ours[0]], "lr": 0.1}, {"params": [ours[1]]}], **config)
    topt = getattr(torch.optim, name)([{"params": [theirs[0]], "lr": 0.1}, {"params": [theirs[1]]}],
                                      **config)
    for _ in range(steps):
        opt.zero_grad()
        ((tg.tanh(x @ ours[0].T + ours[1]) - y) ** 2).mean().backward()
        opt.step()
        topt.zero_grad()
        ((torch.tanh(tx @ theirs[0].T + theirs[1]) - ty) ** 2).mean().backward()
        topt.step()
    for label, a, b in zip("Wb", ours, theirs):
        assert a.device == device
        assert_close(a.detach(), b, atol=1e-12, rtol=1e-10, what=f"{name}{config} {label}")
    # the same state, under the same names, as PyTorch's state_dict
    saved, tsaved = opt.state_dict(), topt.state_dict()
    for index, values in tsaved["state"].items():
        assert sorted(saved["state"][index]) == sorted(values), f"{name} state keys"
        for key, v in values.items():
            if key == "step":
                assert saved["state"][index][key] == int(v)
            else:
                np.testing.assert_allclose(backend.to_numpy(saved["state"][index][key].data),
                                           v.numpy(), rtol=1e-10, atol=1e-12, err_msg=key)
    for g, tg_ in zip(saved["param_groups"], tsaved["param_groups"]):
        assert {k: v for k, v in g.items() if k != "params"} == \
            {k: v for k, v in tg_.items() if k not in ("params",)}, f"{name} group options"
    return opt, topt


def round_trip(make, device):
    """3 steps, state_dict, restore into a fresh optimizer on copied params: 3 more steps match."""
    start = [np.full((3, 2), 0.5), np.full((2,), -0.5)]
    params = [Parameter(tg.tensor(a, device=device)) for a in start]
    opt = make(params)

    def grads(step):
        rng = np.random.default_rng(100 + step)
        return [tg.tensor(rng.standard_normal(s), device=device) for s in [(3, 2), (2,)]]

    for step in range(3):
        for p, g in zip(params, grads(step)):
            p.grad = g
        opt.step()
    clones = [Parameter(tg.tensor(backend.to_numpy(p.data), device=device)) for p in params]
    resumed = make(clones)
    resumed.load_state_dict(opt.state_dict())
    for step in range(3, 6):
        for ps in (params, clones):
            for p, g in zip(ps, grads(step)):
                p.grad = g
        opt.step()
        resumed.step()
    for a, b in zip(params, clones):
        np.testing.assert_array_equal(backend.to_numpy(a.data), backend.to_numpy(b.data))
