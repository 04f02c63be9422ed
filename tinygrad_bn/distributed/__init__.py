"""Distributed training: the communicator interface (comm.py) that SyncBatchNorm and DDP use, an
MPI transport (mpi.py), DistributedDataParallel (ddp.py), DistributedSampler (sampler.py), and an
in-process multi-rank fake for tests (fake.py: `from tinygrad_bn.distributed.fake import
FakeWorld`).

    import tinygrad_bn.distributed as dist
    dist.init()                                   # under `mpiexec -n 2 python train.py`
    sampler = dist.DistributedSampler(train_set)  # this rank's share of the data
    model = dist.DistributedDataParallel(nn.SyncBatchNorm.convert_sync_batchnorm(net))
    ... loss.backward(); model.sync_gradients(); optimizer.step()
    if dist.is_main_process(): print(...)         # log and write files on rank 0 only

Import-light on purpose: importing this package imports neither mpi4py nor the layers. The MPI
names (init, run, abort, MPICommunicator, ...) and DistributedDataParallel / DistributedSampler
are loaded on first use (PEP 562 module __getattr__), and mpi4py only when init() runs; so
single-process use needs no MPI installed, and norms/syncbn.py (which imports comm.py) does not
pull nn/ in a cycle. See docs/distributed.md.
"""
from tinygrad_bn.distributed.comm import (Communicator, SingleProcess, get_default_communicator,
                                          get_rank, get_world_size, is_initialized,
                                          set_default_communicator, use_communicator)

_LAZY = {
    "init": "mpi", "run": "mpi", "abort": "mpi", "MPICommunicator": "mpi", "get_world": "mpi",
    "launched_by_mpi": "mpi", "local_rank": "mpi",
    "DistributedDataParallel": "ddp",
    "DistributedSampler": "sampler",
}

__all__ = ["Communicator", "SingleProcess", "get_default_communicator", "set_default_communicator",
           "use_communicator", "is_initialized", "get_rank", "get_world_size", "rank",
           "world_size", "is_main_process", "barrier", "new_group",
           # loaded on first use (_LAZY)
           "init", "run", "abort", "MPICommunicator", "get_world", "launched_by_mpi",
           "local_rank", "DistributedDataParallel", "DistributedSampler"]


def rank():
    """This process's rank in the default communicator (0 without distribution)."""
    return get_default_communicator().rank


def world_size():
    """The number of ranks in the default communicator (1 without distribution)."""
    return get_default_communicator().world_size


def is_main_process():
    """True on rank 0 (and without distribution): the rank that logs and writes files."""
    return get_default_communicator().rank == 0


def barrier():
    """Wait until every rank of the default communicator got here."""
    get_default_communicator().barrier()


def new_group(ranks):
    """A sub-communicator over `ranks` of the default communicator (for SyncBatchNorm's
    process_group); None on ranks outside it. Every rank must call it."""
    comm = get_default_communicator()
    make = getattr(comm, "new_group", None)
    if make is not None and comm.initialized:
        return make(ranks)
    if comm.world_size > 1:
        raise TypeError(f"new_group: the default communicator ({type(comm).__name__}) cannot make "
                        f"sub-communicators (a FakeWorld makes them with world.new_group(ranks))")
    ranks = list(ranks)
    if ranks != [0]:
        raise ValueError(f"new_group: ranks {ranks} do not exist in a world of 1 rank "
                         f"(call tinygrad_bn.distributed.init() under mpiexec first)")
    return comm


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tinygrad_bn.distributed' has no attribute '{name}'")
    import importlib
    value = getattr(importlib.import_module(f"tinygrad_bn.distributed.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
