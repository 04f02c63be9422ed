"""The MPI transport: a Communicator over mpi4py, and the job-level safety nets around it.

    import tinygrad_bn.distributed as dist
    comm = dist.init()                  # MPI_Init (via mpi4py), the world becomes the default
    comm.rank, comm.world_size          # 0..W-1, W (mpiexec -n W)
    comm.all_gather(a)                  # [a of rank 0, a of rank 1, ...]           (Allgather)
    comm.all_reduce(a, "sum")           # element-wise sum over ranks, on every rank  (Allreduce)
    comm.broadcast(a, root=0)           # root's a, on every rank                      (Bcast)
    comm.barrier()
    comm.new_group([0, 2])              # a sub-communicator (MPI_Comm_split): the process_group of
                                        # SyncBatchNorm; None on ranks that are not members
    dist.run(main)                      # main(), but an error on one rank ends every rank

Arrays. NumPy arrays go to MPI as they are. CuPy (and fakegpu) arrays are staged through host
memory: copied to a NumPy array, sent, and the result copied back to the array's device. A
CUDA-aware MPI can take device pointers directly; that is only used when you say so
(init(cuda_aware=True) or TINYGRAD_BN_MPI_CUDA_AWARE=1) or when mpi4py reports CUDA support,
because a wrong guess crashes inside the MPI library. all_gather and broadcast move raw bytes
(bit-exact for every dtype); all_reduce is typed (float16 is summed in float32).

Timeouts instead of hangs, and a check that the ranks agree. Every collective first exchanges
a 4-number header (kind, reduce op, dtype, bytes) with a non-blocking all_gather, tested in a
loop until it completes or `timeout` seconds pass (default 300; TINYGRAD_BN_TIMEOUT or
init(timeout=...); 0 or "none": wait forever). When it completes, every rank has arrived, so the
data then moves with MPI's ordinary blocking call (its fast algorithms), which can no longer
hang; and if the headers differ, every rank raises the same RuntimeError naming each rank's call,
instead of hanging or exchanging garbage. On timeout the rank prints which collective it waited
in and its Python stack, and aborts the whole job. The loop yields the CPU between tests (then
sleeps, after 50 ms), so a waiting rank leaves the cores to the ones it waits for.

The job never hangs on a failure (see docs/distributed.md, "Failures"):
- an uncaught exception on any rank: init() installs a sys.excepthook that prints the traceback
  prefixed "[rank r]" and calls MPI_Abort, which makes mpiexec kill every rank (without it the
  other ranks would wait forever in their next collective, and the failed rank in MPI_Finalize);
- `run(main)` does the same for SystemExit with a non-zero status;
- a rank that dies (killed, segfault, out of memory): MPICH's mpiexec (hydra) sees the process end
  without MPI_Finalize and kills the others within about a second. It names the dead process by
  pid ("BAD TERMINATION ... PID 1234"); init() prints the rank -> pid table at start-up (rank 0,
  stderr) so that the pid can be matched to a rank, and `mpiexec -print-all-exitcodes` lists
  every rank's exit status in rank order;
- a rank that hangs, or skips a collective: the others time out (above); one that calls a
  different collective at the same point: the header check (above);
- a rank that returns from its program while others still expect collectives: at exit every rank
  meets the others in a barrier (on a private communicator) with the same timeout; a rank that
  waited there in vain says so and aborts the job instead of hanging in MPI_Finalize.

mpi4py is imported on first use (init() or constructing an MPICommunicator), never when this
module is imported: single-process use needs no MPI installed.
"""
import atexit
import collections
import faulthandler
import math
import os
import signal
import socket
import sys
import threading
import time
import traceback
import warnings

import numpy as np

from tinygrad_bn.distributed.comm import (Communicator, _check_op, get_default_communicator,
                                          set_default_communicator)

DEFAULT_TIMEOUT = 300.0
TIMEOUT_ENV = "TINYGRAD_BN_TIMEOUT"
CUDA_AWARE_ENV = "TINYGRAD_BN_MPI_CUDA_AWARE"
VERBOSE_ENV = "TINYGRAD_BN_DIST_VERBOSE"
INSTALL_HINT = "pip install -e '.[dist]'  (mpi4py and the mpich wheel, which provides mpiexec)"

#: environment variables that MPI launchers set in the processes they start (MPICH/hydra and
#: Intel MPI: PMI_*, Open MPI: OMPI_*, PMIx: PMIX_*, Slurm: PMI_* via srun --mpi)
_LAUNCHER_ENV = ("PMI_RANK", "PMI_SIZE", "PMI_FD", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE",
                 "MPI_LOCALNRANKS", "HYDI_CONTROL_FD")

_MPI = None


class _State:
    world = None          # the MPICommunicator made by init()
    exit_comm = None      # a private duplicate of COMM_WORLD for the exit barrier
    aborting = False      # set once abort() starts: no exit barrier after that
    table = ()            # [(host, pid)] per world rank, for messages
    local_rank = 0        # this rank's index among the ranks on its machine
    local_size = 1


_state = _State()


def _mpi():
    """mpi4py's MPI module, imported (and MPI initialised) on first use."""
    global _MPI
    if _MPI is None:
        try:
            from mpi4py import MPI
        except ImportError as e:
            raise ImportError(f"tinygrad_bn.distributed: MPI support needs mpi4py and an MPI "
                              f"library; install them with: {INSTALL_HINT}") from e
        _MPI = MPI
    return _MPI


def launched_by_mpi():
    """True when this process was started by an MPI launcher (mpiexec, srun): it then expects
    MPI_Init to join it to the other ranks."""
    return any(name in os.environ for name in _LAUNCHER_ENV)


def _timeout_from_env():
    text = os.environ.get(TIMEOUT_ENV)
    if text is None or text.strip() == "":
        return DEFAULT_TIMEOUT
    if text.strip().lower() in ("none", "inf", "0"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={text!r}: expected seconds (a number), 0 or 'none' "
                         f"to wait forever") from None
    return None if value <= 0 else value


def _resolve_timeout(timeout, where):
    """Seconds as a float, or None for "wait forever" (given as 0 or math.inf); timeout=None means
    the default: $TINYGRAD_BN_TIMEOUT, else DEFAULT_TIMEOUT."""
    if timeout is None:
        return _timeout_from_env()
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout != timeout:
        raise TypeError(f"{where}: timeout must be a number of seconds (0 or math.inf: wait "
                        f"forever) or None for the default, got {timeout!r}")
    return None if timeout <= 0 or timeout == float("inf") else float(timeout)


def _detect_cuda_aware():
    """Conservative: True only when asked for (environment) or when mpi4py says so."""
    text = os.environ.get(CUDA_AWARE_ENV)
    if text is not None:
        return text.strip().lower() in ("1", "true", "yes", "on")
    query = getattr(_mpi(), "Query_cuda_support", None)  # newer mpi4py: MPIX_Query_cuda_support
    if query is None:
        return False
    try:
        return bool(query())
    except Exception:  # noqa: BLE001 - any doubt means staging
        return False


def _who(rank=None):
    """'rank r (pid p on host)' for messages."""
    world_rank = _world_rank() if rank is None else rank
    if _state.table and 0 <= world_rank < len(_state.table):
        host, pid = _state.table[world_rank]
        return f"rank {world_rank} (pid {pid} on {host})"
    return f"rank {world_rank} (pid {os.getpid()} on {socket.gethostname()})"


def _world_rank():
    if _MPI is None:
        return 0
    try:
        return _MPI.COMM_WORLD.Get_rank()
    except Exception:  # noqa: BLE001 - MPI finalized: messages only
        return 0


def _world_size():
    if _MPI is None:
        return 1
    try:
        return _MPI.COMM_WORLD.Get_size()
    except Exception:  # noqa: BLE001
        return 1


def _write(text):
    """To stderr, each line prefixed with this rank (output of several ranks interleaves)."""
    prefix = f"[rank {_world_rank()}] "
    lines = text.rstrip("\n").split("\n")
    try:
        sys.stdout.flush()
        sys.stderr.write("".join(prefix + line + "\n" for line in lines))
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - a closed stderr must not stop the abort
        pass


def abort(message=None, code=1):
    """Print `message` (prefixed with this rank) and end the whole job: MPI_Abort makes mpiexec
    kill every rank. Never returns. Without MPI (one process) it exits this process."""
    _state.aborting = True
    if message:
        _write(message)
    if _MPI is not None and _MPI.Is_initialized() and not _MPI.Is_finalized():
        # mpiexec forwards each rank's output through a pipe; MPI_Abort makes it kill every
        # process at once, and what was still in the pipe could be lost: give it a moment
        time.sleep(0.5)
        _MPI.COMM_WORLD.Abort(int(code) if isinstance(code, int) and code != 0 else 1)
    os._exit(int(code) if isinstance(code, int) and code != 0 else 1)


def _wait(request, timeout, what, timeout_hint=""):
    """Complete an MPI request, or abort the job after `timeout` seconds (None: wait forever)."""
    if timeout is None:
        request.Wait()
        return
    start = time.monotonic()
    deadline = start + timeout
    # Two phases. First (up to 50 ms) test, and between tests give the CPU to any other process
    # that wants it (sched_yield returns at once when none does): on a loaded or oversubscribed
    # machine that may be the very rank we wait for - a loop that only tests was measured 100x
    # slower here (2 ranks, 2 busy cores). Then test with a growing pause of at most 1 ms, so
    # that a long wait (rank 0 writing a checkpoint) costs no CPU.
    while True:
        if request.Test():
            return
        if time.monotonic() - start > 5e-2:
            break
        os.sched_yield()
    delay = 1e-4
    while not request.Test():
        if time.monotonic() > deadline:
            frames = [f for f in traceback.extract_stack()[:-1] if f.filename != __file__]
            where = ("\nWhere this rank was waiting:\n" + "".join(traceback.format_list(frames))
                     if frames else "")
            abort(f"tinygrad_bn.distributed: {_who()}: {what} did not complete within "
                  f"{timeout:g} s{timeout_hint}; aborting the job.{where}")
        time.sleep(delay)
        delay = min(delay * 2, 1e-3)


_KINDS = ("barrier", "all_gather", "all_reduce", "broadcast")
_OPS = (None, "sum", "max", "min")


def _describe(header):
    kind, op, dtype, nbytes = (int(v) for v in header)
    if not 0 <= kind < len(_KINDS) or not 0 <= op < len(_OPS):
        return f"an unknown call {list(header)}"
    text = _KINDS[kind] + (f"({_OPS[op]})" if op else "")
    if kind:
        text += f" of {nbytes} bytes of {np.dtype(chr(dtype)) if dtype else '?'}"
    return text


_PEERS_HINT = (": another rank failed, hangs, or called a different collective (every rank must "
               "make the same collectives in the same order; raise the limit with "
               f"{TIMEOUT_ENV} or init(timeout=...) if a rank is just slow)")


class MPICommunicator(Communicator):
    """One rank's handle on an MPI communicator (default: a duplicate of MPI.COMM_WORLD).

    timeout: seconds a collective may wait for the other ranks before the job is aborted (None:
    $TINYGRAD_BN_TIMEOUT or 300; 0 or math.inf: forever, and `.timeout` is then None).
    cuda_aware: hand CuPy arrays to MPI directly (None: detect, conservatively).
    `calls` counts this rank's collectives by kind ({"all_gather": 3, "all_reduce": 2})."""

    def __init__(self, mpi_comm=None, timeout=None, cuda_aware=None):
        MPI = _mpi()
        self.comm = MPI.COMM_WORLD.Dup() if mpi_comm is None else mpi_comm
        self._rank = self.comm.Get_rank()
        self._size = self.comm.Get_size()
        self.timeout = _resolve_timeout(timeout, "MPICommunicator")
        self.cuda_aware = _detect_cuda_aware() if cuda_aware is None else bool(cuda_aware)
        self.calls = collections.Counter()

    @property
    def rank(self):
        return self._rank

    @property
    def world_size(self):
        return self._size

    def __repr__(self):
        return (f"MPICommunicator(rank={self._rank}, world_size={self._size}, "
                f"timeout={self.timeout}, cuda_aware={self.cuda_aware})")

    # ---- buffers: host staging or device pointers --------------------------------------------
    def _send_buffer(self, array):
        """(contiguous array MPI can read, function mapping a result back to array's device)."""
        if isinstance(array, np.ndarray):
            return np.ascontiguousarray(array), (lambda a: a)
        from tinygrad_bn import backend
        if not backend.is_array(array):
            raise TypeError(f"MPICommunicator: expected an array (NumPy, CuPy or fakegpu), got "
                            f"{type(array).__name__}")
        device = backend.device_of(array)
        if self.cuda_aware and device.type == "cuda":
            xp = backend.xp_of(array)
            xp.cuda.get_current_stream().synchronize()  # MPI reads memory, not the stream's queue
            return xp.ascontiguousarray(array), (lambda a: a)
        host = np.ascontiguousarray(backend.to_numpy(array))
        return host, (lambda a: backend.to_device(a, device))

    @staticmethod
    def _empty_like(buf, shape):
        if isinstance(buf, np.ndarray):
            return np.empty(shape, dtype=buf.dtype)
        from tinygrad_bn import backend
        return backend.xp_of(buf).empty(shape, dtype=buf.dtype)

    @staticmethod
    def _bytes(buf):
        """A flat uint8 view: gathers and broadcasts move bytes, exact for every dtype."""
        return buf.reshape(-1).view(np.uint8)

    def _collective(self, kind, payload=None, nbytes=0, dtype=None, op=None, timeout="default"):
        """Meet the other ranks at this collective, then run `payload` (a blocking MPI call).

        First every rank contributes a 4-number header (kind, op, dtype, bytes) to a small
        non-blocking all_gather that is polled with the timeout: when it completes, every rank
        has arrived, so the payload cannot hang (and runs MPI's fast blocking algorithm), and
        every rank sees whether all of them called the same collective with the same sizes - a
        mismatch is a RuntimeError on every rank instead of a hang or garbage."""
        MPI = _mpi()
        self.calls[kind] += 1
        header = np.array([_KINDS.index(kind), _OPS.index(op), ord(dtype.char) if dtype else 0,
                           nbytes], dtype=np.int64)
        headers = np.empty((self._size, 4), dtype=np.int64)
        what = f"{kind} #{self.calls[kind]} on a communicator of {self._size} ranks"
        _wait(self.comm.Iallgather([header, MPI.INT64_T], [headers, MPI.INT64_T]),
              self.timeout if timeout == "default" else timeout, what, _PEERS_HINT)
        if (headers != headers[0]).any():
            calls = "; ".join(f"rank {r}: {_describe(h)}" for r, h in enumerate(headers))
            raise RuntimeError(f"MPICommunicator: mismatched collectives ({what} on this rank "
                               f"{self._rank}): {calls}. Every rank must make the same "
                               f"collectives in the same order, with arrays of the same shape "
                               f"and dtype")
        if payload is not None and nbytes:
            payload()

    # ---- the collectives ---------------------------------------------------------------------
    def all_gather(self, array):
        """[array of rank 0, array of rank 1, ...] (same shape and dtype on every rank)."""
        send, back = self._send_buffer(array)
        recv = self._empty_like(send, (self._size,) + tuple(send.shape))
        MPI = _mpi()
        self._collective("all_gather", lambda: self.comm.Allgather(
            [self._bytes(send), MPI.BYTE], [self._bytes(recv), MPI.BYTE]), send.nbytes, send.dtype)
        return [back(recv[r]) for r in range(self._size)]

    def all_reduce(self, array, op="sum"):
        """The element-wise `op` ("sum", "max", "min") over ranks, as a new array."""
        _check_op(op, "MPICommunicator.all_reduce")
        MPI = _mpi()
        send, back = self._send_buffer(array)
        dtype = send.dtype
        if dtype.kind not in "fiu":
            raise TypeError(f"MPICommunicator.all_reduce: cannot reduce dtype {dtype}; expected a "
                            f"floating-point or integer array")
        if dtype == np.float16:  # no standard MPI type: reduce in float32
            send = send.astype(np.float32)
        recv = self._empty_like(send, send.shape)
        mpi_op = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[op]
        self._collective("all_reduce", lambda: self.comm.Allreduce(send, recv, mpi_op),
                         send.nbytes, dtype, op)
        return back(recv.astype(dtype, copy=False))

    def broadcast(self, array, root=0):
        """A new array holding rank `root`'s `array` (every rank passes one of the same shape
        and dtype)."""
        if not 0 <= root < self._size:
            raise ValueError(f"MPICommunicator.broadcast: root {root} is not a rank of this "
                             f"communicator (0..{self._size - 1})")
        send, back = self._send_buffer(array)
        buf = send.copy() if self._rank == root else self._empty_like(send, send.shape)
        MPI = _mpi()
        self._collective("broadcast", lambda: self.comm.Bcast([self._bytes(buf), MPI.BYTE],
                                                              root=root), buf.nbytes, buf.dtype)
        return back(buf)

    def barrier(self, timeout=None):
        """Wait until every rank got here (timeout: seconds, 0 or math.inf for ever; None: the
        communicator's). Give a long one around work only some ranks do (a download on rank 0)."""
        limit = self.timeout if timeout is None else _resolve_timeout(timeout, "barrier")
        self._collective("barrier", timeout=limit)

    # ---- sub-communicators -------------------------------------------------------------------
    def split(self, color, key=None):
        """MPI_Comm_split: ranks passing the same `color` form a new communicator, ordered by
        `key` (default: their rank here). color=None: this rank joins none and gets None. Every
        rank of this communicator must call it."""
        MPI = _mpi()
        if color is not None and (not isinstance(color, int) or color < 0):
            raise ValueError(f"MPICommunicator.split: color must be a non-negative int or None, "
                             f"got {color!r}")
        self.barrier()  # everyone is here (with a timeout): the blocking split below cannot hang
        sub = self.comm.Split(MPI.UNDEFINED if color is None else color,
                              self._rank if key is None else int(key))
        if sub == MPI.COMM_NULL:
            return None
        return MPICommunicator(sub, math.inf if self.timeout is None else self.timeout,
                               self.cuda_aware)

    def new_group(self, ranks):
        """A communicator over `ranks` (ranks of this communicator; the new rank of a member is
        its position in the list), like torch.distributed.new_group. Returns None on the other
        ranks. Every rank of this communicator must call it, with the same list."""
        ranks = [int(r) for r in ranks]
        if not ranks or len(set(ranks)) != len(ranks) or not all(0 <= r < self._size for r in ranks):
            raise ValueError(f"MPICommunicator.new_group: ranks must be distinct ranks of this "
                             f"communicator (0..{self._size - 1}), got {ranks}")
        member = self._rank in ranks
        return self.split(0 if member else None, ranks.index(self._rank) if member else 0)


# ---- the process-wide setup ----------------------------------------------------------------
def init(timeout=None, cuda_aware=None, verbose=None, install_handlers=True):
    """Join the MPI job and make its world the default communicator; returns it.

    Call it once at the start of every rank (a second call returns the same communicator).
    timeout: seconds a collective may wait (None: $TINYGRAD_BN_TIMEOUT or 300; 0 or math.inf: forever).
    verbose: print the rank -> pid table on rank 0 (default: on, unless TINYGRAD_BN_DIST_VERBOSE=0).
    install_handlers: the excepthook, SIGTERM message, faulthandler and exit barrier described in
    the module docstring.

    Without mpi4py: in a process that no MPI launcher started, a warning and the single-process
    default communicator (world size 1: every layer behaves as without distribution); under
    mpiexec, ImportError."""
    if _state.world is not None:
        return _state.world
    timeout = _resolve_timeout(timeout, "init")
    try:
        MPI = _mpi()
    except ImportError:
        if launched_by_mpi():
            raise
        warnings.warn(f"tinygrad_bn.distributed.init: mpi4py is not installed; running as a "
                      f"single process (install MPI support with: {INSTALL_HINT})", stacklevel=2)
        return get_default_communicator()
    world = MPICommunicator(None, math.inf if timeout is None else timeout, cuda_aware)
    if world.world_size > 1:
        world.barrier()  # all ranks are here: the blocking set-up calls below cannot hang
        _state.exit_comm = MPI.COMM_WORLD.Dup()
        _state.table = world.comm.allgather((socket.gethostname(), os.getpid()))
        node = world.comm.Split_type(MPI.COMM_TYPE_SHARED)  # the ranks sharing this machine
        _state.local_rank, _state.local_size = node.Get_rank(), node.Get_size()
        node.Free()
    else:
        _state.table = [(socket.gethostname(), os.getpid())]
    _state.world = world
    set_default_communicator(world)
    if install_handlers:
        _install_handlers()
    if verbose is None:
        verbose = os.environ.get(VERBOSE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")
    if verbose and world.rank == 0 and world.world_size > 1:
        ranks = ", ".join(f"{r}: pid {pid} on {host}" for r, (host, pid) in enumerate(_state.table))
        limit = "no timeout" if world.timeout is None else f"collective timeout {world.timeout:g} s"
        _write(f"tinygrad_bn.distributed: MPI world of {world.world_size} ranks ({ranks}); {limit}")
    return world


def get_world():
    """The communicator init() made, or None before init()."""
    return _state.world


def local_rank():
    """This rank's index among the ranks on the same machine (0 without distribution): pick
    the GPU with it, e.g. f"cuda:{local_rank() % tinygrad_bn.cuda.device_count()}"."""
    return _state.local_rank


def rank():
    """This process's rank in the default communicator (0 without distribution)."""
    return get_default_communicator().rank


def world_size():
    """The number of ranks of the default communicator (1 without distribution)."""
    return get_default_communicator().world_size


def run(fn, *args, **kwargs):
    """fn(*args, **kwargs), but an exception or a non-zero SystemExit on this rank ends the whole
    job (MPI_Abort) with a message naming the rank, instead of leaving the others waiting. With
    one rank (or before init) it is just the call."""
    try:
        return fn(*args, **kwargs)
    except SystemExit as e:
        if _state.world is None or _state.world.world_size == 1 or e.code in (None, 0):
            raise
        code = e.code if isinstance(e.code, int) else 1
        abort(f"tinygrad_bn.distributed: {_who()} exited with status {e.code!r}; aborting the "
              f"other {_world_size() - 1} rank(s)", code)
    except BaseException as e:
        if _state.world is None or _state.world.world_size == 1:
            raise
        _report_and_abort(type(e), e, e.__traceback__)


def _report_and_abort(exc_type, exc, tb):
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    abort(text + f"tinygrad_bn.distributed: {_who()} raised {exc_type.__name__}: {exc}; "
                 f"aborting the other {_world_size() - 1} rank(s) (MPI_Abort)", 1)


_handlers_installed = False


def _install_handlers():
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    previous_hook = sys.excepthook

    def excepthook(exc_type, exc, tb):
        world = _state.world
        if world is None or world.world_size == 1 or _state.aborting:
            return previous_hook(exc_type, exc, tb)
        _report_and_abort(exc_type, exc, tb)

    sys.excepthook = excepthook
    if not faulthandler.is_enabled():
        try:
            faulthandler.enable()  # a segfault prints the Python stack before the rank dies
        except (RuntimeError, ValueError, AttributeError):  # no usable stderr (pytest capture)
            pass
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    atexit.register(_exit_barrier)


def _on_sigterm(signum, frame):
    """Say which rank was terminated, then die of the signal as before."""
    _write(f"tinygrad_bn.distributed: {_who()} received SIGTERM (from mpiexec when the job is "
           f"being ended, or from outside)")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _exit_barrier():
    """At exit: meet the other ranks (with the timeout) before MPI_Finalize, which would otherwise
    wait forever for a rank that is still expecting collectives."""
    world, comm = _state.world, _state.exit_comm
    if world is None or comm is None or _state.aborting or _MPI is None or _MPI.Is_finalized():
        return
    _wait(comm.Ibarrier(), world.timeout,
          "the end-of-program barrier (this rank is exiting normally)",
          ": another rank is still running and expects collectives from this one (a rank "
          "left its training loop early, or the ranks ran different numbers of steps), or "
          "it failed")
