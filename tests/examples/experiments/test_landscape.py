"""landscape's invariants: a probe leaves the parameters, buffers and optimizer state bit-identical
(and a probe that forgot to restore would be caught); the quantities mean what they say on a
function whose smoothness is known."""
import numpy as np
import pytest

import tinygrad_bn as tg
from examples.experiments import landscape as E


def tiny(norm="BatchNorm2d", seed=0):
    config = dict(E.SCALES["quick"], norm=norm)
    tg.manual_seed(seed)
    model = E.make_model(config)
    optimizer = tg.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    rng = np.random.default_rng(seed)
    x = tg.tensor(rng.standard_normal((8, 3, 16, 16)).astype(np.float32))
    y = tg.tensor(rng.integers(0, 10, 8))
    for _ in range(2):  # some optimizer state (momentum buffers) and moved running statistics
        loss = tg.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, optimizer, x, y


def state(model, optimizer):
    params = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()["state"]
    moments = {(i, k): np.asarray(v.numpy() if hasattr(v, "numpy") else v).copy()
               for i, s in opt.items() for k, v in s.items()}
    return params, moments


def assert_same(a, b):
    assert a[0].keys() == b[0].keys() and a[1].keys() == b[1].keys()
    for k in a[0]:
        assert np.array_equal(a[0][k], b[0][k]), k
    for k in a[1]:
        assert np.array_equal(a[1][k], b[1][k]), k


@pytest.mark.parametrize("norm", ["BatchNorm2d", "none"])
def test_probe_restores_parameters_buffers_and_optimizer_state(norm):
    model, optimizer, x, y = tiny(norm)
    before = state(model, optimizer)
    assert before[1], "the optimizer should have momentum state to protect"
    p = E.probe(model, optimizer, x, y, E.STEP_SIZES)
    assert_same(before, state(model, optimizer))
    assert p["loss_range"] > 0 and p["grad_change"] > 0 and p["beta"] > 0


def test_a_probe_that_does_not_restore_is_caught(monkeypatch):
    model, optimizer, x, y = tiny()
    before = state(model, optimizer)
    monkeypatch.setattr(E, "restore", lambda *a: None)
    E.probe(model, optimizer, x, y, E.STEP_SIZES)
    with pytest.raises(AssertionError):
        assert_same(before, state(model, optimizer))


def test_training_with_probes_equals_training_without():
    def train(with_probe):
        model, optimizer, x, y = tiny("BatchNorm2d", seed=3)
        for _ in range(2):
            if with_probe:
                E.probe(model, optimizer, x, y, (0.1, 0.4))
            loss = tg.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return state(model, optimizer)
    assert_same(train(False), train(True))


def test_verdict_follows_the_rule():
    def runs(v):
        return [{f"mean_{q}": v + 0.01 * s for q in E.QUANTITIES} for s in range(3)]
    assert E.verdict({"bn": runs(1.0), "no_bn": runs(2.0)})[0] == "reproduced"
    assert E.verdict({"bn": runs(2.0), "no_bn": runs(1.0)})[0] == "not reproduced"
    assert E.verdict({"bn": runs(1.0), "no_bn": runs(1.005)})[0] == "inconclusive"
