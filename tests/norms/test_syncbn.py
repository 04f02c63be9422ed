"""SyncBatchNorm across K simulated ranks (tinygrad_bn.distributed.fake.FakeWorld: one thread per
rank). The oracle: the same steps of single-process BatchNorm on the concatenated batch, in
float64 to 1e-10 - outputs, input gradients, weight/bias gradients summed over ranks (what DDP's
all-reduce would give) and every rank's running statistics. The single-process path (== BatchNorm,
vs torch.nn.SyncBatchNorm) is covered by the shared matrix."""
import copy

import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn.autograd import grad, gradcheck, gradgradcheck
from tinygrad_bn.distributed.comm import SingleProcess
from tinygrad_bn.distributed.fake import FakeWorld
from tinygrad_bn.nn.containers import Sequential
from tinygrad_bn.nn.layers import Conv2d, Linear, ReLU
from tinygrad_bn.norms.batchnorm import BatchNorm1d, BatchNorm2d
from tinygrad_bn.norms.batchrenorm import BatchRenorm2d
from tinygrad_bn.norms.ghostbn import GhostBatchNorm2d
from tinygrad_bn.norms.syncbn import (SyncBatchNorm, SyncBatchNormGrad, composed_sync_backward,
                                      merge_gathered_stats)
from tests.helpers import assert_close, needs_torch, to_numpy, torch

C = 3
TOL = {"atol": 1e-10, "rtol": 1e-10}


def _reference_class(ndim):
    return BatchNorm2d if ndim == 4 else BatchNorm1d


def _init(layer, seed=1):
    rng = np.random.default_rng(seed)
    with tg.no_grad():
        if layer.weight is not None:
            layer.weight.data[...] = rng.uniform(0.5, 1.5, C) * rng.choice([-1, 1], C)
            layer.bias.data[...] = rng.uniform(-0.5, 0.5, C)
        if layer.running_mean is not None:
            layer.running_mean.data[...] = rng.uniform(-0.5, 0.5, C)
            layer.running_var.data[...] = rng.uniform(0.5, 1.5, C)
    return layer


def _shards(array, sizes):
    offsets = np.cumsum([0] + list(sizes))
    return [array[offsets[r]:offsets[r + 1]] for r in range(len(sizes))]


def _rank_step(layers, xs, gs, device="cpu", x_requires_grad=True):
    """fn(comm) for world.run: one forward+backward of rank comm.rank's layer on its shard."""
    def fn(comm):
        r = comm.rank
        x = tg.tensor(xs[r], device=device, requires_grad=x_requires_grad)
        y = layers[r](x)
        y.backward(tg.tensor(gs[r], device=device))
        return y.detach().numpy(), (x.grad.numpy() if x.grad is not None else None)
    return fn


def world_run(k, fn):
    return FakeWorld(k).run(fn)


CASES = [  # (shard sizes, per-sample shape, layer options)
    pytest.param([4, 4], (C, 2, 2), {}, id="2-ranks-even-4d"),
    pytest.param([5, 2], (C, 3), {}, id="2-ranks-uneven-3d"),
    pytest.param([3, 0, 4], (C, 2, 2), {}, id="3-ranks-one-empty"),
    pytest.param([1, 6, 2], (C,), {}, id="3-ranks-2d-one-sample-rank"),
    pytest.param([2, 3, 1], (C, 2, 2), {"affine": False, "momentum": None}, id="3-ranks-no-affine-cumulative"),
    pytest.param([2, 5], (C, 2), {"track_running_stats": False}, id="2-ranks-no-running-stats"),
]


@pytest.mark.parametrize("sizes, sample_shape, options", CASES)
def test_k_ranks_equal_batchnorm_on_the_concatenated_batch(sizes, sample_shape, options):
    n = sum(sizes)
    ref = _init(_reference_class(1 + len(sample_shape))(C, **options).double())
    layers = [copy.deepcopy(_init(SyncBatchNorm(C, **options).double())) for _ in sizes]
    world = FakeWorld(len(sizes))
    rng = np.random.default_rng(0)
    for step in range(3):
        x = rng.standard_normal((n,) + sample_shape) * (1 + step) + 0.5 * step
        g = rng.standard_normal(x.shape)
        xr = tg.tensor(x, requires_grad=True)
        yr = ref(xr)
        yr.backward(tg.tensor(g))
        results = world.run(_rank_step(layers, _shards(x, sizes), _shards(g, sizes)))
        assert_close(np.concatenate([y for y, _ in results]), yr, **TOL, what=f"output, step {step}")
        assert_close(np.concatenate([gx for _, gx in results]), xr.grad, **TOL, what=f"dx, step {step}")
        for name, p in ref.named_parameters():
            total = sum(to_numpy(dict(layer.named_parameters())[name].grad) for layer in layers)
            assert_close(total, p.grad, **TOL, what=f"summed d{name}, step {step}")
            p.grad = None
        for layer in layers:
            layer.zero_grad()
            for (name, b), (_, rb) in zip(layer.named_buffers(), ref.named_buffers()):
                assert_close(b, rb, **TOL, what=f"buffer {name}, step {step}")
    for layer in layers + [ref]:
        layer.eval()
    x = rng.standard_normal((4,) + sample_shape)
    for layer in layers:
        assert_close(layer(tg.tensor(x)), ref(tg.tensor(x)), **TOL, what="eval output")


@needs_torch
def test_three_ranks_equal_torch_batchnorm_on_the_concatenated_batch():
    sizes = [2, 0, 5]
    layers = [_init(SyncBatchNorm(C).double()) for _ in sizes]
    theirs = torch.nn.BatchNorm2d(C).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(to_numpy(layers[0].weight)))
        theirs.bias.copy_(torch.tensor(to_numpy(layers[0].bias)))
        theirs.running_mean.copy_(torch.tensor(to_numpy(layers[0].running_mean)))
        theirs.running_var.copy_(torch.tensor(to_numpy(layers[0].running_var)))
    world = FakeWorld(3)
    rng = np.random.default_rng(7)
    for step in range(2):
        x, g = rng.standard_normal((7, C, 2, 3)) * 2 - 1, rng.standard_normal((7, C, 2, 3))
        tx = torch.tensor(x, requires_grad=True)
        ty = theirs(tx)
        ty.backward(torch.tensor(g))
        results = world.run(_rank_step(layers, _shards(x, sizes), _shards(g, sizes)))
        assert_close(np.concatenate([y for y, _ in results]), ty, **TOL, what="output")
        assert_close(np.concatenate([gx for _, gx in results]), tx.grad, **TOL, what="dx")
        assert_close(sum(to_numpy(layer.weight.grad) for layer in layers), theirs.weight.grad, **TOL, what="dw")
        assert_close(sum(to_numpy(layer.bias.grad) for layer in layers), theirs.bias.grad, **TOL, what="db")
        theirs.zero_grad()
        for layer in layers:
            layer.zero_grad()
    for layer in layers:
        assert_close(layer.running_mean, theirs.running_mean, **TOL, what="running_mean")
        assert_close(layer.running_var, theirs.running_var, **TOL, what="running_var")
        assert int(layer.num_batches_tracked.item()) == int(theirs.num_batches_tracked) == 2


def test_one_rank_is_batchnorm_exactly_and_sends_nothing():
    world = FakeWorld(1)
    sync = _init(SyncBatchNorm(C).double())
    ref = _init(BatchNorm2d(C).double())
    x = np.random.default_rng(0).standard_normal((4, C, 2, 2))
    (y, gx), = world.run(_rank_step([sync], [x], [np.ones_like(x)]))
    xr = tg.tensor(x, requires_grad=True)
    yr = ref(xr)
    yr.backward(tg.tensor(np.ones_like(x)))
    np.testing.assert_array_equal(y, yr.detach().numpy())
    np.testing.assert_array_equal(gx, xr.grad.numpy())
    np.testing.assert_array_equal(to_numpy(sync.running_var), to_numpy(ref.running_var))
    assert world.comms[0].calls == {}


def test_two_messages_per_layer_per_training_step():
    """Forward: one all_gather of [mean(C), invstd(C), count] = 2C+1 floats; backward: one
    all_reduce of [sum_dy, sum_dy_xmu] = 2C floats - per SyncBatchNorm layer."""
    world = FakeWorld(2)
    models = [Sequential(SyncBatchNorm(C).double(), ReLU(), SyncBatchNorm(C).double()) for _ in range(2)]
    x = np.random.default_rng(0).standard_normal((6, C, 2, 2))

    def fn(comm):
        y = models[comm.rank](tg.tensor(x[3 * comm.rank:3 * comm.rank + 3], requires_grad=True))
        y.sum().backward()
        return list(comm.log)

    for log in world.run(fn):
        assert log == [("all_gather", (2 * C + 1,)), ("all_gather", (2 * C + 1,)),
                       ("all_reduce", (2 * C,)), ("all_reduce", (2 * C,))]


def test_eval_frozen_statistics_and_single_process_send_no_messages():
    world = FakeWorld(2)
    layers = [SyncBatchNorm(C).double() for _ in range(2)]
    no_buffers = [SyncBatchNorm(C, track_running_stats=False).double() for _ in range(2)]
    x = np.random.default_rng(0).standard_normal((4, C, 2, 2))
    world.run(_rank_step(layers, [x, x], [x, x]))  # one synchronised training step
    for comm in world.comms:
        comm.reset_counts()
    for layer in layers + no_buffers:
        layer.eval()
    world.run(_rank_step(layers, [x, x], [x, x]))
    world.run(_rank_step(no_buffers, [x, x], [x, x]))  # eval without buffers: local batch stats
    for layer in layers:
        layer.train().freeze_running_stats()
    world.run(_rank_step(layers, [x, x], [x, x]))
    assert [c.calls for c in world.comms] == [{}, {}]
    # eval without buffers uses this rank's own batch statistics, exactly like BatchNorm
    ref = BatchNorm2d(C, track_running_stats=False).double().eval()
    assert_close(no_buffers[0](tg.tensor(x)), ref(tg.tensor(x)), atol=0, rtol=0)


def test_every_rank_empty_leaves_the_statistics_and_counts_the_step():
    world = FakeWorld(2)
    layers = [_init(SyncBatchNorm(C).double()) for _ in range(2)]
    before = to_numpy(layers[0].running_mean).copy(), to_numpy(layers[0].running_var).copy()
    empty = np.zeros((0, C, 2, 2))
    results = world.run(_rank_step(layers, [empty, empty], [empty, empty]))
    for (y, gx), layer in zip(results, layers):
        assert y.shape == (0, C, 2, 2) and gx.shape == (0, C, 2, 2)
        np.testing.assert_array_equal(to_numpy(layer.running_mean), before[0])
        np.testing.assert_array_equal(to_numpy(layer.running_var), before[1])
        assert int(layer.num_batches_tracked.item()) == 1
        np.testing.assert_array_equal(to_numpy(layer.weight.grad), np.zeros(C))


def test_one_value_per_channel_over_all_ranks_raises_on_every_rank():
    world = FakeWorld(2)
    layers = [SyncBatchNorm(C) for _ in range(2)]

    def fn(comm):
        x = tg.tensor(np.ones((1 - comm.rank, C), dtype=np.float32))
        with pytest.raises(ValueError, match="Expected more than 1 value per channel when training, "
                                             "got 1 value per channel over all 2 ranks"):
            layers[comm.rank](x)
        return True

    assert world.run(fn) == [True, True]


def test_one_sample_per_rank_is_fine_when_the_world_has_more():
    """The per-rank N=1 check only applies without synchronisation (pytorch#36865)."""
    world = FakeWorld(2)
    layers = [SyncBatchNorm(C).double() for _ in range(2)]
    x = np.random.default_rng(0).standard_normal((2, C))
    results = world.run(_rank_step(layers, [x[:1], x[1:]], [x[:1], x[1:]]))
    ref = BatchNorm1d(C).double()
    assert_close(np.concatenate([y for y, _ in results]), ref(tg.tensor(x)), **TOL)
    with pytest.raises(ValueError, match=r"Expected more than 1 value per channel when training, "
                                         r"got input size \(1, 3\)"):
        SyncBatchNorm(C)(tg.tensor(x[:1]))  # alone: BatchNorm's check


@pytest.mark.parametrize("sizes", [[3, 4], [2, 0, 4]], ids=["2-ranks", "3-ranks-one-empty"])
def test_double_backward_across_ranks_equals_batchnorm_on_the_concatenated_batch(sizes):
    """grad(create_graph=True) on every rank, then a loss of the gradients: its gradients with
    respect to x, w and dy equal BatchNorm's on the whole batch (the dw term sums over ranks)."""
    rng = np.random.default_rng(3)
    n = sum(sizes)
    x, dy = rng.standard_normal((n, C, 2)) * 1.3 + 0.2, rng.standard_normal((n, C, 2))
    hx, hw, hb = rng.standard_normal(x.shape), rng.standard_normal(C), rng.standard_normal(C)
    w0 = rng.uniform(0.5, 1.5, C)

    def second_order(layer, xs, dys, hxs):
        with tg.no_grad():
            layer.weight.data[...] = w0
        x_t, dy_t = tg.tensor(xs, requires_grad=True), tg.tensor(dys, requires_grad=True)
        y = layer(x_t)
        gx, gw, gb = grad([y], [x_t, layer.weight, layer.bias], [dy_t], create_graph=True)
        # a sum of per-rank losses, linear in the per-rank dw and db (which DDP would sum)
        loss = (gx * tg.tensor(hxs)).sum() + (gw * tg.tensor(hw)).sum() + (gb * tg.tensor(hb)).sum()
        loss.backward()
        return x_t.grad.numpy(), dy_t.grad.numpy(), to_numpy(layer.weight.grad), gx.grad_fn.name

    ref_x, ref_dy, ref_w, _ = second_order(BatchNorm1d(C).double(), x, dy, hx)
    layers = [SyncBatchNorm(C).double() for _ in sizes]
    world = FakeWorld(len(sizes))
    xs, dys, hxs = _shards(x, sizes), _shards(dy, sizes), _shards(hx, sizes)
    results = world.run(lambda comm: second_order(layers[comm.rank], xs[comm.rank], dys[comm.rank],
                                                  hxs[comm.rank]))
    assert_close(np.concatenate([r[0] for r in results]), ref_x, **TOL, what="d loss / dx")
    assert_close(np.concatenate([r[1] for r in results]), ref_dy, **TOL, what="d loss / d dy")
    assert_close(sum(r[2] for r in results), ref_w, **TOL, what="d loss / dw (summed)")
    assert {r[3] for r in results} == {"SyncBatchNormBackwardBackward"}


@pytest.mark.parametrize("affine", [True, False])
def test_fused_backward_equals_the_composed_one_on_every_rank(affine):
    sizes = [2, 3, 0]
    rng = np.random.default_rng(5)
    x, dy = rng.standard_normal((5, C, 3)), rng.standard_normal((5, C, 3))
    w = rng.uniform(0.5, 1.5, C)
    layers = [SyncBatchNorm(C, affine=affine).double() for _ in sizes]
    xs, dys = _shards(x, sizes), _shards(dy, sizes)

    def fn(comm):
        r = comm.rank
        x_t, dy_t = tg.tensor(xs[r], requires_grad=True), tg.tensor(dys[r])
        if affine:
            with tg.no_grad():
                layers[r].weight.data[...] = w
        y = layers[r](x_t)
        node = y.grad_fn
        weight = [tg.tensor(w)] if affine else []
        fused = SyncBatchNormGrad.apply(
            dy_t, tg.tensor(xs[r]), *weight, mean=node.saved_array("mean"),
            invstd=node.saved_array("invstd"), total=node.total, comm=comm, eps=1e-5, input_grad=True,
            has_weight=affine, has_bias=affine)
        composed = composed_sync_backward(dy_t, tg.tensor(xs[r]), *weight, comm=comm, eps=1e-5,
                                          total=node.total, has_bias=affine)
        return [f.numpy() for f in fused], [c.numpy() for c in composed if c is not None]

    for fused, composed in world_run(len(sizes), fn):
        assert len(fused) == len(composed) == (3 if affine else 1)
        for f, c in zip(fused, composed):
            assert_close(f, c, **TOL)


def test_backward_without_input_gradient_makes_no_all_reduce():
    """As PyTorch: the backward all_reduce only serves dx; dw and db are local sums."""
    sizes = [3, 4]
    rng = np.random.default_rng(2)
    x, g = rng.standard_normal((7, C, 2, 2)), rng.standard_normal((7, C, 2, 2))
    layers = [_init(SyncBatchNorm(C).double()) for _ in sizes]
    ref = _init(BatchNorm2d(C).double())
    ref(tg.tensor(x)).backward(tg.tensor(g))
    world = FakeWorld(2)
    world.run(_rank_step(layers, _shards(x, sizes), _shards(g, sizes), x_requires_grad=False))
    assert [dict(c.calls) for c in world.comms] == [{"all_gather": 1}, {"all_gather": 1}]
    assert_close(sum(to_numpy(layer.weight.grad) for layer in layers), ref.weight.grad, **TOL)
    assert_close(sum(to_numpy(layer.bias.grad) for layer in layers), ref.bias.grad, **TOL)


def test_float32_ranks_stay_close_to_the_float64_reference():
    sizes = [5, 3, 8]
    rng = np.random.default_rng(4)
    x, g = (rng.standard_normal((16, C, 4, 4)) * 3 + 2), rng.standard_normal((16, C, 4, 4))
    layers = [SyncBatchNorm(C) for _ in sizes]
    results = FakeWorld(3).run(_rank_step(layers, _shards(x.astype(np.float32), sizes),
                                          _shards(g.astype(np.float32), sizes)))
    ref = BatchNorm2d(C).double()
    xr = tg.tensor(x, requires_grad=True)
    yr = ref(xr)
    yr.backward(tg.tensor(g))
    y = np.concatenate([y for y, _ in results])
    assert y.dtype == np.float32
    assert_close(y, yr, atol=2e-5, rtol=1e-4, what="float32 output")
    assert_close(np.concatenate([gx for _, gx in results]), xr.grad, atol=2e-5, rtol=1e-4)
    assert_close(layers[0].running_var, ref.running_var, atol=2e-5, rtol=1e-4)


def test_device_backend_ranks_match_the_cpu_ranks():
    sizes = [2, 0, 3]
    rng = np.random.default_rng(6)
    x, g = rng.standard_normal((5, C, 2, 2)), rng.standard_normal((5, C, 2, 2))
    outs = {}
    for device in ("cpu", "fakegpu"):
        layers = [_init(SyncBatchNorm(C).double()).to(device) for _ in sizes]
        results = FakeWorld(3).run(_rank_step(layers, _shards(x, sizes), _shards(g, sizes), device=device))
        outs[device] = (results, [to_numpy(layer.weight.grad) for layer in layers],
                        to_numpy(layers[0].running_var))
    (r0, w0, v0), (r1, w1, v1) = outs["cpu"], outs["fakegpu"]
    for (y0, gx0), (y1, gx1) in zip(r0, r1):
        assert_close(y1, y0, atol=1e-12)
        assert_close(gx1, gx0, atol=1e-12)
    for a, b in zip(w1, w0):
        assert_close(a, b, atol=1e-12)
    assert_close(v1, v0, atol=1e-12)


def test_graph_nodes():
    world = FakeWorld(2)
    layers = [SyncBatchNorm(C).double() for _ in range(2)]

    def fn(comm):
        x = tg.tensor(np.random.default_rng(comm.rank).standard_normal((3, C)), requires_grad=True)
        y = layers[comm.rank](x)
        gx, = grad([y], [x], [tg.tensor(np.ones((3, C)))],
                   create_graph=True)
        return y.grad_fn.name, sorted(y.grad_fn.saved_shapes()), gx.grad_fn.name

    assert world.run(fn) == [("SyncBatchNormBackward", ["invstd", "mean", "weight", "x"],
                              "SyncBatchNormBackwardBackward")] * 2
    # single process: the shared BatchNorm kernel, under the same name
    assert SyncBatchNorm(C)(tg.tensor(np.ones((2, C), np.float32), requires_grad=True)).grad_fn.name \
        == "SyncBatchNormBackward"


def _kernel_transcription(mean_all, invstd_all, counts, eps):
    """PyTorch's batch_norm_reduce_statistics_kernel, one channel at a time, Python floats."""
    means, invstds, unbiased = [], [], []
    for i in range(mean_all.shape[1]):
        avg, var_n, n = 0.0, 0.0, 0
        for j in range(mean_all.shape[0]):
            count = counts[j]
            m = mean_all[j, i]
            v = 1.0 / invstd_all[j, i]
            v = (v * v - eps) * count
            factor = 1.0 / (n + count)
            var_n += v + (avg - m) * (avg - m) * n * count * factor
            avg = n * factor * avg + count * factor * m
            n += count
        means.append(avg)
        invstds.append(1.0 / np.sqrt(var_n / n + eps))
        unbiased.append(var_n / (n - 1))
    return np.array(means), np.array(invstds), np.array(unbiased)


def test_merge_follows_pytorch_kernel_and_equals_the_pooled_statistics():
    rng = np.random.default_rng(8)
    eps = 1e-5
    shards = [rng.standard_normal((n, C)) * (1 + j) + j for j, n in enumerate([4, 0, 7, 1, 3])]
    rows = []
    for s in shards:
        if len(s):
            rows.append(np.concatenate([s.mean(0), 1 / np.sqrt(s.var(0) + eps), [len(s)]]))
        else:
            rows.append(np.zeros(2 * C + 1))
    avg, var_n, n = merge_gathered_stats(rows, C, eps)
    kept = np.array([r for r in rows if r[-1] >= 1])
    k_mean, k_invstd, k_unbiased = _kernel_transcription(kept[:, :C], kept[:, C:2 * C], kept[:, -1], eps)
    np.testing.assert_allclose(avg, k_mean, rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(var_n / (n - 1), k_unbiased, rtol=1e-14)
    np.testing.assert_allclose(1 / np.sqrt(var_n / n + eps), k_invstd, rtol=1e-14)
    pooled = np.concatenate(shards)
    assert n == len(pooled)
    np.testing.assert_allclose(avg, pooled.mean(0), rtol=1e-12)
    np.testing.assert_allclose(var_n / n, pooled.var(0), rtol=1e-10)
    assert merge_gathered_stats([np.zeros(2 * C + 1)] * 2, C, eps) == (None, None, 0.0)


def test_process_group_restricts_the_synchronisation_to_its_members():
    world = FakeWorld(3)
    group = world.new_group([0, 2])
    rng = np.random.default_rng(9)
    x = rng.standard_normal((9, C, 2))
    shards = _shards(x, [3, 3, 3])
    layers = [SyncBatchNorm(C, process_group=group.get(r)).double() for r in range(3)]

    def fn(comm):
        if layers[comm.rank].process_group is None:
            layers[comm.rank].process_group = SingleProcess()  # rank 1 stays on its own
        return to_numpy(layers[comm.rank](tg.tensor(shards[comm.rank])))

    y0, y1, y2 = world.run(fn)
    pair = to_numpy(BatchNorm1d(C).double()(tg.tensor(np.concatenate([shards[0], shards[2]]))))
    assert_close(np.concatenate([y0, y2]), pair, **TOL, what="group {0, 2}")
    assert_close(y1, BatchNorm1d(C).double()(tg.tensor(shards[1])), **TOL, what="rank 1 alone")
    assert [c.calls for c in world.comms] == [{}, {}, {}]  # the world communicator was not used


def test_input_checks():
    with pytest.raises(ValueError, match=r"^expected at least 2D input \(got 1D input\)$"):
        SyncBatchNorm(C)(tg.tensor(np.ones(3, np.float32)))
    with pytest.raises(ValueError, match="^SyncBatchNorm number of input channels should be non-zero$"):
        SyncBatchNorm(C)(tg.tensor(np.ones((2, 0, 4), np.float32)))
    with pytest.raises(TypeError, match="process_group must be a tinygrad_bn.distributed.Communicator"):
        SyncBatchNorm(C, process_group="group")
    world = FakeWorld(2)

    def fn(comm):
        with pytest.raises(RuntimeError, match="running_mean should contain 4 elements not 3"):
            SyncBatchNorm(C)(tg.tensor(np.ones((2, 4, 2), np.float32)))
        with pytest.raises(ValueError, match="batch_norm eps must be positive during training, but got 0"):
            SyncBatchNorm(C, eps=0.0)(tg.tensor(np.ones((2, C, 2), np.float32)))
        return comm.calls  # the checks fire before any message

    assert world.run(fn) == [{}, {}]


def test_convert_sync_batchnorm_replaces_batchnorms_sharing_their_tensors():
    model = Sequential(Conv2d(3, C, 3), BatchNorm2d(C, momentum=0.3, eps=1e-3), ReLU(),
                       Sequential(BatchNorm2d(C, affine=False), GhostBatchNorm2d(C, 4), BatchRenorm2d(C)),
                       BatchNorm2d(C, bias=False))
    model[1].freeze_running_stats()
    model.eval()
    old = [model[1], model[3][0], model[4]]
    group = FakeWorld(1).comms[0]
    converted = SyncBatchNorm.convert_sync_batchnorm(model, process_group=group)
    assert converted is model
    new = [model[1], model[3][0], model[4]]
    for o, n in zip(old, new):
        assert type(n) is SyncBatchNorm and n.process_group is group
        assert (n.num_features, n.eps, n.momentum, n.affine, n.track_running_stats) == \
            (o.num_features, o.eps, o.momentum, o.affine, o.track_running_stats)
        assert n.weight is o.weight and n.bias is o.bias
        assert n.running_mean is o.running_mean and n.running_var is o.running_var
        assert n.num_batches_tracked is o.num_batches_tracked
        assert n.training is False and list(n.state_dict()) == list(o.state_dict())
    assert new[0].frozen_stats and new[0].eps == 1e-3
    assert new[2].bias is None
    assert type(model[3][1]) is GhostBatchNorm2d and type(model[3][2]) is BatchRenorm2d
    bn = BatchNorm1d(C).train()
    single = SyncBatchNorm.convert_sync_batchnorm(bn)
    assert type(single) is SyncBatchNorm and single.training and single.process_group is None
    linear = Linear(2, 2)
    assert SyncBatchNorm.convert_sync_batchnorm(linear) is linear


def test_state_dict_keys_and_deepcopy_keep_the_process_group():
    comm = FakeWorld(2).comms[0]
    layer = SyncBatchNorm(C, process_group=comm)
    assert list(layer.state_dict()) == list(BatchNorm2d(C).state_dict())
    assert copy.deepcopy(layer).process_group is comm


def test_gradcheck_of_the_single_process_path_in_training():
    x = tg.tensor(np.random.default_rng(0).standard_normal((3, C, 2)), requires_grad=True)
    layer = SyncBatchNorm(C, track_running_stats=False).double()
    assert gradcheck(lambda t: layer(t), [x])
    assert gradgradcheck(lambda t: layer(t), [x])
