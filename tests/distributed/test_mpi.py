"""Data-parallel training over MPI: tinygrad_bn/distributed/{mpi,ddp,sampler}.py.

Two kinds of tests:
- in-process (always run): DistributedSampler, DistributedDataParallel on the fake multi-rank
  world (tinygrad_bn.distributed.fake: one thread per rank), and that the package works without
  mpi4py;
- real MPI jobs: each test launches `mpiexec -n 2 python tests/distributed/mpi_workers.py CASE`
  (with a time limit) and checks its exit status and output. They skip, with the reason, when
  mpi4py or mpiexec is missing (pip install -e '.[dist]' installs both: mpi4py and the mpich
  wheel, whose mpiexec lands next to the Python executable). TINYGRAD_BN_MPIEXEC overrides which
  mpiexec is used.
"""
import copy
import functools
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.nn as nn
import tinygrad_bn.nn.functional as F
from tinygrad_bn.distributed.comm import SingleProcess
from tinygrad_bn.distributed.ddp import DistributedDataParallel
from tinygrad_bn.distributed.fake import FakeWorld
from tinygrad_bn.distributed.sampler import DistributedSampler
from tinygrad_bn.optim import SGD
from tests.helpers import needs_torch, torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
WORKER = os.path.join(HERE, "mpi_workers.py")


# ---- DistributedSampler --------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 5, 10, 11, 17])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_sampler_shares_are_disjoint_equal_sized_and_cover_the_dataset(n, world, drop_last, shuffle):
    samplers = [DistributedSampler(n, world, r, shuffle=shuffle, seed=4, drop_last=drop_last)
                for r in range(world)]
    shares = [s.indices() for s in samplers]
    assert all(len(sh) == len(s) == samplers[0].num_samples for sh, s in zip(shares, samplers))
    union = np.concatenate(shares)
    if drop_last:  # PyTorch: floor(n / W) each, nothing repeated, n % W left out
        assert len(union) == len(set(union.tolist())) == (n // world) * world
    else:  # ceil(n / W) each: every sample at least once, padding repeats the first ones
        assert set(union.tolist()) == set(range(n))
        assert len(union) == (-(-n // world)) * world
    assert all(0 <= i < n for i in union.tolist())


@needs_torch
@pytest.mark.parametrize("n, world, drop_last", [(10, 3, False), (10, 3, True), (2, 4, False),
                                                 (7, 7, False), (9, 2, True)])
def test_sampler_without_shuffle_matches_torch_exactly(n, world, drop_last):
    TorchSampler = torch.utils.data.DistributedSampler
    for r in range(world):
        ours = DistributedSampler(n, world, r, shuffle=False, drop_last=drop_last)
        theirs = TorchSampler(range(n), world, r, shuffle=False, drop_last=drop_last)
        assert list(ours) == list(theirs) and len(ours) == len(theirs)


def test_sampler_reshuffles_per_epoch_and_repeats_an_epoch():
    s = DistributedSampler(100, 2, 0, seed=3)
    epoch0 = s.indices()
    s.set_epoch(1)
    epoch1 = s.indices()
    assert not np.array_equal(epoch0, epoch1)
    s.set_epoch(0)
    np.testing.assert_array_equal(s.indices(), epoch0)
    other_seed = DistributedSampler(100, 2, 0, seed=4)
    assert not np.array_equal(other_seed.indices(), epoch0)
    assert list(DistributedSampler(5, 1, 0, shuffle=False)) == [0, 1, 2, 3, 4]


def test_sampler_shards_the_one_process_loader_batches():
    """Rank r's k-th batch of B/W is the one-process k-th batch of B at positions r mod W."""
    n, w, b = 40, 2, 8
    full = np.random.default_rng(7 + 2).permutation(n)  # DataLoader(seed=7) in epoch 2
    for r in range(w):
        s = DistributedSampler(n, w, r, seed=7)
        s.set_epoch(2)
        mine = s.indices()
        for k in range(n // b):
            np.testing.assert_array_equal(mine[k * b // w:(k + 1) * b // w],
                                          full[k * b:(k + 1) * b][r::w])


def test_sampler_takes_a_dataset_and_the_default_communicator():
    s = DistributedSampler(list(range(7)))
    assert (s.num_replicas, s.rank, len(s)) == (1, 0, 7)
    world = FakeWorld(3)
    got = world.run(lambda comm: (DistributedSampler(7).num_replicas, DistributedSampler(7).rank))
    assert got == [(3, 0), (3, 1), (3, 2)]


@pytest.mark.parametrize("kwargs, match", [
    ({"num_replicas": 2, "rank": 2}, r"Invalid rank 2, rank should be in the interval \[0, 1\]"),
    ({"num_replicas": 2, "rank": -1}, r"Invalid rank -1"),
    ({"num_replicas": 0, "rank": 0}, "num_replicas must be an int >= 1"),
    ({"num_replicas": 2, "rank": 0, "seed": -1}, "seed must be an int >= 0"),
])
def test_sampler_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DistributedSampler(10, **kwargs)
    with pytest.raises(TypeError, match="expected a dataset"):
        DistributedSampler(object())
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        DistributedSampler(10, 1, 0).set_epoch(-1)


# ---- DistributedDataParallel on the fake world ---------------------------------------------
class Net(nn.Module):
    def __init__(self, bn=nn.BatchNorm2d):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = bn(4)
        self.fc = nn.Linear(4 * 4 * 4, 5)
        self.unused = nn.Parameter(tg.zeros(2))

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).reshape(x.shape[0], -1))


def _flat(model):
    return np.concatenate([p.detach().numpy().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("world_size, bucket_cap_mb", [(2, 25), (3, 1e-6), (4, 25)])
def test_ddp_steps_equal_one_process_steps_on_the_whole_batch(world_size, bucket_cap_mb):
    """SyncBatchNorm + DDP on W fake ranks == BatchNorm on one process with the whole batch."""
    n, steps = 12, 3
    rng = np.random.default_rng(0)
    x_all, y_all = rng.standard_normal((n, 3, 4, 4)), rng.integers(0, 5, n)
    tg.manual_seed(1)
    ref = Net().double()
    replicas = []
    for r in range(world_size):
        tg.manual_seed(100 + r)  # different starting values: the wrap broadcasts rank 0's...
        replicas.append(nn.SyncBatchNorm.convert_sync_batchnorm(Net().double()))
    for name, p in replicas[0].named_parameters():  # ...which are the reference's
        p.data[...] = dict(ref.named_parameters())[name].data
    world = FakeWorld(world_size)
    models = world.run(lambda comm: DistributedDataParallel(replicas[comm.rank], bucket_cap_mb=bucket_cap_mb))
    assert len(models[0].buckets) == (1 if bucket_cap_mb == 25 else 7)
    optimizers = [SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3) for m in models]
    opt_ref = SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)

    def step(comm, epoch):
        sampler = DistributedSampler(n, seed=5)
        sampler.set_epoch(epoch)
        idx = sampler.indices()
        model, opt = models[comm.rank], optimizers[comm.rank]
        loss = F.cross_entropy(model(tg.tensor(x_all[idx])), tg.tensor(y_all[idx]))
        opt.zero_grad()
        loss.backward()
        model.sync_gradients()
        opt.step()
        return float(loss.item())

    for epoch in range(steps):
        losses = world.run(lambda comm: step(comm, epoch))
        loss_ref = F.cross_entropy(ref(tg.tensor(x_all)), tg.tensor(y_all))
        opt_ref.zero_grad()
        loss_ref.backward()
        opt_ref.step()
        np.testing.assert_allclose(np.mean(losses), float(loss_ref.item()), rtol=1e-10, atol=1e-10)
        for m in models:
            np.testing.assert_allclose(_flat(m.module), _flat(ref), rtol=1e-10, atol=1e-10)
            np.testing.assert_array_equal(_flat(m.module), _flat(models[0].module))  # bit-identical
            assert m.module.unused.grad is None
            for (name, b), (_, rb) in zip(m.module.named_buffers(), ref.named_buffers()):
                np.testing.assert_allclose(b.numpy(), rb.numpy(), rtol=1e-10, atol=1e-10, err_msg=name)


def test_ddp_gradients_on_every_backend_equal_the_whole_batch_gradients(device):
    """The buckets live on the parameters' device (NumPy, fakegpu, CuPy)."""
    tg.manual_seed(2)
    ref = Net()
    replicas = [nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(ref)).to(device) for _ in range(2)]
    world = FakeWorld(2)
    models = world.run(lambda comm: DistributedDataParallel(replicas[comm.rank], bucket_cap_mb=1e-3))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 3, 4, 4)).astype(np.float32), rng.integers(0, 5, 6)
    F.cross_entropy(ref(tg.tensor(x)), tg.tensor(y)).backward()

    def step(comm):
        mine = slice(3 * comm.rank, 3 * comm.rank + 3)
        model = models[comm.rank]
        F.cross_entropy(model(tg.tensor(x[mine], device=device)),
                        tg.tensor(y[mine], device=device)).backward()
        model.sync_gradients()
        return {n: tg.backend.to_numpy(p.grad.data) for n, p in model.module.named_parameters()
                if p.grad is not None}

    grads = world.run(step)
    for name, p in ref.named_parameters():
        if p.grad is None:
            assert name not in grads[0] and name not in grads[1]
            continue
        np.testing.assert_array_equal(grads[0][name], grads[1][name])
        np.testing.assert_allclose(grads[0][name], p.grad.detach().numpy(), rtol=1e-4, atol=1e-6,
                                   err_msg=name)


def test_ddp_broadcasts_rank0_buffers_before_each_training_forward():
    world = FakeWorld(2)
    replicas = [Net().double() for _ in range(2)]
    models = world.run(lambda comm: DistributedDataParallel(replicas[comm.rank]))
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((4, 3, 4, 4)) * (r + 1) for r in range(2)]
    world.run(lambda comm: models[comm.rank](tg.tensor(xs[comm.rank])))  # plain BN: stats differ
    rm = [m.module.bn.running_mean.numpy().copy() for m in models]
    assert not np.allclose(rm[0], rm[1])
    world.run(lambda comm: models[comm.rank].sync_buffers())
    np.testing.assert_array_equal(models[1].module.bn.running_mean.numpy(), rm[0])


def test_ddp_forgotten_sync_raises_at_the_next_forward_and_no_sync_allows_accumulation():
    world = FakeWorld(2)
    replicas = [Net().double() for _ in range(2)]
    models = world.run(lambda comm: DistributedDataParallel(replicas[comm.rank]))
    x, y = tg.tensor(np.ones((2, 3, 4, 4))), tg.tensor(np.array([0, 1]))

    def forgetful(comm):
        m = models[comm.rank]
        F.cross_entropy(m(x), y).backward()
        m(x)

    with pytest.raises(RuntimeError, match=r"call model.sync_gradients\(\) after loss.backward\(\)"):
        world.run(forgetful)

    def accumulate(comm):
        m = models[comm.rank]
        m.sync_gradients()
        with m.no_sync():
            F.cross_entropy(m(x), y).backward()
            F.cross_entropy(m(x), y).backward()
        m.sync_gradients()
        return m(x).shape

    assert world.run(accumulate) == [(2, 5), (2, 5)]


def test_ddp_with_one_process_is_the_module_and_sends_nothing():
    tg.manual_seed(0)
    net = Net().double()
    before = copy.deepcopy(net)
    model = DistributedDataParallel(net, communicator=SingleProcess())
    x = tg.tensor(np.random.default_rng(0).standard_normal((3, 3, 4, 4)))
    out = model(x)
    np.testing.assert_array_equal(out.detach().numpy(), before(x).detach().numpy())
    F.cross_entropy(out, tg.tensor(np.array([0, 1, 2]))).backward()
    grads = {n: p.grad.detach().numpy().copy() for n, p in net.named_parameters() if p.grad is not None}
    model.sync_gradients()
    for n, p in net.named_parameters():
        if n in grads:
            np.testing.assert_array_equal(p.grad.detach().numpy(), grads[n])
    keys = list(model.state_dict())
    assert keys == ["module." + k for k in net.state_dict()]
    model.load_state_dict(model.state_dict())
    assert "world_size=1" in repr(model) and repr(model).startswith("DistributedDataParallel(")


def test_ddp_rejects_bad_arguments_and_different_models():
    with pytest.raises(TypeError, match="expected an nn.Module"):
        DistributedDataParallel(object())
    with pytest.raises(ValueError, match="bucket_cap_mb must be a positive number"):
        DistributedDataParallel(Net(), bucket_cap_mb=0)
    with pytest.raises(TypeError, match="communicator must be"):
        DistributedDataParallel(Net(), communicator="world")
    with pytest.raises(TypeError, match="already wrapped"):
        DistributedDataParallel(DistributedDataParallel(Net()))
    replicas = [Net(), nn.Linear(2, 2)]
    with pytest.raises(RuntimeError, match="the ranks wrap different models"):
        FakeWorld(2).run(lambda comm: DistributedDataParallel(replicas[comm.rank]))


# ---- without mpi4py ------------------------------------------------------------------------
def test_importing_the_package_imports_no_mpi():
    code = ("import sys, tinygrad_bn, tinygrad_bn.distributed as d, tinygrad_bn.distributed.mpi; "
            "d.DistributedSampler; d.DistributedDataParallel; print('mpi4py' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=_env())
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_init_without_mpi4py_falls_back_to_one_process_unless_launched_by_mpiexec(monkeypatch):
    from tinygrad_bn.distributed import mpi
    monkeypatch.setattr(mpi, "_MPI", None)
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # `from mpi4py import MPI` -> ImportError
    for name in mpi._LAUNCHER_ENV:
        monkeypatch.delenv(name, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        comm = mpi.init()
    assert comm.world_size == 1 and not comm.initialized
    assert "mpi4py is not installed" in str(caught[0].message)
    assert mpi.get_world() is None
    monkeypatch.setenv("PMI_RANK", "0")
    with pytest.raises(ImportError, match=r"pip install -e '\.\[dist\]'"):
        mpi.init()


# ---- real MPI jobs -------------------------------------------------------------------------
def _find_mpiexec():
    override = os.environ.get("TINYGRAD_BN_MPIEXEC")
    if override:
        return override
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")  # the mpich wheel's
    if os.path.exists(beside):
        return beside
    return shutil.which("mpiexec")


def _have_mpi4py():
    try:
        return importlib.util.find_spec("mpi4py") is not None
    except (ImportError, ValueError):
        return False


MPIEXEC = _find_mpiexec()
MPI_MISSING = ("mpi4py is not installed (pip install -e '.[dist]')" if not _have_mpi4py() else
               "no mpiexec next to the Python executable or on PATH (pip install -e '.[dist]' "
               "installs MPICH's; TINYGRAD_BN_MPIEXEC names another)" if MPIEXEC is None else None)
needs_mpi = pytest.mark.skipif(MPI_MISSING is not None, reason=str(MPI_MISSING))


def _env(**extra):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    return env


@functools.lru_cache(maxsize=None)
def _launcher_flags():
    """Open MPI refuses more ranks than cores, and root, unless told; MPICH's hydra needs
    nothing (checked on a 2-core machine, as root)."""
    try:
        version = subprocess.run([MPIEXEC, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    if "Open MPI" in version or "OpenRTE" in version:
        flags = ["--oversubscribe"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            flags.append("--allow-run-as-root")
        return flags
    return []


def launch(case, n=2, timeout=60, **env):
    """Run a worker case under mpiexec; (exit status, stdout+stderr, seconds). A job that outlives
    `timeout` is killed with its whole process group and the test fails."""
    cmd = [MPIEXEC, *_launcher_flags(), "-n", str(n), sys.executable, WORKER, case]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(TG_EXPECT_WORLD=str(n), **env), cwd=REPO,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"`{' '.join(cmd)}` did not end within {timeout} s (a hang):\n{out}")
    return proc.returncode, out, time.monotonic() - start


def _passes(case, n=2):
    code, out, _ = launch(case, n)
    assert code == 0, f"mpiexec -n {n} ... {case} failed with status {code}:\n{out}"
    for r in range(n):
        assert f"ALL OK {case} (rank {r})" in out, out
    return out


@needs_mpi
def test_mpi_syncbn_on_2_ranks_equals_batchnorm_on_the_concatenated_batch():
    """Outputs, input gradients, summed/averaged weight and bias gradients and running
    statistics (float64 to 1e-10, float32 to 1e-5), with even and uneven shards, a rank with an
    empty shard, a process group in reverse rank order and groups of one; one all_gather
    forward and one all_reduce backward per layer; nothing sent in eval."""
    out = _passes("syncbn")
    for name in ("f64-uneven-3d", "f64-rank0-empty-4d", "f32-rank1-empty-4d", "group-of-one",
                 "f64-fakegpu-staged-uneven"):
        assert f"ok {name} (rank 0)" in out and f"ok {name} (rank 1)" in out, out


@needs_mpi
def test_mpi_one_process_falls_back_to_batchnorm_and_sends_nothing():
    _passes("single", n=1)


@needs_mpi
def test_mpi_ddp_three_steps_on_2_ranks_equal_three_steps_on_the_whole_batch():
    out = _passes("ddp")
    for name in ("ddp-one-bucket", "ddp-bucket-per-parameter", "ddp-no-sync-accumulation",
                 "ddp-forgotten-sync-raises", "ddp-state-dict"):
        assert f"ok {name} (rank 0)" in out and f"ok {name} (rank 1)" in out, out


@needs_mpi
def test_mpi_sampler_shares_are_disjoint_and_cover_the_dataset():
    _passes("sampler")


BOUND = 30  # seconds: a failing job must be over well within this


@needs_mpi
@pytest.mark.parametrize("case, kind", [("raise", "RuntimeError: deliberate failure on rank 1"),
                                        ("raise_hook", "ValueError: deliberate uncaught failure on rank 1")])
def test_mpi_an_exception_on_one_rank_ends_the_job_naming_the_rank(case, kind):
    code, out, seconds = launch(case, timeout=BOUND + 30)
    assert code != 0 and seconds < BOUND, (code, seconds, out)
    assert f"[rank 1] {kind}" in out, out
    assert re.search(r"rank 1 \(pid \d+ on \S+\) raised " + kind.split(":")[0], out), out
    assert "ALL OK" not in out


@needs_mpi
def test_mpi_mismatched_collectives_are_an_error_on_every_rank_not_a_hang():
    code, out, seconds = launch("mismatch", timeout=BOUND + 30)
    assert code != 0 and seconds < BOUND, (code, seconds, out)
    assert "mismatched collectives" in out
    assert "rank 0: all_reduce(sum) of 24 bytes of float64; rank 1: all_gather of 24 bytes" in out


@needs_mpi
def test_mpi_a_rank_killed_mid_step_ends_the_job_and_its_pid_names_the_rank():
    code, out, seconds = launch("die", timeout=BOUND + 30)
    assert code != 0 and seconds < BOUND, (code, seconds, out)
    table = re.search(r"MPI world of 2 ranks \(0: pid (\d+) on \S+, 1: pid (\d+) on", out)
    assert table, out
    if "BAD TERMINATION" in out:  # MPICH's hydra: the first process that ended badly, by pid
        assert re.search(rf"PID {table.group(2)} RUNNING AT", out), out


@needs_mpi
def test_mpi_a_hung_rank_makes_the_others_time_out_and_end_the_job():
    code, out, seconds = launch("hang", timeout=BOUND + 30, TG_CASE_TIMEOUT="2")
    assert code != 0 and seconds < BOUND, (code, seconds, out)
    assert re.search(r"\[rank 0\] tinygrad_bn.distributed: rank 0 \(pid \d+ on \S+\): all_reduce #3 "
                     r"on a communicator of 2 ranks did not complete within 2 s", out), out
    assert "in hang" in out  # where rank 0 was waiting


@needs_mpi
def test_mpi_a_rank_that_exits_early_ends_the_job_instead_of_hanging_in_finalize():
    code, out, seconds = launch("early_exit", timeout=BOUND + 30, TG_CASE_TIMEOUT="2")
    assert code != 0 and seconds < BOUND, (code, seconds, out)
    assert re.search(r"rank \d \(pid \d+ on \S+\): (the end-of-program barrier|all_reduce #3)", out), out
