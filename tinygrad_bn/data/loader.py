"""DataLoader: batches of a dataset as Tensors on a device, shuffled reproducibly per epoch.

Shuffling and random transforms of epoch e draw from a generator seeded with seed + e, so an
epoch's batches depend only on (seed, e): runs are reproducible, and a resumed run calls
set_epoch(e) to get exactly the batches the interrupted run would have seen.
"""
import math

import numpy as np

from tinygrad_bn import backend
from tinygrad_bn.tensor import Tensor


class DataLoader:
    """DataLoader(dataset, batch_size=1, shuffle=False, drop_last=False, seed=None, device="cpu",
    transform=None): iterate to get one tuple of Tensors per batch ((images, labels) for image sets).

    seed=None takes tinygrad_bn.manual_seed's seed (or fresh entropy when it was never called),
    fixed at construction. transform(batch, rng=...) runs on the host NumPy batch of the first
    array (the inputs) before it moves to `device`. An array-backed dataset (`.arrays`) is batched
    by indexing every array with the batch's index array; any other dataset sample by sample.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=None,
                 device="cpu", transform=None, sampler=None):
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"DataLoader: batch_size should be a positive integer value, but got "
                             f"batch_size={batch_size!r}")
        if seed is not None and (not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"DataLoader: seed must be a non-negative int or None, got {seed!r}")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle")
        self.sampler = sampler  # an iterable of indices (DistributedSampler); it does the shuffling
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.device = backend.as_device(device)
        self.transform = transform
        self.seed = _resolve_seed(seed)
        self.epoch = 0

    def set_epoch(self, epoch):
        """The next iteration yields epoch `epoch`'s batches (then epochs advance by one)."""
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"DataLoader.set_epoch: epoch must be a non-negative int, got {epoch!r}")
        self.epoch = int(epoch)

    def __len__(self):
        n = len(self.sampler) if self.sampler is not None else len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        rng = np.random.default_rng(self.seed + epoch)
        if self.sampler is not None:
            if hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(epoch)  # the sampler's permutation follows the loader's epoch
            order = np.asarray(list(self.sampler), dtype=np.int64)
        else:
            n = len(self.dataset)
            order = rng.permutation(n) if self.shuffle else np.arange(n)
        stop = len(self) * self.batch_size
        for start in range(0, stop, self.batch_size):
            yield self._batch(order[start:start + self.batch_size], rng)

    def _batch(self, indices, rng):
        arrays = list(self._fetch(indices))
        if self.transform is not None:
            arrays[0] = self.transform(backend.to_numpy(arrays[0]), rng=rng)
        return tuple(Tensor(a, device=self.device) for a in arrays)

    def _fetch(self, indices):
        """The batch's arrays: vectorised indexing when the dataset is array-backed."""
        arrays = getattr(self.dataset, "arrays", None)
        if arrays is not None:
            return [a[backend.to_device(indices, backend.device_of(a))] if backend.is_array(a)
                    else np.asarray(a)[indices] for a in arrays]
        samples = [self.dataset[int(i)] for i in indices]
        if not isinstance(samples[0], (tuple, list)):
            samples = [(s,) for s in samples]
        return [_stack([s[field] for s in samples]) for field in range(len(samples[0]))]


def _stack(values):
    """One host batch array from per-sample values (arrays, Tensors or Python numbers)."""
    values = [v.data if isinstance(v, Tensor) else v for v in values]
    stacked = np.stack([backend.to_numpy(v) if backend.is_array(v) else np.asarray(v) for v in values])
    if stacked.dtype == np.float64 and not backend.is_array(values[0]):
        stacked = stacked.astype(np.float32)  # Python floats: PyTorch's default float32
    return stacked


def _resolve_seed(seed):
    if seed is not None:
        return int(seed)
    if backend.initial_seed() is not None:
        return backend.initial_seed()
    return int(np.random.SeedSequence().entropy % (2 ** 63))
