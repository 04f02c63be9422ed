"""dropout_shift's invariants, on small direct calls (no training): with p = 0 the variance-shift
ratio is 1 within estimation error (and with p = 0.5 before BN it is not: the check can fail);
the placements put the dropout where the docstring says; the measurement changes nothing;
re-estimating the statistics without dropout removes the shift; the verdict follows the rule."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn import nn
from tinygrad_bn.data import DataLoader, ImageDataset
from examples.experiments import dropout_shift as E


def config(placement, p):
    return dict(E.configs("quick")["none"], placement=placement, p=p)


def loader(n=512, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3, 16, 16)).astype(np.float32)
    y = (np.arange(n) % 10).astype(np.int64)
    return DataLoader(ImageDataset(x, y), batch_size=64, shuffle=False)


def accumulate_statistics(model, data):
    """Train-mode passes without gradient (dropout as configured), each BN's cumulative average:
    the running statistics a frozen network would learn on data."""
    model.train()
    for bn in E.bn_layers(model):
        bn.reset_running_stats()
        bn.momentum = None
    with tg.no_grad():
        for x, _ in data:
            model(x)


def shift_of(placement, p, seed=0):
    tg.manual_seed(seed)
    model = E.make_model(config(placement, p))
    data = loader(seed=seed)
    accumulate_statistics(model, data)
    return model, data, E.variance_shift(model, data)


@pytest.mark.parametrize("placement", ["none", "before_bn", "after_last_bn"])
def test_p0_shift_ratio_is_one_within_estimation_error(placement):
    _, _, shift = shift_of(placement, 0.0)
    # running var: the mean of 8 batches' unbiased variances; eval: the variance over all 512
    # images. They differ only by the spread of the batch means: a few percent at most.
    for layer in shift:
        assert layer["ratio"] == pytest.approx(1.0, abs=0.03)


def test_dropout_before_bn_shifts_the_variance():
    _, _, shift = shift_of("before_bn", 0.5)
    # var under dropout = E[x^2]/(1-p) - mean^2 >= 2 var for p = 0.5: every BN sees it
    assert all(layer["ratio"] > 1.5 for layer in shift)
    _, _, after = shift_of("after_last_bn", 0.5)
    assert all(layer["ratio"] == pytest.approx(1.0, abs=0.03) for layer in after)


def test_placements():
    kinds = lambda m: [type(x).__name__ for x in m.features]  # noqa: E731
    before = kinds(E.make_model(config("before_bn", 0.3)))
    assert [before[i + 1] for i, k in enumerate(before) if k == "Dropout"] == ["BatchNorm2d"] * 3
    after = kinds(E.make_model(config("after_last_bn", 0.3)))
    assert after.count("Dropout") == 1 and after[-1] == "Dropout"
    assert "Dropout" not in kinds(E.make_model(config("none", 0.0)))
    with pytest.raises(ValueError, match="placement"):
        E.make_model(config("between", 0.3))


def test_measurement_changes_nothing_and_recalibration_removes_the_shift():
    model, data, shift = shift_of("before_bn", 0.5)
    before = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    again = E.variance_shift(model, data)
    assert again == shift
    after = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    assert all(np.array_equal(before[k], after[k]) for k in before)
    momenta = [bn.momentum for bn in E.bn_layers(model)]
    E.recalibrate(model, data)
    assert [bn.momentum for bn in E.bn_layers(model)] == momenta
    for k in before:  # parameters unchanged; only the BN buffers move
        if "running" not in k and "num_batches" not in k:
            assert np.array_equal(before[k], model.state_dict()[k].detach().numpy())
    assert all(layer["ratio"] == pytest.approx(1.0, abs=0.03) for layer in E.variance_shift(model, data))


def test_variance_shift_matches_numpy():
    tg.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    bn.running_var.data[...] = np.array([1.0, 2.0, 4.0], dtype=np.float32)
    model = nn.Sequential(bn)
    data = loader(n=128)
    shift = E.variance_shift(model, data)
    x = np.concatenate([xb.numpy() for xb, _ in data]).astype(np.float64)
    expected = np.array([1.0, 2.0, 4.0]) / x.var(axis=(0, 2, 3), ddof=1)
    assert shift[0]["ratio"] == pytest.approx(expected.mean(), rel=1e-6)
    assert shift[0]["ratio_max"] == pytest.approx(expected.max(), rel=1e-6)


def test_verdict_follows_the_rule():
    def runs(shift, acc):
        return [{"mean_shift": shift + 0.01 * s, "test_acc": acc + 0.001 * s} for s in range(3)]
    res = {"none": runs(1.0, 0.6), "before_bn_p0.5": runs(3.0, 0.4), "after_last_bn_p0.5": runs(1.0, 0.6)}
    assert E.verdict(res)[0] == "reproduced"
    res["before_bn_p0.5"] = runs(1.0, 0.4)
    assert E.verdict(res)[0] == "not reproduced"
    res["before_bn_p0.5"] = runs(3.0, 0.7)
    assert E.verdict(res)[0] == "not reproduced"
    res["before_bn_p0.5"], res["after_last_bn_p0.5"] = runs(3.0, 0.4), runs(3.0, 0.6)
    assert E.verdict(res)[0] == "inconclusive"
