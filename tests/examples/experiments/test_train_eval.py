"""train_eval's invariants: in eval mode one image's logits do not depend on its batch companions
(spread exactly 0) while in train mode they do; the exact population statistics that the
experiment installs equal NumPy's per-channel mean and unbiased variance over the data set; the
statistics gap is 0 against itself; the verdict follows its rule."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn import nn
from tinygrad_bn.data import DataLoader, ImageDataset
from examples.experiments import train_eval as E


def small_model(seed=0):
    tg.manual_seed(seed)
    return E.SmallCNN(10, 3, "BatchNorm2d", 8, widths=(4, 8))


def data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 3, 8, 8)) * 2 + 0.5).astype(np.float32)


def test_eval_spread_is_exactly_zero_and_train_spread_is_not():
    model, x = small_model(), data()
    image, companions = x[0], x[1:]
    rng = np.random.default_rng(1)
    assert E.logit_spread(model, image, companions, 8, training=False, rng=rng) == 0.0
    assert E.logit_spread(model, image, companions, 8, training=True, rng=rng) > 1e-4
    # the measurement works on a copy: the model's running statistics did not move
    assert np.array_equal(model.features[1].running_mean.numpy(), np.zeros(4, np.float32))


def test_population_statistics_equal_numpy_mean_and_unbiased_variance():
    tg.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm2d(3))
    x = data(37)  # uneven batches: 37 = 4 * 8 + 5
    loader = DataLoader(ImageDataset(x, np.zeros(len(x), np.int64)), batch_size=8, shuffle=False)
    for xb, _ in loader:  # move the running statistics away from the population ones first
        model(xb)
    precise = E.with_population_stats(model, loader)
    flat = x.astype(np.float64).transpose(1, 0, 2, 3).reshape(3, -1)
    bn = precise[0]
    np.testing.assert_allclose(bn.running_mean.numpy(), flat.mean(axis=1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(bn.running_var.numpy(), flat.var(axis=1, ddof=1), rtol=1e-6)
    assert not np.allclose(bn.running_var.numpy(), flat.var(axis=1, ddof=0), rtol=1e-4)  # not the biased one
    assert not np.allclose(model[0].running_mean.numpy(), bn.running_mean.numpy())  # the original is untouched
    assert E.stat_gap(precise, precise) == 0.0 and E.stat_gap(model, precise) > 0


def test_verdict_follows_the_rule():
    def runs(gap, running, precise, spread_eval=0.0):
        return [{"stat_gap": gap + 0.001 * s, "acc_running": running + 0.001 * s,
                 "acc_precise": precise + 0.001 * s, "spread_train": 0.1, "spread_eval": spread_eval}
                for s in range(3)]
    good = {"m0.001": runs(0.8, 0.3, 0.6), "m0.1": runs(0.1, 0.6, 0.6)}
    assert E.verdict(good)[0] == "reproduced"
    assert E.verdict({**good, "m0.1": runs(0.1, 0.6, 0.6, spread_eval=1e-9)})[0] == "not reproduced"
    worse = {**good, "m0.5": runs(0.1, 0.6, 0.4)}
    assert E.verdict(worse)[0] == "not reproduced"
    assert E.verdict({"m0.001": runs(0.1, 0.6, 0.6), "m0.1": runs(0.1, 0.6, 0.6)})[0] == "inconclusive"


@pytest.mark.parametrize("momentum", [0.001, None])
def test_configs_use_the_momentum(momentum):
    name = "cumulative" if momentum is None else f"m{momentum}"
    config = E.configs("default")[name]
    model, _, _ = E.build(dict(config, train_size=20, test_size=20, image_size=8, widths=[4, 4, 4]), 0)
    assert all(bn.momentum == momentum for bn in E.bn_layers(model))
