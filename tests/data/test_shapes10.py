"""Shapes10: determinism, balance, value range, dtypes, and disjoint train/test splits."""
import numpy as np
import pytest

from tinygrad_bn.data import DataLoader, Shapes10


@pytest.fixture(scope="module")
def small():
    return Shapes10(n=500, image_size=16)


def test_shapes_dtypes_range(small):
    assert small.data.shape == (500, 3, 16, 16) and small.data.dtype == np.float32
    assert small.targets.shape == (500,) and small.targets.dtype == np.int64
    assert small.data.min() >= 0.0 and small.data.max() <= 1.0
    assert len(small) == 500 and len(small.classes) == 10
    image, label = small[3]
    assert image.shape == (3, 16, 16) and isinstance(label, int)


def test_classes_are_exactly_balanced(small):
    assert np.bincount(small.targets, minlength=10).tolist() == [50] * 10


def test_deterministic_per_seed(small):
    again = Shapes10(n=500, image_size=16)
    np.testing.assert_array_equal(again.data, small.data)
    np.testing.assert_array_equal(again.targets, small.targets)
    other = Shapes10(n=500, image_size=16, seed=1)
    assert not np.array_equal(other.data, small.data)


def test_train_and_test_are_disjoint(small):
    test = Shapes10(train=False, n=500, image_size=16)
    assert not np.array_equal(test.data[:10], small.data[:10])
    train_images = {img.tobytes() for img in small.data}
    assert not any(img.tobytes() in train_images for img in test.data)


def test_default_32px_and_sizes():
    d = Shapes10(n=30)
    assert d.data.shape == (30, 3, 32, 32)
    assert len(Shapes10(train=False, n=0, image_size=16)) == 0
    with pytest.raises(ValueError, match="image_size"):
        Shapes10(n=10, image_size=4)


def test_stripes_run_the_way_their_class_says(small):
    """Horizontal stripes change brightness going down (rows), vertical ones going across."""
    def mean_step(c, axis):
        return np.abs(np.diff(small.data[small.targets == c], axis=axis)).mean()

    assert mean_step(5, axis=2) > 1.3 * mean_step(5, axis=3)  # class 5: horizontal stripes
    assert mean_step(6, axis=3) > 1.3 * mean_step(6, axis=2)  # class 6: vertical stripes
    assert small.data.reshape(500, -1).std(axis=1).min() > 0.02  # never a flat image


def test_feeds_the_loader(device):
    d = Shapes10(n=40, image_size=16)
    x, y = next(iter(DataLoader(d, batch_size=16, shuffle=True, seed=0, device=device)))
    assert x.shape == (16, 3, 16, 16) and x.device == device and y.dtype == np.int64
