"""The communicator interface: the two collectives SyncBatchNorm (and, later, DDP) need.

A Communicator is one rank's handle on a group of processes (or, in tests, threads):

    comm.rank, comm.world_size
    comm.all_gather(array)          -> [array of rank 0, array of rank 1, ...]   (rank order)
    comm.all_reduce(array, "sum")   -> the element-wise sum over ranks, the same on every rank
    comm.initialized                -> False only for the "no distributed setup" stand-in

Every rank must call the same collectives in the same order with arrays of the same shape and
dtype (PyTorch/MPI rules; a rank with nothing to contribute still sends zeros). The arrays are
those of the caller's array module (NumPy, CuPy, fakegpu); a transport that needs host memory
copies them itself.

A communicator over a subset of the ranks (MPI's `Comm.Split`, torch's `new_group`) is simply
another Communicator; `SyncBatchNorm(process_group=comm)` takes one.

The default communicator is what layers use when given none. It is `SingleProcess()` (world size
1, not initialized) until `set_default_communicator` installs another; `use_communicator(comm)`
overrides it for the current thread only (the fake multi-rank world runs one thread per rank).
"""
import abc
import threading

REDUCE_OPS = ("sum", "max", "min")


class Communicator(abc.ABC):
    """One rank's view of a process group. Subclasses implement the two collectives."""

    #: False only for the stand-in used when nothing distributed was set up (like
    #: torch.distributed.is_initialized() being False): layers then never synchronise
    initialized = True

    @property
    @abc.abstractmethod
    def rank(self):
        """This process's index in the group, 0 <= rank < world_size."""

    @property
    @abc.abstractmethod
    def world_size(self):
        """The number of ranks in the group."""

    @abc.abstractmethod
    def all_gather(self, array):
        """A list of every rank's `array` (same shape and dtype on all ranks), in rank order."""

    @abc.abstractmethod
    def all_reduce(self, array, op="sum"):
        """The element-wise reduction (`op` in "sum", "max", "min") of every rank's `array`,
        returned as a new array (the argument is not modified)."""

    def barrier(self):
        """Wait until every rank got here (a tiny all_gather by default)."""
        import numpy as np
        self.all_gather(np.zeros(1))

    # a communicator is a handle on shared state, not data: copying a model that holds one
    # (deepcopy of a SyncBatchNorm with a process_group) shares it
    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __repr__(self):
        return f"{type(self).__name__}(rank={self.rank}, world_size={self.world_size})"


def _check_op(op, where):
    if op not in REDUCE_OPS:
        raise ValueError(f"{where}: unsupported reduce op {op!r}; expected one of {', '.join(REDUCE_OPS)}")


class SingleProcess(Communicator):
    """World size 1: all_gather returns [array], all_reduce returns a copy. Not `initialized`,
    so SyncBatchNorm falls back to plain BatchNorm without calling it at all."""

    initialized = False

    @property
    def rank(self):
        return 0

    @property
    def world_size(self):
        return 1

    def all_gather(self, array):
        return [array.copy()]

    def all_reduce(self, array, op="sum"):
        _check_op(op, "SingleProcess.all_reduce")
        return array.copy()


_global_default = SingleProcess()
_thread_default = threading.local()


def get_default_communicator():
    """The communicator layers use when given none: this thread's (see use_communicator), else
    the process-wide one (set_default_communicator), else SingleProcess()."""
    comm = getattr(_thread_default, "comm", None)
    return comm if comm is not None else _global_default


def set_default_communicator(comm):
    """Install `comm` as the process-wide default (None restores SingleProcess()). Returns the
    previous default."""
    global _global_default
    if comm is not None and not isinstance(comm, Communicator):
        raise TypeError(f"set_default_communicator: expected a Communicator or None, got "
                        f"{type(comm).__name__}")
    previous = _global_default
    _global_default = comm if comm is not None else SingleProcess()
    return previous


class use_communicator:
    """`with use_communicator(comm):` makes comm the default for the current thread only."""

    def __init__(self, comm):
        if not isinstance(comm, Communicator):
            raise TypeError(f"use_communicator: expected a Communicator, got {type(comm).__name__}")
        self.comm = comm
        self._previous = []

    def __enter__(self):
        self._previous.append(getattr(_thread_default, "comm", None))
        _thread_default.comm = self.comm
        return self.comm

    def __exit__(self, *exc):
        _thread_default.comm = self._previous.pop()
        return False


def is_initialized():
    """True when the default communicator is a real (or fake multi-rank) one."""
    return get_default_communicator().initialized


def get_rank(comm=None):
    return (comm or get_default_communicator()).rank


def get_world_size(comm=None):
    return (comm or get_default_communicator()).world_size
