"""MNIST and FashionMNIST from IDX files the test writes (gzipped and raw), and the errors for
missing, truncated and corrupt files."""
import gzip

import numpy as np
import pytest

from tinygrad_bn.data import MNIST, DatasetFileError, FashionMNIST


def _idx(array):
    """IDX bytes of a uint8 array: 0, 0, 0x08 (ubyte), ndim, big-endian sizes, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def _write(folder, prefix, n, gz, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    for name, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        raw = _idx(array)
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(raw) if gz else raw)
    return images, labels


@pytest.mark.parametrize("cls", [MNIST, FashionMNIST])
@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_reads_train_and_test(tmp_path, cls, gz):
    train_images, train_labels = _write(tmp_path, "train", 5, gz, seed=0)
    test_images, test_labels = _write(tmp_path, "t10k", 3, gz, seed=1)
    train, test = cls(tmp_path, train=True), cls(tmp_path, train=False)
    assert train.data.shape == (5, 1, 28, 28) and train.data.dtype == np.float32
    assert train.targets.dtype == np.int64 and len(test) == 3
    np.testing.assert_array_equal(train.data[:, 0], train_images / np.float32(255))
    np.testing.assert_array_equal(train.targets, train_labels)
    np.testing.assert_array_equal(test.data[:, 0], test_images / np.float32(255))
    np.testing.assert_array_equal(test.targets, test_labels)
    assert len(train.classes) == 10


def test_torchvision_layout_and_class_names(tmp_path):
    _write(tmp_path / "FashionMNIST" / "raw", "t10k", 2, gz=True)
    ds = FashionMNIST(tmp_path, train=False)
    assert len(ds) == 2 and ds.classes[9] == "Ankle boot"
    with pytest.raises(FileNotFoundError, match="MNIST"):
        MNIST(tmp_path, train=False)  # FashionMNIST's folder is not MNIST's


def test_missing_file(tmp_path):
    _write(tmp_path, "train", 2, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte") as info:
        MNIST(tmp_path)
    assert str(tmp_path) in str(info.value) and "never downloads" in str(info.value)


def test_truncated_raw_file(tmp_path):
    _write(tmp_path, "train", 3, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DatasetFileError, match="truncated or corrupt") as info:
        MNIST(tmp_path)
    assert str(path) in str(info.value) and "(3, 28, 28)" in str(info.value)


def test_truncated_gzip(tmp_path):
    _write(tmp_path, "train", 3, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DatasetFileError, match="corrupt or truncated gzip") as info:
        MNIST(tmp_path)
    assert str(path) in str(info.value)


def test_bad_magic_and_wrong_files(tmp_path):
    _write(tmp_path, "train", 3, gz=False)
    labels = tmp_path / "train-labels-idx1-ubyte"
    images = tmp_path / "train-images-idx3-ubyte"
    good_labels = labels.read_bytes()
    labels.write_bytes(images.read_bytes())  # an images file where labels belong
    with pytest.raises(DatasetFileError, match="bad IDX magic number 0x00000803, expected 0x00000801"):
        MNIST(tmp_path)
    labels.write_bytes(b"\x00\x00")
    with pytest.raises(DatasetFileError, match="shorter than the 8-byte IDX header"):
        MNIST(tmp_path)
    labels.write_bytes(_idx(np.zeros(2, np.uint8)))
    with pytest.raises(DatasetFileError, match="2 labels for 3 images"):
        MNIST(tmp_path)
    labels.write_bytes(_idx(np.array([0, 1, 12], np.uint8)))
    with pytest.raises(DatasetFileError, match="labels must be in 0..9"):
        MNIST(tmp_path)
    images.write_bytes(_idx(np.zeros((3, 27, 27), np.uint8)))
    labels.write_bytes(good_labels)
    with pytest.raises(DatasetFileError, match="expected 28x28 images, got 27x27"):
        MNIST(tmp_path)
