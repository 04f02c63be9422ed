"""DistributedDataParallel: one model replica per rank, each on its own shard of the batch.

    model = DistributedDataParallel(net)       # rank 0's parameters and buffers go to every rank
    optimizer = SGD(model.parameters(), lr=0.1)
    for x, y in loader:                        # each rank's own shard (DistributedSampler)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        model.sync_gradients()                 # .grad <- average of .grad over the ranks
        optimizer.step()                       # same gradient, same parameters: same update

Why the ranks stay identical: they start from the same parameters (broadcast at wrap time), and
every step each applies the same update (the averaged gradient) with the same optimizer, so they
never drift apart. The average of the ranks' mean losses' gradients is the gradient of the mean
loss over the union of the shards when the shards are equal in size, so W ranks with batch B
each take the steps of one process with batch W*B (exactly, when BatchNorm is SyncBatchNorm;
plain BatchNorm normalises each rank's shard by itself).

The gradient sync is one explicit call, not hidden in backward: this engine has no "backward
finished" callback, and a per-parameter hook fires for each use of a parameter, not once when
its gradient is complete. `sync_gradients()` therefore runs after backward, on the accumulated
`.grad`s: flattened into buckets of about `bucket_cap_mb` (one flat array per bucket, parameters
in registration order, one dtype and device per bucket), one all_reduce(SUM) per bucket, divided
by the world size and handed back as views of the bucket. Forgetting the call is caught: a
gradient hook on every parameter records that backward ran, and the next forward raises until
sync_gradients() has been called. To accumulate gradients over several backward passes, run them
inside `with model.no_sync():` (or call sync_gradients() only once, after the last).

A parameter that got no gradient on some rank counts as zero there; one that got none on any
rank keeps `.grad = None` (per parameter, the number of ranks that had one travels in the bucket).

Buffers (BatchNorm's running statistics): like PyTorch's broadcast_buffers=True, rank 0's buffers
are broadcast before every forward that records a graph (training), one message per buffer
dtype; with SyncBatchNorm they are already equal on every rank. `sync_buffers()` does it on
demand (before evaluating, or saving a checkpoint from rank 0).

With one rank (or no distributed set-up) the wrapper sends nothing: sync_gradients() only clears
the check. `state_dict()` keys are the module's with a "module." prefix, as in PyTorch; save
`model.module.state_dict()` for a checkpoint that loads into the bare model.
"""
import collections
import contextlib
import weakref

import numpy as np

from tinygrad_bn import backend
from tinygrad_bn.autograd.grad_mode import is_grad_enabled
from tinygrad_bn.distributed.comm import Communicator, get_default_communicator
from tinygrad_bn.nn.module import Module
from tinygrad_bn.tensor import Tensor


class DistributedDataParallel(Module):
    """DistributedDataParallel(module, communicator=None, bucket_cap_mb=25, broadcast_buffers=True).

    communicator: the group to average over (default: the default communicator at wrap time).
    Every rank must wrap the same architecture (checked), and then call forward, backward and
    sync_gradients the same number of times."""

    def __init__(self, module, communicator=None, bucket_cap_mb=25, broadcast_buffers=True):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel: expected an nn.Module to wrap, got "
                            f"{type(module).__name__}")
        if isinstance(module, DistributedDataParallel):
            raise TypeError("DistributedDataParallel: the module is already wrapped")
        if communicator is not None and not isinstance(communicator, Communicator):
            raise TypeError(f"DistributedDataParallel: communicator must be a tinygrad_bn."
                            f"distributed.Communicator or None, got {type(communicator).__name__}")
        if isinstance(bucket_cap_mb, bool) or not isinstance(bucket_cap_mb, (int, float)) \
                or not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be a positive number, "
                             f"got {bucket_cap_mb!r}")
        self.module = module
        self.comm = communicator if communicator is not None else get_default_communicator()
        self.bucket_cap_mb = bucket_cap_mb
        self.broadcast_buffers = bool(broadcast_buffers)
        self._params = [p for p in module.parameters() if p.requires_grad]
        self.buckets = _make_buckets(self._params, int(bucket_cap_mb * 2 ** 20))
        self._needs_sync = False  # a backward outside no_sync() since the last sync_gradients()
        self._no_sync = 0
        self._hooks = []
        if self._distributed():
            self._check_same_model()
            self._broadcast([t for _, t in _named_state(module)])
        self._register_hooks()

    def _distributed(self):
        return self.comm.initialized and self.comm.world_size > 1

    # ---- set-up ------------------------------------------------------------------------------
    def _check_same_model(self):
        """Every rank wraps the same architecture: compare a few counts (one small all_gather)."""
        state = _named_state(self.module)
        mine = np.array([len(self._params), sum(p.numel() for p in self._params), len(state),
                         sum(t.numel() for _, t in state)], dtype=np.int64)
        rows = self.comm.all_gather(mine)
        for r, row in enumerate(rows):
            if not np.array_equal(row, rows[0]):
                raise RuntimeError(
                    f"DistributedDataParallel: the ranks wrap different models: rank 0 has "
                    f"{rows[0][0]} trainable parameters ({rows[0][1]} values) and {rows[0][2]} "
                    f"parameters+buffers, rank {r} has {row[0]} ({row[1]} values) and {row[2]}")

    def _register_hooks(self):
        ref = weakref.ref(self)

        def on_grad(grad):  # runs during backward, once per gradient reaching a parameter
            ddp = ref()
            if ddp is not None and ddp._no_sync == 0:
                ddp._needs_sync = True
            return None  # the gradient itself is left alone

        for p in self._params:
            self._hooks.append(p.register_hook(on_grad))

    # ---- the three synchronisations ----------------------------------------------------------
    def forward(self, *args, **kwargs):
        if self._needs_sync:
            raise RuntimeError(
                "DistributedDataParallel: backward ran but the gradients were not averaged over "
                "the ranks: call model.sync_gradients() after loss.backward() and before "
                "optimizer.step() (to accumulate gradients over several backward passes, run "
                "them inside `with model.no_sync():`)")
        if self.broadcast_buffers and self.training and is_grad_enabled() and self._distributed():
            self.sync_buffers()
        return self.module(*args, **kwargs)

    def sync_gradients(self):
        """Average every parameter's .grad over the ranks: one all_reduce per bucket. Every rank
        must call it (also a rank whose backward gave no gradient)."""
        self._needs_sync = False
        if not self._distributed():
            return
        world = self.comm.world_size
        for bucket in self.buckets:
            first = bucket[0]
            xp = first.xp
            sizes = [p.numel() for p in bucket]
            flat = xp.zeros(sum(sizes) + len(bucket), dtype=first.dtype)
            have = flat[sum(sizes):]  # 1 where this rank has a gradient
            offset = 0
            for i, (p, n) in enumerate(zip(bucket, sizes)):
                if p.grad is not None:
                    flat[offset:offset + n] = p.grad.data.reshape(-1)
                    have[i] = 1
                offset += n
            total = self.comm.all_reduce(flat)
            total /= world
            counts = backend.to_numpy(total[sum(sizes):])  # one small device-to-host copy
            offset = 0
            for i, (p, n) in enumerate(zip(bucket, sizes)):
                if counts[i] > 0:  # some rank had a gradient
                    # a view of the bucket: nothing writes a .grad in place (optimizers make
                    # new arrays, backward adds into a new one, zero_grad replaces)
                    p.grad = Tensor._make(total[offset:offset + n].reshape(p.shape))
                offset += n

    def sync_buffers(self, root=0):
        """Copy rank `root`'s buffers (running statistics) to every rank, in place."""
        if self._distributed():
            self._broadcast([b for b in self.module.buffers() if b is not None], root)

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside this block accumulate gradients locally without the check;
        call sync_gradients() after the last one (as usual)."""
        self._no_sync += 1
        try:
            yield
        finally:
            self._no_sync -= 1

    def _broadcast(self, tensors, root=0):
        """Broadcast tensors from `root`, flattened per (device, dtype): one message each."""
        groups = collections.OrderedDict()
        for t in tensors:
            groups.setdefault((str(t.device), str(t.dtype)), []).append(t)
        for group in groups.values():
            xp = group[0].xp
            flat = xp.concatenate([t.data.reshape(-1) for t in group])
            flat = _broadcast_array(self.comm, flat, root)
            offset = 0
            for t in group:
                n = t.numel()
                t.data[...] = flat[offset:offset + n].reshape(t.shape)  # in place: optimizers
                t._version[0] += 1                                     # hold these objects
                offset += n

    def extra_repr(self):
        return (f"world_size={self.comm.world_size}, buckets={len(self.buckets)}, "
                f"bucket_cap_mb={self.bucket_cap_mb}")


def _broadcast_array(comm, array, root):
    """Rank root's array on every rank: the communicator's broadcast when it has one (MPI), else
    the interface's all_gather (the fake world), which moves W times the data."""
    broadcast = getattr(comm, "broadcast", None)
    return broadcast(array, root) if broadcast is not None else comm.all_gather(array)[root]


def _named_state(module):
    """(name, tensor) of every parameter and buffer, in state_dict order."""
    out = [(n, p) for n, p in module.named_parameters()]
    out += [(n, b) for n, b in module.named_buffers() if b is not None]
    return out


def _make_buckets(params, cap_bytes):
    """Consecutive parameters of one device and dtype, at most cap_bytes each (a larger parameter
    gets a bucket of its own)."""
    buckets, current, size, key = [], [], 0, None
    for p in params:
        nbytes = p.numel() * p.data.dtype.itemsize
        p_key = (str(p.device), str(p.dtype))
        if current and (p_key != key or size + nbytes > cap_bytes):
            buckets.append(current)
            current, size = [], 0
        current.append(p)
        size += nbytes
        key = p_key
    if current:
        buckets.append(current)
    return buckets
