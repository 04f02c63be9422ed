"""ics_percentiles' invariants: the SigmoidMLP has the paper's shape and records each sigmoid's
input exactly; measuring those inputs in training mode leaves the model (running statistics
included) as it was; with BN the recorded input of each unit has batch mean 0 and variance 1."""
import numpy as np
import pytest

import tinygrad_bn as tg
from examples.experiments import ics_percentiles as E


def model_and_batch(norm, seed=0):
    tg.manual_seed(seed)
    model = E.SigmoidMLP(64, hidden=100, depth=3, norm=norm)
    x = tg.tensor(np.random.default_rng(seed).standard_normal((40, 1, 8, 8)).astype(np.float32))
    return model, x


def test_records_the_sigmoid_inputs_the_output_is_built_from():
    model, x = model_and_batch("none")
    inputs = E.sigmoid_inputs(model, x)
    assert [z.shape for z in inputs] == [(40, 100)] * 3
    h = 1 / (1 + np.exp(-inputs[-1]))
    expected = h @ model.out.weight.detach().numpy().T.astype(np.float64) + model.out.bias.detach().numpy()
    np.testing.assert_allclose(model(x).detach().numpy(), expected, rtol=1e-4, atol=1e-5)


def test_bn_inputs_are_standardized_in_training_mode():
    model, x = model_and_batch("bn")
    for z in E.sigmoid_inputs(model, x):
        np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(z.var(axis=0), 1, atol=5e-3)  # var / (var + eps)
    plain, _ = model_and_batch("none")
    assert np.abs(E.sigmoid_inputs(plain, x)[0].var(axis=0) - 1).max() > 0.05  # no BN: not so


def test_measuring_changes_nothing():
    model, x = model_and_batch("bn")
    model.eval()
    before = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    E.sigmoid_inputs(model, x)
    after = model.state_dict()
    assert not model.training and not model.record
    for k, v in before.items():
        assert np.array_equal(v, after[k].detach().numpy()), k


def test_bad_norm_is_a_clear_error():
    with pytest.raises(ValueError, match="SigmoidMLP: norm must be"):
        E.SigmoidMLP(64, norm="layer")
