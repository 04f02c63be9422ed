"""The MPI side of tests/distributed/test_mpi.py: programs that every rank runs.

    mpiexec -n 2 python tests/distributed/mpi_workers.py CASE

Each case runs on every rank under tinygrad_bn.distributed.run (an exception on one rank aborts
the whole job with its traceback). A case that passes prints "ALL OK <case> rank <r>" on every
rank; test_mpi.py checks the exit status and those lines. The failure cases (raise, raise_hook,
die, hang, early_exit, mismatch) end the job on purpose; TG_CASE_TIMEOUT shortens the
collective timeout once init() is done. TG_EXPECT_WORLD (set by test_mpi.py) is the world
size mpiexec was asked for: a mismatch means that mpiexec and mpi4py belong to different MPI
libraries (each process would then be a world of its own).
"""
import os
import signal
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import tinygrad_bn as tg  # noqa: E402
import tinygrad_bn.distributed as dist  # noqa: E402
import tinygrad_bn.nn as nn  # noqa: E402
import tinygrad_bn.nn.functional as F  # noqa: E402
from tinygrad_bn.distributed.comm import use_communicator  # noqa: E402
from tinygrad_bn.optim import SGD  # noqa: E402

C = 3
CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


def report(comm, text):
    """One line, written at once (print writes the newline separately, and the lines of the
    ranks would interleave inside mpiexec's merged output)."""
    sys.stdout.write(f"{text} (rank {comm.rank})\n")
    sys.stdout.flush()


def close(got, want, dtype, what):
    """float64 to 1e-10, float32 to 1e-5 (relative and absolute)."""
    tol = 1e-10 if np.dtype(dtype) == np.float64 else 1e-5
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape or not np.allclose(got, want, rtol=tol, atol=tol):
        diff = np.max(np.abs(got - want)) if got.shape == want.shape and got.size else None
        raise AssertionError(f"{what}: mismatch (shapes {got.shape} vs {want.shape}, max |diff| "
                             f"{diff}, tolerance {tol})")


def host(t):
    return tg.backend.to_numpy(t.data) if isinstance(t, tg.Tensor) else np.asarray(t)


# ---- SyncBatchNorm == BatchNorm on the concatenated batch ---------------------------------
def _init_layer(layer, seed=1):
    rng = np.random.default_rng(seed)
    with tg.no_grad():
        if layer.weight is not None:
            layer.weight.data[...] = rng.uniform(0.5, 1.5, C) * rng.choice([-1, 1], C)
            layer.bias.data[...] = rng.uniform(-0.5, 0.5, C)
        if layer.running_mean is not None:
            layer.running_mean.data[...] = rng.uniform(-0.5, 0.5, C)
            layer.running_var.data[...] = rng.uniform(0.5, 1.5, C)
    return layer


def _reference(sample_shape, options, dtype):
    cls = nn.BatchNorm2d if len(sample_shape) == 3 else nn.BatchNorm1d
    layer = cls(C, **options)
    layer = layer.double() if dtype == np.float64 else layer.float()
    return _init_layer(layer)


SYNCBN_CONFIGS = [  # name, dtype, per-sample shape, shard size of each rank, options, device
    ("f64-even-4d", np.float64, (C, 2, 2), [4, 4], {}, "cpu"),
    ("f64-uneven-3d", np.float64, (C, 3), [5, 2], {}, "cpu"),
    ("f64-rank0-empty-4d", np.float64, (C, 2, 2), [0, 6], {}, "cpu"),
    ("f64-rank1-empty-2d", np.float64, (C,), [5, 0], {}, "cpu"),
    ("f64-one-sample-each-2d", np.float64, (C,), [1, 1], {}, "cpu"),
    ("f64-no-affine-cumulative", np.float64, (C, 2), [3, 2], {"affine": False, "momentum": None}, "cpu"),
    ("f64-no-running-stats", np.float64, (C, 2, 2), [2, 3], {"track_running_stats": False}, "cpu"),
    ("f32-even-4d", np.float32, (C, 4, 4), [8, 8], {}, "cpu"),
    ("f32-uneven-4d", np.float32, (C, 3, 3), [7, 2], {}, "cpu"),
    ("f32-rank1-empty-4d", np.float32, (C, 2, 2), [6, 0], {}, "cpu"),
    ("f64-fakegpu-staged-uneven", np.float64, (C, 2, 2), [3, 5], {}, "fakegpu"),
]


def _data(step, n, sample_shape, dtype):
    rng = np.random.default_rng(100 + step)
    x = (rng.standard_normal((n,) + sample_shape) * 2.0 + 0.7).astype(dtype)
    g = rng.standard_normal((n,) + sample_shape).astype(dtype)
    return x, g


def _syncbn_matches(comm, name, dtype, sample_shape, sizes, options, device, group=None,
                    group_order=None, steps=2):
    """Two training steps (plus an eval step) of SyncBatchNorm on this rank's shard vs BatchNorm
    on the concatenation of every member's shard (in the group's rank order)."""
    order = group_order if group_order is not None else list(range(comm.world_size))
    sizes_in_order = [sizes[r] for r in order]
    offsets = np.cumsum([0] + sizes_in_order)
    me = order.index(comm.rank)
    lo, hi = offsets[me], offsets[me + 1]
    n = int(offsets[-1])
    ref = _reference(sample_shape, options, dtype)
    layer = nn.SyncBatchNorm(C, process_group=group, **options)
    layer = _init_layer(layer.double() if dtype == np.float64 else layer.float()).to(device)
    sync_comm = group if group is not None else comm
    for step in range(steps):
        x_all, g_all = _data(step, n, sample_shape, dtype)
        xr = tg.tensor(x_all, requires_grad=True)
        yr = ref(xr)
        yr.backward(tg.tensor(g_all))
        before = dict(sync_comm.calls)
        x = tg.tensor(x_all[lo:hi], device=device, requires_grad=True)
        y = layer(x)
        y.backward(tg.tensor(g_all[lo:hi], device=device))
        sent = {k: v - before.get(k, 0) for k, v in sync_comm.calls.items() if v != before.get(k, 0)}
        where = f"{name} step {step}"
        assert sent == {"all_gather": 1, "all_reduce": 1}, f"{where}: messages {sent}"
        close(host(y), host(yr)[lo:hi], dtype, f"{where}: output")
        close(host(x.grad), host(xr.grad)[lo:hi], dtype, f"{where}: input gradient")
        if layer.weight is not None:
            for mine, want, pname in ((layer.weight, ref.weight, "weight"), (layer.bias, ref.bias, "bias")):
                local = mine.grad.data  # stays local: DDP sums (averages) it over the ranks
                total = sync_comm.all_reduce(local)
                close(tg.backend.to_numpy(total), host(want.grad), dtype, f"{where}: {pname} grad summed")
                mean = sync_comm.all_reduce(local) / sync_comm.world_size
                close(tg.backend.to_numpy(mean), host(want.grad) / sync_comm.world_size, dtype,
                      f"{where}: {pname} grad averaged")
                mine.grad = want.grad = None
        if layer.running_mean is not None:
            close(host(layer.running_mean), host(ref.running_mean), dtype, f"{where}: running_mean")
            close(host(layer.running_var), host(ref.running_var), dtype, f"{where}: running_var")
            assert int(layer.num_batches_tracked.item()) == int(ref.num_batches_tracked.item())
    if layer.running_mean is not None:  # eval: running statistics, no messages
        layer.eval()
        ref.eval()
        before = sum(sync_comm.calls.values())
        x_all, _ = _data(99, n, sample_shape, dtype)
        y = layer(tg.tensor(x_all[lo:hi], device=device))
        assert sum(sync_comm.calls.values()) == before, f"{name}: eval sent messages"
        close(host(y), host(ref(tg.tensor(x_all)))[lo:hi], dtype, f"{name}: eval output")


@case
def syncbn(comm):
    assert comm.world_size == 2, "the SyncBatchNorm configurations are written for 2 ranks"
    for name, dtype, shape, sizes, options, device in SYNCBN_CONFIGS:
        _syncbn_matches(comm, name, dtype, shape, sizes, options, device)
        report(comm, f"ok {name}")
    # process groups: a member list in reverse order, and one group of one rank per rank
    reverse = comm.new_group([1, 0])
    assert reverse.rank == 1 - comm.rank and reverse.world_size == 2
    _syncbn_matches(comm, "group-[1,0]", np.float64, (C, 2, 2), [3, 4], {}, "cpu",
                    group=reverse, group_order=[1, 0])
    report(comm, "ok group-[1,0]")
    alone = comm.split(color=comm.rank)
    assert alone.world_size == 1 and alone.rank == 0
    ref = _reference((C, 2, 2), {}, np.float64)
    layer = _init_layer(nn.SyncBatchNorm(C, process_group=alone).double())
    x_all, g_all = _data(0, 7, (C, 2, 2), np.float64)
    mine = x_all[:3] if comm.rank == 0 else x_all[3:]
    xr, x = tg.tensor(mine, requires_grad=True), tg.tensor(mine, requires_grad=True)
    y, yr = layer(x), ref(xr)
    y.backward(tg.tensor(g_all[:len(mine)]))
    yr.backward(tg.tensor(g_all[:len(mine)]))
    np.testing.assert_array_equal(host(y), host(yr))  # one rank: exactly BatchNorm
    np.testing.assert_array_equal(host(x.grad), host(xr.grad))
    np.testing.assert_array_equal(host(layer.running_var), host(ref.running_var))
    assert sum(alone.calls.values()) == 0, f"a group of one sent messages: {alone.calls}"
    report(comm, "ok group-of-one")
    assert comm.new_group([0]) is None if comm.rank == 1 else comm.new_group([0]) is not None


@case
def single(comm):
    """mpiexec -n 1: SyncBatchNorm is exactly BatchNorm and sends nothing; DDP is a no-op."""
    assert comm.world_size == 1 and dist.is_initialized()
    ref = _reference((C, 2, 2), {}, np.float64)
    layer = _init_layer(nn.SyncBatchNorm(C).double())
    x_all, g_all = _data(0, 5, (C, 2, 2), np.float64)
    xr, x = tg.tensor(x_all, requires_grad=True), tg.tensor(x_all, requires_grad=True)
    y, yr = layer(x), ref(xr)
    y.backward(tg.tensor(g_all))
    yr.backward(tg.tensor(g_all))
    np.testing.assert_array_equal(host(y), host(yr))
    np.testing.assert_array_equal(host(x.grad), host(xr.grad))
    np.testing.assert_array_equal(host(layer.running_mean), host(ref.running_mean))
    model = dist.DistributedDataParallel(Net().double())
    loss = F.cross_entropy(model(tg.tensor(np.ones((2, 3, 4, 4)))), tg.tensor(np.array([0, 1])))
    loss.backward()
    grads = [host(p.grad).copy() for p in model.parameters() if p.grad is not None]
    model.sync_gradients()
    for g, p in zip(grads, [p for p in model.parameters() if p.grad is not None]):
        np.testing.assert_array_equal(g, host(p.grad))
    assert sum(comm.calls.values()) == 0, f"one rank sent messages: {comm.calls}"
    assert list(dist.DistributedSampler(5)) == [int(i) for i in np.random.default_rng(0).permutation(5)]


# ---- DistributedDataParallel == one process on the whole batch ----------------------------
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 5)
        self.unused = nn.Parameter(tg.zeros(2))  # never in the graph: its grad stays None

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).reshape(x.shape[0], -1))


def _params(model):
    return np.concatenate([host(p).reshape(-1) for p in model.parameters()])


def _ddp_matches(comm, bucket_cap_mb, steps=3, n=8):
    rng = np.random.default_rng(5)
    x_all = rng.standard_normal((n, 3, 4, 4))
    y_all = rng.integers(0, 5, n)
    tg.manual_seed(7)
    ref = Net().double()
    tg.manual_seed(7 + comm.rank)  # rank 1 starts from other values: the wrap broadcasts rank 0's
    net = nn.SyncBatchNorm.convert_sync_batchnorm(Net().double())
    model = dist.DistributedDataParallel(net, bucket_cap_mb=bucket_cap_mb)
    np.testing.assert_array_equal(_params(model.module), _params(ref))
    opt_ref = SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    sampler = dist.DistributedSampler(n, shuffle=True, seed=3)
    for step in range(steps):
        sampler.set_epoch(step)  # a different shard each step
        idx = sampler.indices()
        loss_ref = F.cross_entropy(ref(tg.tensor(x_all)), tg.tensor(y_all))
        opt_ref.zero_grad()
        loss_ref.backward()
        opt_ref.step()
        loss = F.cross_entropy(model(tg.tensor(x_all[idx])), tg.tensor(y_all[idx]))
        opt.zero_grad()
        loss.backward()
        model.sync_gradients()
        opt.step()
        mean_loss = comm.all_reduce(np.array([float(loss.item())]))[0] / comm.world_size
        close(mean_loss, float(loss_ref.item()), np.float64, f"step {step}: loss")
        close(_params(model.module), _params(ref), np.float64, f"step {step}: parameters")
        assert model.module.unused.grad is None and ref.unused.grad is None
        for (name, b), (_, rb) in zip(model.module.named_buffers(), ref.named_buffers()):
            close(host(b), host(rb), np.float64, f"step {step}: buffer {name}")
        rows = comm.all_gather(_params(model.module))
        for r, row in enumerate(rows):  # every rank holds bit-identical parameters
            np.testing.assert_array_equal(row, rows[0], err_msg=f"rank {r} drifted at step {step}")
    return model, ref, x_all, y_all


@case
def ddp(comm):
    assert comm.world_size == 2
    model, ref, x_all, y_all = _ddp_matches(comm, bucket_cap_mb=25)
    assert len(model.buckets) == 1
    report(comm, "ok ddp-one-bucket")
    model, ref, x_all, y_all = _ddp_matches(comm, bucket_cap_mb=1e-6)
    assert len(model.buckets) == len(list(model.parameters())), len(model.buckets)
    report(comm, "ok ddp-bucket-per-parameter")
    keys = list(model.state_dict())
    assert keys == ["module." + k for k in ref.state_dict()], keys
    report(comm, "ok ddp-state-dict")

    # gradient accumulation: two micro-batches, the first inside no_sync()
    half = len(x_all) // 2
    for p in list(model.parameters()) + list(ref.parameters()):
        p.grad = None
    parts = [(x_all[:half], y_all[:half]), (x_all[half:], y_all[half:])]
    for i, (xs, ys) in enumerate(parts):
        F.cross_entropy(ref(tg.tensor(xs)), tg.tensor(ys)).backward()
        mine = slice(comm.rank * len(xs) // 2, (comm.rank + 1) * len(xs) // 2)
        if i == 0:
            with model.no_sync():
                F.cross_entropy(model(tg.tensor(xs[mine])), tg.tensor(ys[mine])).backward()
        else:
            F.cross_entropy(model(tg.tensor(xs[mine])), tg.tensor(ys[mine])).backward()
    model.sync_gradients()
    for p, q in zip(model.parameters(), ref.parameters()):
        if q.grad is not None:
            close(host(p.grad), host(q.grad), np.float64, "accumulated gradient")
    report(comm, "ok ddp-no-sync-accumulation")

    # forgetting sync_gradients() is an error at the next forward (on every rank alike)
    F.cross_entropy(model(tg.tensor(x_all[:2])), tg.tensor(y_all[:2])).backward()
    try:
        model(tg.tensor(x_all[:2]))
    except RuntimeError as e:
        assert "sync_gradients" in str(e), e
    else:
        raise AssertionError("a forward after an unsynchronised backward did not raise")
    model.sync_gradients()
    report(comm, "ok ddp-forgotten-sync-raises")


# ---- DistributedSampler over MPI -----------------------------------------------------------
@case
def sampler(comm):
    for n, drop_last in ((10, False), (11, False), (11, True), (3, False)):
        s = dist.DistributedSampler(n, shuffle=True, seed=1, drop_last=drop_last)
        assert (s.num_replicas, s.rank) == (comm.world_size, comm.rank)
        shares = comm.all_gather(s.indices())
        union = np.concatenate(shares)
        assert all(len(sh) == len(s) for sh in shares)
        if drop_last:
            assert len(set(union.tolist())) == len(union) == n - n % comm.world_size
        else:
            assert set(union.tolist()) == set(range(n)) and len(union) == len(s) * comm.world_size
        s.set_epoch(1)
        assert not np.array_equal(s.indices(), shares[comm.rank]) or n < 4
    report(comm, "ok sampler")


# ---- failures: the job must end, non-zero, naming the rank ---------------------------------
def _some_collectives(comm, k=2):
    for _ in range(k):
        comm.all_reduce(np.ones(3))


@case
def raise_(comm):
    """Rank 1 raises inside run(); rank 0 is waiting in its next collective."""
    _some_collectives(comm)
    if comm.rank == 1:
        raise RuntimeError("deliberate failure on rank 1")
    comm.all_reduce(np.ones(3))


CASES["raise"] = CASES.pop("raise_")


@case
def raise_hook(comm):
    """Like raise, but outside run(): the excepthook that init() installed aborts the job."""
    _some_collectives(comm)
    if comm.rank == 1:
        raise ValueError("deliberate uncaught failure on rank 1")
    comm.all_reduce(np.ones(3))


@case
def mismatch(comm):
    """Rank 0 calls all_reduce where rank 1 calls all_gather: both raise, the job ends."""
    _some_collectives(comm)
    if comm.rank == 0:
        comm.all_reduce(np.ones(3))
    else:
        comm.all_gather(np.ones(3))


@case
def die(comm):
    """Rank 1 is killed (SIGKILL: no Python code runs) in the middle of a training step, while
    rank 0 waits in SyncBatchNorm's backward all_reduce."""
    model = dist.DistributedDataParallel(nn.SyncBatchNorm.convert_sync_batchnorm(Net()))
    x = tg.randn(4, 3, 4, 4)
    loss = F.cross_entropy(model(x), tg.tensor(np.array([0, 1, 2, 3])))
    if comm.rank == 1:
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)
    loss.backward()
    model.sync_gradients()


@case
def hang(comm):
    """Rank 1 never joins the third collective (a hang, or a skipped collective)."""
    _some_collectives(comm)
    if comm.rank == 1:
        time.sleep(120)
    comm.all_reduce(np.ones(3))


@case
def early_exit(comm):
    """Rank 1 leaves the program normally while rank 0 still expects a collective from it."""
    _some_collectives(comm)
    if comm.rank == 1:
        sys.exit(0)
    time.sleep(3.0)  # rank 1's exit barrier gives up first, and says so
    comm.all_reduce(np.ones(3))


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    if name not in CASES:
        sys.exit(f"usage: mpiexec -n 2 python {sys.argv[0]} CASE  (CASE: {', '.join(CASES)})")
    comm = dist.init()
    if os.environ.get("TG_CASE_TIMEOUT"):  # set after init: a slow start-up must not trip it
        comm.timeout = float(os.environ["TG_CASE_TIMEOUT"])
    expected = os.environ.get("TG_EXPECT_WORLD")
    if expected is not None and comm.world_size != int(expected):
        sys.exit(f"mpi_workers: expected a world of {expected} ranks, got {comm.world_size}: the "
                 f"mpiexec used does not belong to the MPI library mpi4py is built against")
    with use_communicator(comm):  # explicit, although init() made it the default already
        if name == "raise_hook":
            CASES[name](comm)
        else:
            dist.run(CASES[name], comm)
    report(comm, f"ALL OK {name}")


if __name__ == "__main__":
    main()
