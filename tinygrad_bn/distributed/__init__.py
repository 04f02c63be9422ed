"""Distributed training support: the communicator interface (comm.py) that SyncBatchNorm uses,
and an in-process multi-rank fake for tests (fake.py, imported on demand:
`from tinygrad_bn.distributed.fake import FakeWorld`).

Import-light on purpose: nothing here imports mpi4py; an MPI transport plugs in as another
Communicator subclass.
"""
from tinygrad_bn.distributed.comm import (Communicator, SingleProcess, get_default_communicator,
                                          get_rank, get_world_size, is_initialized,
                                          set_default_communicator, use_communicator)

__all__ = ["Communicator", "SingleProcess", "get_default_communicator", "set_default_communicator",
           "use_communicator", "is_initialized", "get_rank", "get_world_size"]
