"""noniid_batches's invariants: each batch holds exactly k classes in equal shares (k = all: an
i.i.d. draw); in its warm-up our Batch Renorm schedule is BatchNorm exactly (rmax=1, dmax=0:
outputs, gradients and running statistics through the whole net), and it ends at the paper's
limits; the statistics gap is 0 for equal statistics; the measurements leave the model as it was;
the verdict follows its rule."""
import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.nn.functional as F
from tinygrad_bn.norms.batchrenorm import BatchRenorm2d
from examples.experiments import noniid_batches as E


@pytest.mark.parametrize("k", [1, 2, 5, 10])
def test_each_batch_holds_exactly_k_classes_in_equal_shares(k):
    targets = np.repeat(np.arange(10), 30)
    batches = E.class_batches(targets, k, 20, np.random.default_rng(0))
    for _ in range(20):
        idx = next(batches)
        classes, counts = np.unique(targets[idx], return_counts=True)
        assert len(idx) == 20 and len(set(idx)) == 20 and len(classes) == k
        assert counts.max() - counts.min() <= 1


def test_all_is_an_iid_draw_and_bad_k_is_refused():
    targets = np.repeat(np.arange(10), 30)
    batches = E.class_batches(targets, E.ALL, 40, np.random.default_rng(0))
    spreads = [np.bincount(targets[next(batches)], minlength=10).max() for _ in range(20)]
    assert max(spreads) > 5  # not stratified: some class gets more than an equal share (4)
    with pytest.raises(ValueError, match="k must be between 1 and 10"):
        next(E.class_batches(targets, 11, 40, np.random.default_rng(0)))


def test_renorm_warm_up_is_batchnorm_exactly_and_the_schedule_ends_at_the_papers_limits():
    config = dict(E.configs("quick")["BatchNorm2d k1"], steps=8000)  # warm-up: round(5000 * 0.1) steps
    tg.manual_seed(0)
    bn = E.make_model(config).double()
    renorm = E.make_model(dict(config, norm="BatchRenorm2d")).double()
    renorm.load_state_dict(bn.state_dict())
    x = tg.tensor(np.random.default_rng(0).standard_normal((6, 3, 8, 8)))
    y = tg.tensor(np.arange(6) % 10)
    for _ in range(3):
        outs = []
        for model in (bn, renorm):
            model.zero_grad()
            out = model(x)
            F.cross_entropy(out, y).backward()
            outs.append((out.detach().numpy(), [p.grad.numpy() for p in model.parameters()]))
        np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-12, atol=1e-12)
        for g_bn, g_renorm in zip(outs[0][1], outs[1][1]):
            np.testing.assert_allclose(g_bn, g_renorm, rtol=1e-10, atol=1e-12)
    for a, b in zip(bn.state_dict().values(), renorm.state_dict().values()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-12)
    layer = next(m for m in renorm.modules() if isinstance(m, BatchRenorm2d))
    assert layer.clipping(0) == (1.0, 0.0) and layer.clipping(config["steps"]) == (3.0, 5.0)
    assert layer.clipping(config["steps"] // 4)[0] > 1.0  # the ramp has begun by a quarter of training


def test_statistics_gap_is_zero_for_equal_statistics_and_grows_with_the_shift():
    m, v = np.array([0.0, 1.0]), np.array([1.0, 4.0])
    assert E.statistics_gap([(m, v)], [(m, v)]) == (0.0, 0.0)
    mean_gap, var_gap = E.statistics_gap([(m + np.array([1.0, 2.0]), v * np.e)], [(m, v)])
    np.testing.assert_allclose(mean_gap, 1.0, rtol=1e-4)   # 1/1 and 2/2 population stds
    np.testing.assert_allclose(var_gap, 1.0, rtol=1e-4)


def test_measurements_leave_the_model_as_it_was():
    config = E.configs("quick")["BatchNorm2d k2"]
    train, test = E.R.shapes10(0, 64, 32, config["image_size"], 16)
    model = E.make_model(config)
    before = E.snapshot(model)
    acc = E.train_mode_accuracy(model, test.dataset, 16, 0, "cpu")
    gaps = E.precise_bn(model, train.dataset, test, 16, 0, "cpu", 4)
    assert 0 <= acc <= 1 and gaps[0] > 0 and 0 <= gaps[2] <= 1
    after = E.snapshot(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def fake(acc):
    """{(norm, k): mean eval accuracy} -> results with three seeds spread by 0.001."""
    return {E.config_name(n, k): [{"test_acc": a + 0.001 * s} for s in range(3)] for (n, k), a in acc.items()}


def grid(bn_low, others_low, k1=0.1):
    acc = {}
    for norm in E.NORMS:
        acc[(norm, 1)] = k1
        acc[(norm, 2)] = bn_low if norm == "BatchNorm2d" else others_low
        acc[(norm, E.ALL)] = 0.6
    return fake(acc)


def test_verdict_follows_the_rule():
    assert E.verdict(grid(bn_low=0.2, others_low=0.55))[0] == "reproduced"     # k0 = 2 (at k = 1 nothing learns)
    assert "k0 = 2" in E.verdict(grid(bn_low=0.2, others_low=0.55))[1]
    assert E.verdict(grid(bn_low=0.55, others_low=0.2))[0] == "not reproduced"
    assert E.verdict(grid(bn_low=0.2, others_low=0.55, k1=0.11))[1].startswith("k0 = 1")
    assert E.verdict(grid(bn_low=0.1, others_low=0.1))[0] == "inconclusive"   # no k0
