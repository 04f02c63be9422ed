"""sync_bn's invariants. Under `mpiexec -n 2` (with a time limit, like tests/distributed/test_mpi.py):
the experiment's model with SyncBatchNorm on 2 ranks, wrapped in DistributedDataParallel, gives in
its first training step the logits, the (averaged) parameter gradients and the running statistics
of plain BatchNorm on the whole batch in one process (float64 to 1e-10, float32 to 1e-5), and
with local BN it does not. In process: the metering communicator counts bytes and calls and
forwards the results unchanged; the verdict follows its rule."""
import numpy as np
import pytest

from examples.experiments import sync_bn as E
from tests.distributed.test_mpi import MPIEXEC, _env, _launcher_flags, needs_mpi


@needs_mpi
def test_first_step_of_syncbn_on_2_ranks_equals_bn_on_the_whole_batch():
    import subprocess
    import sys
    cmd = [MPIEXEC, *_launcher_flags(), "-n", "2", sys.executable, "-m", "examples.experiments.sync_bn",
           "--check-first-step"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env(TINYGRAD_BN_DIST_VERBOSE="0"),
                          cwd=E.__file__.rsplit("/examples/", 1)[0])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for dtype in ("float64", "float32"):
        for rank in (0, 1):
            assert f"ALL OK first step {dtype} (rank {rank})" in out, out


def test_metered_communicator_counts_and_forwards():
    from tinygrad_bn.distributed.fake import FakeWorld

    def body(comm):
        meter = E.MeteredCommunicator(comm)
        total = meter.all_reduce(np.full(5, comm.rank + 1.0))
        rows = meter.all_gather(np.arange(3, dtype=np.float32))
        return total, rows, meter.snapshot()

    for total, rows, (calls, nbytes, seconds) in FakeWorld(2).run(body):
        np.testing.assert_array_equal(total, np.full(5, 3.0))
        assert len(rows) == 2 and calls == {"all_reduce": 1, "all_gather": 1}
        assert nbytes == 5 * 8 + 3 * 4 and seconds >= 0


def test_verdict_follows_the_rule():
    def runs(acc, loss_offset):
        return [{"final_test_acc": acc + 0.001 * s, "losses": list(2.0 + loss_offset + np.zeros(20))}
                for s in range(3)]
    single = runs(0.6, 0.0)
    assert E.verdict({"single": single, "sync_bn": runs(0.6, 1e-6), "local_bn": runs(0.4, 0.05)})[0] == "reproduced"
    assert E.verdict({"single": single, "sync_bn": runs(0.6, 1e-2), "local_bn": runs(0.4, 0.05)})[0] == "not reproduced"
    assert E.verdict({"single": single, "sync_bn": runs(0.6, 1e-6), "local_bn": runs(0.6, 0.05)})[0] == "inconclusive"
