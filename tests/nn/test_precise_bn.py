"""update_bn_stats (tinygrad_bn/nn/utils/precise_bn.py): the exact population mean and unbiased
variance of every BN-type layer's input over a fixed data set, against NumPy over the stacked
data; nested modules and every BN-family layer; momentum, training flags and
num_batches_tracked afterwards; clear errors for a model without BN and for empty batches."""
import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.nn as nn
from tinygrad_bn.nn.utils import update_bn_stats


def batches_of(shape, n_batches, seed=0, offset=3.0, scale=2.0):
    """Batches with different means (so that averaging per-batch variances would be wrong)."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(shape) * scale + offset + 0.5 * i).astype(np.float64)
            for i in range(n_batches)]


def numpy_population(stacked):
    axes = (0,) + tuple(range(2, stacked.ndim))
    return stacked.mean(axis=axes), stacked.var(axis=axes, ddof=1)


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.BatchNorm2d(3, dtype=tg.float64), (4, 3, 5, 5)),
    (lambda: nn.BatchNorm1d(3, dtype=tg.float64), (6, 3)),
    (lambda: nn.BatchNorm1d(3, dtype=tg.float64), (6, 3, 7)),
    (lambda: nn.BatchNorm2d(3, momentum=None, dtype=tg.float64), (4, 3, 5, 5)),
    (lambda: nn.GhostBatchNorm2d(3, virtual_batch_size=2, dtype=tg.float64), (4, 3, 5, 5)),
    (lambda: nn.BatchRenorm2d(3, dtype=tg.float64), (4, 3, 5, 5)),
    (lambda: nn.SyncBatchNorm(3, dtype=tg.float64), (4, 3, 5, 5)),
])
def test_equals_numpy_population_statistics(make, shape):
    bn = make()
    data = batches_of(shape, 5)
    update_bn_stats(bn, [tg.tensor(b) for b in data])
    mean, var = numpy_population(np.concatenate(data))
    np.testing.assert_allclose(bn.running_mean.numpy(), mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bn.running_var.numpy(), var, rtol=1e-12, atol=1e-12)
    # not the average of per-batch variances (the batches have different means)
    per_batch = np.mean([numpy_population(b)[1] for b in data], axis=0)
    assert np.all(np.abs(bn.running_var.numpy() - per_batch) > 1e-3)


def test_float32_buffers_and_uneven_batches():
    bn = nn.BatchNorm2d(2)
    rng = np.random.default_rng(1)
    data = [(rng.standard_normal((n, 2, 3, 3)) * 4 + 1e3).astype(np.float32) for n in (1, 7, 3)]
    update_bn_stats(bn, data)  # raw arrays are accepted; a large offset tests the stable merge
    mean, var = numpy_population(np.concatenate(data).astype(np.float64))
    assert bn.running_mean.dtype == np.float32
    np.testing.assert_allclose(bn.running_mean.numpy(), mean, rtol=1e-6)
    np.testing.assert_allclose(bn.running_var.numpy(), var, rtol=1e-5)


def test_nested_modules_see_their_own_inputs():
    tg.manual_seed(0)
    inner = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, dtype=tg.float64), nn.BatchNorm2d(3, dtype=tg.float64),
                          nn.ReLU())
    model = nn.Sequential(nn.BatchNorm2d(2, dtype=tg.float64), nn.Sequential(inner), nn.Flatten(),
                          nn.Linear(3 * 4 * 4, 5, dtype=tg.float64), nn.BatchNorm1d(5, dtype=tg.float64))
    model.eval()
    data = batches_of((4, 2, 4, 4), 3, seed=2)
    loader = [(tg.tensor(b), np.zeros(4)) for b in data]  # (inputs, targets), as a DataLoader gives
    update_bn_stats(model, loader)
    got = [(bn.running_mean.numpy().copy(), bn.running_var.numpy().copy())
           for bn in (model[0], inner[1], model[4])]
    # reference: the same model in train mode, recording each BN's input with plain hooks
    seen = {0: [], 1: [], 2: []}
    bns = [model[0], inner[1], model[4]]
    for i, bn in enumerate(bns):
        bn.register_forward_pre_hook(lambda m, args, i=i: seen[i].append(args[0].numpy()))
    model.train()
    with tg.no_grad():
        for b in data:
            model(tg.tensor(b))
    for i in range(3):
        mean, var = numpy_population(np.concatenate(seen[i]))
        np.testing.assert_allclose(got[i][0], mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got[i][1], var, rtol=1e-10, atol=1e-12)


def test_restores_momentum_and_training_and_sets_num_batches():
    model = nn.Sequential(nn.BatchNorm2d(2, momentum=0.3), nn.BatchNorm2d(2, momentum=None))
    model.eval()
    model[1].train()
    model[0].num_batches_tracked.data[...] = 17
    update_bn_stats(model, batches_of((3, 2, 2, 2), 6), num_batches=4)
    assert model[0].momentum == 0.3 and model[1].momentum is None
    assert model.training is False and model[0].training is False and model[1].training is True
    assert int(model[0].num_batches_tracked.item()) == 4  # the batches averaged over
    mean, _ = numpy_population(np.concatenate(batches_of((3, 2, 2, 2), 6)[:4]))
    np.testing.assert_allclose(model[0].running_mean.numpy(), mean, rtol=1e-6)


def test_no_bn_module_raises():
    with pytest.raises(ValueError, match="update_bn_stats: Sequential has no BatchNorm-type module"):
        update_bn_stats(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)), [np.zeros((2, 2))])
    with pytest.raises(ValueError, match="no BatchNorm-type module"):
        update_bn_stats(nn.BatchNorm2d(2, track_running_stats=False), [np.zeros((2, 2, 1, 1))])


def test_empty_batches_raise_and_leave_the_buffers():
    bn = nn.BatchNorm2d(2, momentum=0.2)
    with pytest.raises(ValueError, match="update_bn_stats: batches is empty"):
        update_bn_stats(bn, [])
    assert bn.momentum == 0.2
    np.testing.assert_array_equal(bn.running_var.numpy(), np.ones(2, np.float32))
    with pytest.raises(ValueError, match="num_batches must be a positive int"):
        update_bn_stats(bn, [np.zeros((2, 2, 1, 1))], num_batches=0)
