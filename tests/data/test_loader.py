"""DataLoader: batching, drop_last, len, reproducible and resumable shuffling, devices, the
vectorised path (no per-sample __getitem__) and the per-sample fallback."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn import backend
from tinygrad_bn.data import ArrayDataset, DataLoader, Dataset, TensorDataset
from tinygrad_bn.data.transforms import RandomHorizontalFlip


def _dataset(n=10):
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    y = np.arange(n, dtype=np.int64)
    return TensorDataset(x, y)


def _epoch(loader):
    """The labels of one epoch, batch by batch, as host lists."""
    return [backend.to_numpy(y.data).tolist() for _, y in loader]


def test_batching_in_order_with_last_partial_batch(device):
    loader = DataLoader(_dataset(10), batch_size=3, device=device)
    assert len(loader) == 4
    batches = list(loader)
    assert [x.shape for x, _ in batches] == [(3, 2), (3, 2), (3, 2), (1, 2)]
    for x, y in batches:
        assert x.device == device and y.device == device
        assert x.dtype == np.float32 and y.dtype == np.int64
    assert _epoch(loader) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    np.testing.assert_array_equal(backend.to_numpy(batches[1][0].data), [[6, 7], [8, 9], [10, 11]])


def test_drop_last():
    loader = DataLoader(_dataset(10), batch_size=3, drop_last=True)
    assert len(loader) == 3
    assert _epoch(loader) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert len(DataLoader(_dataset(9), batch_size=3, drop_last=True)) == 3
    assert len(DataLoader(_dataset(2), batch_size=3, drop_last=True)) == 0


def test_shuffle_is_a_permutation_reproducible_per_seed_and_epoch():
    a = DataLoader(_dataset(20), batch_size=6, shuffle=True, seed=7)
    b = DataLoader(_dataset(20), batch_size=6, shuffle=True, seed=7)
    a0, a1 = _epoch(a), _epoch(a)
    assert sorted(sum(a0, [])) == list(range(20))
    assert a0 != a1  # a new order each epoch
    assert _epoch(b) == a0 and _epoch(b) == a1  # same seed, same epochs
    assert _epoch(DataLoader(_dataset(20), batch_size=6, shuffle=True, seed=8)) != a0


def test_set_epoch_resumes_exactly():
    full = DataLoader(_dataset(20), batch_size=4, shuffle=True, seed=3)
    epochs = [_epoch(full) for _ in range(3)]
    resumed = DataLoader(_dataset(20), batch_size=4, shuffle=True, seed=3)
    resumed.set_epoch(2)
    assert _epoch(resumed) == epochs[2]


def test_seed_none_follows_manual_seed():
    tg.manual_seed(11)
    a = _epoch(DataLoader(_dataset(20), batch_size=5, shuffle=True))
    tg.rand(3)  # drawing from the global generator in between changes nothing
    tg.manual_seed(11)
    b = _epoch(DataLoader(_dataset(20), batch_size=5, shuffle=True))
    assert a == b


def test_array_backed_dataset_is_batched_without_getitem():
    class NoGetItem(ArrayDataset):
        def __getitem__(self, index):
            raise AssertionError("the loader must index the arrays, not call __getitem__")

    x = np.random.default_rng(0).random((50, 3, 4, 4), dtype=np.float32)
    loader = DataLoader(NoGetItem(x, np.arange(50)), batch_size=16, shuffle=True, seed=0)
    order = sum(_epoch(loader), [])
    loader.set_epoch(0)
    first_x, _ = next(iter(loader))
    np.testing.assert_array_equal(first_x.numpy(), x[order[:16]])


def test_dataset_on_a_device_is_indexed_there():
    tensors = (tg.arange(12, device="fakegpu").reshape(6, 2), tg.arange(6, device="fakegpu"))
    loader = DataLoader(TensorDataset(*tensors), batch_size=4, shuffle=True, seed=1, device="cpu")
    xs, ys = zip(*loader)
    assert all(x.device == "cpu" for x in xs)
    assert sorted(np.concatenate([y.numpy() for y in ys]).tolist()) == list(range(6))


def test_per_sample_fallback_for_a_plain_dataset(device):
    class Squares(Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.full((2,), i * i, np.float32), i

    xs, ys = zip(*DataLoader(Squares(), batch_size=2, device=device))
    assert [y.shape for y in ys] == [(2,), (2,), (1,)]
    assert ys[0].dtype == np.int64 and xs[0].dtype == np.float32
    np.testing.assert_array_equal(backend.to_numpy(xs[1].data), [[4, 4], [9, 9]])


def test_transform_runs_on_host_and_is_reproducible(device):
    x = np.arange(8 * 1 * 2 * 3, dtype=np.float32).reshape(8, 1, 2, 3)

    def batches(seed):
        loader = DataLoader(TensorDataset(x, np.arange(8)), batch_size=4, seed=seed, device=device,
                            transform=RandomHorizontalFlip(0.5))
        return [backend.to_numpy(b.data) for b, _ in loader]

    first = batches(0)
    assert all(np.array_equal(a, b) for a, b in zip(first, batches(0)))
    flipped = [np.array_equal(img, x[i][..., ::-1]) for i, img in enumerate(np.concatenate(first))]
    unchanged = [np.array_equal(img, x[i]) for i, img in enumerate(np.concatenate(first))]
    assert all(f or u for f, u in zip(flipped, unchanged)) and any(flipped) and any(unchanged)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_batch_size(bad):
    with pytest.raises(ValueError, match="batch_size should be a positive integer"):
        DataLoader(_dataset(), batch_size=bad)


def test_tensor_dataset_checks_lengths_and_indexes_tensors():
    with pytest.raises(ValueError, match="same first dimension"):
        TensorDataset(np.zeros(3), np.zeros(4))
    x, y = _dataset(4)[2]
    assert isinstance(x, tg.Tensor) and x.tolist() == [4.0, 5.0] and y.item() == 2


def test_sampler_gives_the_order_and_follows_the_epoch():
    from tinygrad_bn.distributed import DistributedSampler
    from tinygrad_bn.data import TensorDataset
    data = TensorDataset(tg.arange(10), tg.arange(10))
    sampler = DistributedSampler(10, num_replicas=2, rank=1, shuffle=True, seed=3)
    loader = DataLoader(data, batch_size=2, sampler=sampler)
    assert len(loader) == 3
    first = [int(v) for x, _ in loader for v in x.tolist()]
    second = [int(v) for x, _ in loader for v in x.tolist()]
    sampler.set_epoch(0)
    assert first == list(sampler)
    assert first != second  # the next epoch reshuffles (fixed seed: deterministic)
    with pytest.raises(ValueError, match="mutually exclusive with shuffle"):
        DataLoader(data, batch_size=2, sampler=sampler, shuffle=True)
