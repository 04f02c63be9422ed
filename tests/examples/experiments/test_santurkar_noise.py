"""santurkar_noise's invariants: noisy BN with noise of scale 0 and shift 0 equals BN exactly (and
with noise it does not); its noise has non-zero mean and non-unit variance, drawn afresh each step;
the covariate-shift measurement leaves the model and the noise stream as they were."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn import nn
from examples.experiments import santurkar_noise as E


def pair(noise_scale, noise_shift, seed=0):
    tg.manual_seed(seed)
    bn = nn.BatchNorm2d(4)
    noisy = E.NoisyBN(nn.BatchNorm2d(4), noise_scale, noise_shift, np.random.default_rng(seed))
    noisy.bn.load_state_dict(bn.state_dict())
    x = tg.tensor(np.random.default_rng(seed).standard_normal((8, 4, 5, 5)).astype(np.float32))
    return bn, noisy, x


def test_zero_noise_equals_bn_exactly():
    bn, noisy, x = pair(0.0, 0.0)
    for _ in range(2):  # and the running statistics follow the same path
        assert np.array_equal(bn(x).detach().numpy(), noisy(x).detach().numpy())
    assert np.array_equal(bn.running_mean.numpy(), noisy.bn.running_mean.numpy())


def test_noise_changes_the_output_and_changes_every_step():
    bn, noisy, x = pair(0.5, 1.0)
    ref = bn(x).detach().numpy()
    first, second = noisy(x).detach().numpy(), noisy(x).detach().numpy()
    assert np.abs(first - ref).max() > 0.1 and np.abs(second - first).max() > 0.1
    noisy.eval()
    assert np.array_equal(noisy.bn(x).detach().numpy(), noisy(x).detach().numpy())  # no noise at evaluation


def test_noise_makes_each_unit_non_zero_mean_non_unit_variance():
    _, noisy, x = pair(0.5, 1.0)
    out = noisy(x).detach().numpy()
    means = out.mean(axis=(0, 2, 3))
    stds = out.std(axis=(0, 2, 3))
    assert np.abs(means).max() > 0.1 and np.abs(stds - 1).max() > 0.1


@pytest.mark.parametrize("variant", ["bn", "noisy_bn"])
def test_covariate_shift_measurement_restores_model_and_noise(variant):
    config = dict(E.configs("quick")[variant])
    tg.manual_seed(0)
    model = E.make_model(config)
    x = tg.tensor(np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32))
    y = tg.tensor(np.arange(8) % 10)
    before = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    streams = [m.rng.bit_generator.state for m in model.modules() if isinstance(m, E.NoisyBN)]
    l2, cos = E.covariate_shift(model, x, y, lr=0.05)
    assert l2 > 0 and -1 <= cos <= 1
    after = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert streams == [m.rng.bit_generator.state for m in model.modules() if isinstance(m, E.NoisyBN)]


def test_verdict_follows_the_rule():
    def runs(acc, cos):
        return [{"final_test_acc": acc + 0.001 * s, "mean_ics_cos": cos + 0.001 * s} for s in range(3)]
    good = {"no_bn": runs(0.3, 0.99), "bn": runs(0.6, 0.9), "noisy_bn": runs(0.6, 0.2)}
    assert E.verdict(good)[0] == "reproduced"
    bad = {"no_bn": runs(0.3, 0.99), "bn": runs(0.6, 0.9), "noisy_bn": runs(0.4, 0.2)}
    assert E.verdict(bad)[0] == "not reproduced"
