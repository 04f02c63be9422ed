"""sync_bn: with a small per-device batch, per-device BN degrades; SyncBN restores the
statistics of the global batch, at a communication cost.

Claim (the chapter's section 6.3; the "Deep Dive" text; PyTorch's SyncBatchNorm): in data-parallel
training each device normalizes its own shard; with 4 samples per device BN's statistics are
those of 4 samples, not of the global batch of 16. SyncBatchNorm gathers every rank's
statistics so that the 4 ranks together compute exactly what one process with BN on the batch of
16 computes, for two small messages per BN layer per step.

Protocol. examples.models.SmallCNN (widths 8/16/32) on the embedded Shapes10, SGD (lr 0.05,
momentum 0.9), the same initialization and the same global batches for three configurations:
  * "single":   one process, BatchNorm over the global batch of 16;
  * "local_bn": `mpiexec -n 4` (the experiment launches it; oversubscribing the cores is fine),
    DistributedDataParallel over 4 ranks with 4 samples each, plain BatchNorm (no sync: each rank
    normalizes its shard; DDP broadcasts rank 0's running statistics before every step, as
    PyTorch's broadcast_buffers=True does);
  * "sync_bn":  the same job with every BatchNorm converted to SyncBatchNorm.
The ranks' shards come from tinygrad_bn.distributed.DistributedSampler (examples/_common.py's
make_loaders): the 4 shards of step k together are the single process's batch k. Recorded per
run: the global training loss every step; the test accuracy (eval mode, rank 0's running
statistics) every few steps and at the end; and, on rank 0, the bytes this rank sent and the
wall time it spent inside collectives per step, separately for SyncBN's all_gather/all_reduce and
for DDP's gradient all_reduce and buffer broadcast (time inside a collective includes waiting for
the slowest rank, which on an oversubscribed machine dominates). The loss difference per step
between sync_bn and single over the first steps is the check that SyncBN reproduces the global
batch (it grows slowly from float32 rounding); local_bn's is the contrast.

Verdict rule (RULE below, word for word):
reproduced when SyncBN's mean absolute loss difference to the single process over the first 10 steps is below 1e-3 in every seed while local BN's is above it, and local BN's final test accuracy is below both SyncBN's and the single process's beyond the spread across seeds; not reproduced when SyncBN's loss difference over the first 10 steps reaches 1e-3 in some seed, or local BN's final test accuracy is above SyncBN's beyond the spread; inconclusive otherwise (in particular when local BN is not worse beyond the spread: the degradation did not show at this scale).
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import tinygrad_bn as tg
import tinygrad_bn.nn as nn

from examples import _common as C
from examples.experiments import _runner as R
from examples.models import SmallCNN
from tinygrad_bn.distributed.comm import Communicator

NAME = "sync_bn"
CLAIM = ("With a small per-device batch, per-device BN degrades, and SyncBN restores the statistics "
         "of the global batch at a communication cost.")
SOURCE = ("The chapter's section 6.3 (distributed BN); the Deep Dive text; PyTorch's "
          "torch.nn.SyncBatchNorm")
RULE = __doc__.split("word for word):\n", 1)[1].strip()
BUDGET = {"quick": "~10 s (launches mpiexec -n 4 twice)", "default": "~4 min", "full": "~1 h"}
TABLE_KEYS = ["final_test_acc", "final_train_loss", "syncbn_bytes_per_step",
              "syncbn_ms_per_step", "ddp_bytes_per_step", "ddp_ms_per_step", "step_ms"]
RANKS = 4
LOSS_TOL = 1e-3
FIRST_STEPS = 10
SCALES = {"quick": dict(steps=12, eval_every=12, train_size=256, test_size=128, image_size=8, widths=[4, 8, 16]),
          "default": dict(steps=300, eval_every=50, train_size=2000, test_size=500, image_size=12,
                          widths=[8, 16, 32]),
          "full": dict(steps=3000, eval_every=250, train_size=10000, test_size=2000, image_size=16,
                       widths=[16, 32, 64])}


def configs(scale):
    base = dict(SCALES[scale], global_batch=16, lr=0.05, momentum=0.9)
    return {"single": dict(base, ranks=1, sync=False), "local_bn": dict(base, ranks=RANKS, sync=False),
            "sync_bn": dict(base, ranks=RANKS, sync=True)}


# ---- metering the collectives ------------------------------------------------------------------
class MeteredCommunicator(Communicator):
    """A communicator that forwards to another and counts, per collective kind, the calls, the
    bytes this rank contributed, and the seconds spent inside (waiting for the others included)."""

    def __init__(self, inner):
        self.inner = inner
        self.calls, self.bytes, self.seconds = {}, 0, 0.0

    initialized = property(lambda self: self.inner.initialized)
    rank = property(lambda self: self.inner.rank)
    world_size = property(lambda self: self.inner.world_size)

    def _timed(self, kind, array, fn, *args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds += time.perf_counter() - start
            self.bytes += int(getattr(array, "nbytes", 0))
            self.calls[kind] = self.calls.get(kind, 0) + 1

    def all_gather(self, array):
        return self._timed("all_gather", array, self.inner.all_gather, array)

    def all_reduce(self, array, op="sum"):
        return self._timed("all_reduce", array, self.inner.all_reduce, array, op)

    def broadcast(self, array, root=0):
        fn = getattr(self.inner, "broadcast", None)
        if fn is None:
            return self._timed("broadcast", array, lambda a: self.inner.all_gather(a)[root], array)
        return self._timed("broadcast", array, fn, array, root)

    def barrier(self):
        return self.inner.barrier()

    def snapshot(self):
        return dict(self.calls), self.bytes, self.seconds


class SyncingOptimizer:
    """The optimizer, with DistributedDataParallel's gradient average before every step (the
    runner's train_steps calls zero_grad, backward, step)."""

    def __init__(self, optimizer, ddp):
        self.optimizer, self.ddp = optimizer, ddp

    def zero_grad(self):
        self.optimizer.zero_grad()

    def step(self):
        self.ddp.sync_gradients()
        self.optimizer.step()


# ---- building one run --------------------------------------------------------------------------
def loaders(config, seed, comm=None, device="cpu"):
    """(train, test) loaders of the examples (examples/_common.py): with a communicator of W
    ranks, each rank's train loader yields its global_batch / W share of every global batch."""
    args = argparse.Namespace(dataset="embedded", train_size=config["train_size"],
                              test_size=config["test_size"], image_size=config["image_size"], seed=seed,
                              batch_size=config["global_batch"], device=device, augment="none")
    train, test = C.load_data(args)
    return C.make_loaders(args, train, test, comm)


def make_model(config, seed, dtype=None):
    tg.manual_seed(seed)  # the same initial weights in every process
    model = SmallCNN(10, 3, "BatchNorm2d", config["image_size"], widths=tuple(config["widths"]))
    return model.double() if dtype == "float64" else model


def distributed_model(model, comm, sync):
    """(DDP-wrapped model, SyncBN's metered communicator, DDP's metered communicator)."""
    bn_comm, ddp_comm = MeteredCommunicator(comm), MeteredCommunicator(comm)
    if sync:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group=bn_comm)
    from tinygrad_bn.distributed import DistributedDataParallel
    return DistributedDataParallel(model, communicator=ddp_comm), bn_comm, ddp_comm


def train_and_measure(config, seed, ctx=None, comm=None):
    """One run; with comm (an MPI world) every rank calls it and rank 0's numbers are returned."""
    distributed = comm is not None and comm.world_size > 1
    train, test = loaders(config, seed, comm if distributed else None)
    model = make_model(config, seed)
    optimizer = tg.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    bn_comm = ddp_comm = None
    if distributed:
        model, bn_comm, ddp_comm = distributed_model(model, comm, config["sync"])
        optimizer = SyncingOptimizer(optimizer, model)
    evaluated = model.module if distributed else model
    losses, accs, acc_steps, step_times = [], [], [], []
    last = [time.perf_counter()]

    def on_step(step, x, y, loss):
        now = time.perf_counter()
        step_times.append(now - last[0])
        # the global batch's loss: the mean of the ranks' means (equal shards; not metered)
        losses.append(float(comm.all_reduce(np.array([loss]))[0] / comm.world_size) if distributed else loss)
        if step % config["eval_every"] == 0 or step == config["steps"]:
            accs.append(R.evaluate(evaluated, test)[1])
            acc_steps.append(step)
            model.train()
        last[0] = time.perf_counter()

    trained = R.train_steps(model, optimizer, R.batches(train), config["steps"], ctx, on_step=on_step)
    steps = max(trained["steps"], 1)
    result = {"losses": losses, "test_accs": accs, "acc_steps": acc_steps,
              "final_test_acc": accs[-1] if accs else R.evaluate(evaluated, test)[1],
              "final_train_loss": float(np.mean(losses[-10:])) if losses else float("nan"),
              "diverged": trained["diverged"], "step_ms": 1000 * float(np.median(step_times)),
              "ranks": comm.world_size if distributed else 1}
    for key, meter in (("syncbn", bn_comm), ("ddp", ddp_comm)):
        calls, nbytes, seconds = meter.snapshot() if meter is not None else ({}, 0, 0.0)
        result[f"{key}_calls_per_step"] = {k: v / steps for k, v in calls.items()}
        result[f"{key}_bytes_per_step"] = nbytes / steps
        result[f"{key}_ms_per_step"] = 1000 * seconds / steps
    return result


# ---- the mpiexec side ------------------------------------------------------------------------------
def mpiexec():
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")  # the mpich wheel's
    return os.environ.get("TINYGRAD_BN_MPIEXEC") or (beside if os.path.exists(beside) else "mpiexec")


def launch(ranks, worker_args, timeout):
    """Run `python -m examples.experiments.sync_bn WORKER_ARGS` on `ranks` ranks; (code, output)."""
    cmd = [mpiexec(), "-n", str(ranks), sys.executable, "-m", f"examples.experiments.{NAME}", *worker_args]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", TINYGRAD_BN_DIST_VERBOSE="0")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=root)
    return proc.returncode, proc.stdout + proc.stderr


def run(config, seed, ctx):
    if config["ranks"] == 1:
        return train_and_measure(config, seed, ctx)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        code, text = launch(config["ranks"], ["--rank-worker", json.dumps(config), str(seed), out],
                            timeout=max(600, 20 * config["steps"]))
        if code != 0 or not os.path.exists(out):
            raise RuntimeError(f"sync_bn: mpiexec -n {config['ranks']} failed with status {code}:\n{text[-3000:]}")
        with open(out) as f:
            return json.load(f)


def rank_worker(config_json, seed, out):
    import tinygrad_bn.distributed as dist
    comm = dist.init()
    config = json.loads(config_json)
    if comm.world_size != config["ranks"]:
        sys.exit(f"sync_bn worker: expected {config['ranks']} ranks, got {comm.world_size} (mpiexec "
                 f"and mpi4py from different MPI libraries?)")
    R.seed_everything(int(seed))
    result = dist.run(train_and_measure, config, int(seed), None, comm)
    if comm.rank == 0:
        R.write_json_atomic(out, result)


def check_first_step(dtype):
    """Under mpiexec -n 2: one training step of the experiment's model with SyncBN on 2 ranks vs
    plain BN on the whole batch in this process: logits, parameter gradients (after DDP's average)
    and running statistics agree (float64 to 1e-10, float32 to 1e-5); with local BN they do not."""
    import tinygrad_bn.distributed as dist
    import tinygrad_bn.nn.functional as F
    comm = dist.init()
    tol = 1e-10 if dtype == "float64" else 1e-5
    config = dict(configs("quick")["sync_bn"], global_batch=8)
    rng = np.random.default_rng(3)
    x_all = rng.standard_normal((8, 3, config["image_size"], config["image_size"])).astype(dtype)
    y_all = rng.integers(0, 10, 8)
    share = 8 // comm.world_size
    lo, hi = comm.rank * share, (comm.rank + 1) * share

    def one_step(model, x, y):
        logits = model(tg.tensor(x))
        F.cross_entropy(logits, tg.tensor(y)).backward()
        return logits.detach().numpy()

    ref = make_model(config, 0, dtype)
    ref_logits = one_step(ref, x_all, y_all)
    for sync in (True, False):
        model, _, _ = distributed_model(make_model(config, 0, dtype), comm, sync)
        logits = one_step(model, x_all[lo:hi], y_all[lo:hi])
        model.sync_gradients()
        pairs = [("logits", logits, ref_logits[lo:hi])]
        pairs += [(f"grad {k}", p.grad.numpy(), q.grad.numpy())
                  for (k, p), q in zip(model.module.named_parameters(), ref.parameters())]
        pairs += [(k, b.numpy(), q.numpy()) for (k, b), q in zip(model.module.named_buffers(), ref.buffers())]
        bad = [k for k, a, b in pairs if not np.allclose(a, b, rtol=tol, atol=tol)]
        if sync and bad:
            raise AssertionError(f"SyncBN ({dtype}) differs from BN on the whole batch in: {bad}")
        if not sync and not bad:
            raise AssertionError(f"local BN ({dtype}) agrees with BN on the whole batch: the check cannot fail")
    sys.stdout.write(f"ALL OK first step {dtype} (rank {comm.rank})\n")
    sys.stdout.flush()


# ---- verdict and plot --------------------------------------------------------------------------
def loss_differences(results, name, first=FIRST_STEPS):
    """Per seed: mean |loss(name) - loss(single)| over the first steps (seeds in the same order)."""
    return [float(np.mean(np.abs(np.subtract(r["losses"][:first], s["losses"][:first]))))
            for r, s in zip(results[name], results["single"])]


def verdict(results):
    sync_diff, local_diff = loss_differences(results, "sync_bn"), loss_differences(results, "local_bn")
    acc = lambda name: R.column(results, name, "final_test_acc")  # noqa: E731
    local_vs_sync = R.separated(acc("local_bn"), acc("sync_bn"))
    local_vs_single = R.separated(acc("local_bn"), acc("single"))
    reason = (f"first {FIRST_STEPS} steps, mean |loss - single's|: SyncBN max {max(sync_diff):.2g}, local BN "
              f"min {min(local_diff):.2g} (threshold {LOSS_TOL:g}); final test accuracy local BN vs SyncBN "
              f"{local_vs_sync}, local BN vs single {local_vs_single}")
    if max(sync_diff) >= LOSS_TOL or local_vs_sync == "greater":
        return "not reproduced", reason
    if min(local_diff) > LOSS_TOL and local_vs_sync == "less" and local_vs_single == "less":
        return "reproduced", reason
    return "inconclusive", reason


def plot(results, summary):
    fig, axes = R.figure(3, "sync_bn: " + CLAIM + f" (SmallCNN on Shapes10, {RANKS} ranks x 4 vs 1 x 16)",
                         width=4.6)
    for j, name in enumerate(("single", "local_bn", "sync_bn")):
        runs, color = results[name], R.COLORS[j]
        n = min(len(r["losses"]) for r in runs)
        R.band(axes[0], np.arange(1, n + 1), [r["losses"][:n] for r in runs], name, color=color)
        R.band(axes[1], runs[0]["acc_steps"], [r["test_accs"] for r in runs], name, color=color, marker="o")
        if name != "single":
            m = min(n, 50)
            diffs = [np.abs(np.subtract(r["losses"][:m], s["losses"][:m])) for r, s in zip(runs, results["single"])]
            R.band(axes[2], np.arange(1, m + 1), diffs, name, color=color, spread="range")
    axes[0].set(xlabel="step", ylabel="training loss (global batch)", title="training loss")
    axes[1].set(xlabel="step", ylabel="test accuracy (eval mode)", title="test accuracy")
    axes[2].set(xlabel="step", ylabel="|loss - single process loss|", yscale="log",
                title="|loss difference| to 1 process (BN on 16)")
    return R.finish(fig, axes)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--rank-worker"]:
        return rank_worker(*argv[1:4])
    if argv[:1] == ["--check-first-step"]:
        for dtype in ("float64", "float32"):
            check_first_step(dtype)
        return None
    return R.main(sys.modules[__name__], argv or None)


if __name__ == "__main__":
    main()
