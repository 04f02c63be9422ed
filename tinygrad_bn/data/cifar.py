"""CIFAR10: the 60,000 32x32 colour images of CIFAR-10, read from local files (never downloaded).

Two formats, both from https://www.cs.toronto.edu/~kriz/cifar.html:

  binary  cifar-10-batches-bin/{data_batch_1..5, test_batch}.bin: records of 3073 bytes,
          1 label byte then 3072 pixel bytes (1024 red, 1024 green, 1024 blue, rows of 32).
  python  cifar-10-batches-py/{data_batch_1..5, test_batch}: pickled dicts with b"data", a
          uint8 array (N, 3072) in the same pixel order, and b"labels", a list of N ints.
          Read with a restricted unpickler that can only rebuild NumPy arrays (_safe_pickle.py).

The batch files may also sit directly in root. Images come out float32 (N, 3, 32, 32) in [0, 1].
"""
import os

import numpy as np

from tinygrad_bn.data._files import DatasetFileError, find_file, read_bytes
from tinygrad_bn.data._safe_pickle import restricted_load
from tinygrad_bn.data.dataset import ImageDataset

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCHES = ["test_batch"]
PIXELS = 3 * 32 * 32
RECORD = 1 + PIXELS  # binary format: label byte + pixels
FOLDERS = {"binary": "cifar-10-batches-bin", "python": "cifar-10-batches-py"}


class CIFAR10(ImageDataset):
    """CIFAR10(root, train=True, format="auto"): "binary", "python", or "auto" (the python
    batches if present, else the binary ones)."""

    classes = CLASSES

    def __init__(self, root, train=True, format="auto"):
        if format not in ("auto", "binary", "python"):
            raise ValueError(f"CIFAR10: format must be 'auto', 'binary' or 'python', got {format!r}")
        self.root, self.train = root, bool(train)
        names = TRAIN_BATCHES if self.train else TEST_BATCHES
        self.format = _detect_format(root, names[0]) if format == "auto" else format
        folders = [os.path.join(root, FOLDERS[self.format]), root]
        suffix = ".bin" if self.format == "binary" else ""
        reader = _read_binary if self.format == "binary" else _read_python
        pixels, labels = [], []
        for name in names:
            path = find_file(f"CIFAR10 ({self.format} format)", [name + suffix], folders)
            x, y = reader(path)
            pixels.append(x)
            labels.append(y)
        pixels, labels = np.concatenate(pixels), np.concatenate(labels)
        images = pixels.reshape(-1, 3, 32, 32).astype(np.float32)
        images /= np.float32(255)  # in place: one float copy of the pixels, not two
        super().__init__(images, labels)


def _detect_format(root, first_batch):
    """python if its first batch file is there, else binary (whose absence is then reported)."""
    for folder in (os.path.join(root, FOLDERS["python"]), root):
        if os.path.isfile(os.path.join(folder, first_batch)):
            return "python"
    return "binary"


def _read_binary(path):
    raw = read_bytes(path)
    if len(raw) == 0 or len(raw) % RECORD:
        raise DatasetFileError(f"{path}: {len(raw)} bytes is not a positive multiple of the "
                               f"{RECORD}-byte CIFAR-10 record (1 label byte + {PIXELS} pixel "
                               f"bytes); the file is truncated or not CIFAR-10 binary")
    records = np.frombuffer(raw, np.uint8).reshape(-1, RECORD)
    return records[:, 1:], _check_labels(records[:, 0].astype(np.int64), path)


def _read_python(path):
    batch = restricted_load(read_bytes(path), path)
    if not isinstance(batch, dict):
        raise DatasetFileError(f"{path}: expected a pickled dict with b'data' and b'labels', got "
                               f"{type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        raise DatasetFileError(f"{path}: expected b'data' to be a uint8 array of shape (N, {PIXELS}), "
                               f"got {getattr(data, 'dtype', type(data).__name__)} "
                               f"{getattr(data, 'shape', '')}")
    return np.asarray(data), _python_labels(labels, len(data), path)  # asarray: plain ndarray


def _python_labels(labels, n, path):
    """b'labels' as int64: a list of n Python ints or a 1-D integer array of n, each in 0..9."""
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DatasetFileError(f"{path}: expected b'labels' to be a 1-D integer array of {n} "
                                   f"labels, got a {labels.dtype} array of shape {labels.shape}")
        labels = np.asarray(labels)
        if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
            raise DatasetFileError(f"{path}: b'labels' must be in 0..{len(CLASSES) - 1}, found values "
                                   f"in {labels.min()}..{labels.max()}")
    elif isinstance(labels, list):
        for i, v in enumerate(labels):
            if type(v) is not int or not 0 <= v < len(CLASSES):  # no floats, bools or 2**70
                raise DatasetFileError(f"{path}: b'labels'[{i}] is {v!r} ({type(v).__name__}); every "
                                       f"label must be an int in 0..{len(CLASSES) - 1}")
    else:
        raise DatasetFileError(f"{path}: expected b'labels' to be a list of {n} ints, got "
                               f"{type(labels).__name__}")
    if len(labels) != n:
        raise DatasetFileError(f"{path}: expected b'labels' to be a list of {n} ints (one per row of "
                               f"b'data'), got {len(labels)}")
    return np.asarray(labels, dtype=np.int64)


def _check_labels(labels, path):
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise DatasetFileError(f"{path}: labels must be in 0..{len(CLASSES) - 1}, found values in "
                               f"{labels.min()}..{labels.max()}")
    return labels
