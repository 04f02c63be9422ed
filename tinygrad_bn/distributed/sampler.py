"""DistributedSampler: each rank's share of a dataset's indices, disjoint across ranks.

PyTorch's rule (torch.utils.data.DistributedSampler), for n samples and W ranks:

    order = permutation of range(n) drawn from seed + epoch       (shuffle=True; else range(n))
    drop_last=False: pad `order` with its own beginning up to total = ceil(n / W) * W
                     (a few samples are then seen twice per epoch; every rank gets as many)
    drop_last=True:  cut `order` to total = floor(n / W) * W        (a few are not seen)
    rank r gets order[r : total : W]                               (num_samples = total / W)

Every rank draws the same permutation (same seed, same epoch), so the shares are disjoint (up to
the padding) and together cover the dataset. Call set_epoch(e) at the start of each epoch on
every rank, or every epoch repeats epoch 0's order.

The permutation is NumPy's `default_rng(seed + epoch).permutation(n)`, the one DataLoader uses
for shuffle=True with the same seed. A loader that batches the sampler's indices in order then
gives rank r, as its k-th batch of size B/W, exactly the elements of the one-process loader's
k-th batch of size B that sit at positions r, r+W, r+2W, ... of it: together the W ranks see the
one-process batches.
"""
import math

import numpy as np

from tinygrad_bn.distributed.comm import get_default_communicator


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"DistributedSampler: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


class DistributedSampler:
    """DistributedSampler(dataset, num_replicas=None, rank=None, shuffle=True, seed=0,
    drop_last=False): iterate to get this rank's indices for the current epoch.

    dataset: a dataset (anything with len()) or its length. num_replicas and rank default to the
    default communicator's world size and rank."""

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False):
        if isinstance(dataset, (int, np.integer)) and not isinstance(dataset, bool):
            self.dataset_len = _check_int(dataset, "the dataset length", 0)
        else:
            try:
                self.dataset_len = len(dataset)
            except TypeError:
                raise TypeError(f"DistributedSampler: expected a dataset (with len()) or its "
                                f"length, got {type(dataset).__name__}") from None
        if num_replicas is None or rank is None:
            comm = get_default_communicator()
            num_replicas = comm.world_size if num_replicas is None else num_replicas
            rank = comm.rank if rank is None else rank
        self.num_replicas = _check_int(num_replicas, "num_replicas", 1)
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) \
                or not 0 <= rank < self.num_replicas:
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval "
                             f"[0, {self.num_replicas - 1}]")
        self.rank = int(rank)
        self.shuffle = bool(shuffle)
        self.seed = _check_int(seed, "seed", 0)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        n, w = self.dataset_len, self.num_replicas
        if self.drop_last and n % w:
            self.num_samples = math.ceil((n - w) / w)  # PyTorch's formula: floor(n / w)
        else:
            self.num_samples = math.ceil(n / w)
        self.total_size = self.num_samples * w

    def set_epoch(self, epoch):
        """Use epoch `epoch`'s permutation (call it on every rank, before iterating)."""
        self.epoch = _check_int(epoch, "epoch", 0)

    def indices(self):
        """This rank's indices for the current epoch, as an int64 NumPy array."""
        n = self.dataset_len
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(n)
        else:
            order = np.arange(n)
        if not self.drop_last:
            pad = self.total_size - n
            if pad and n:
                order = np.concatenate([order, np.resize(order, pad)])  # repeats from the start
        else:
            order = order[:self.total_size]
        return order[self.rank:self.total_size:self.num_replicas].astype(np.int64)

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self):
        return self.num_samples

    def __repr__(self):
        return (f"DistributedSampler(dataset_len={self.dataset_len}, num_replicas="
                f"{self.num_replicas}, rank={self.rank}, shuffle={self.shuffle}, seed={self.seed}, "
                f"drop_last={self.drop_last}, epoch={self.epoch})")
