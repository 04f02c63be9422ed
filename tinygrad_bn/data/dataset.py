"""Dataset, the array-backed datasets the DataLoader batches without a per-sample loop, and
TensorDataset."""
import numpy as np

from tinygrad_bn import backend
from tinygrad_bn.tensor import Tensor


class Dataset:
    """A sized, indexable collection of samples: dataset[i] -> one sample, len(dataset)."""

    def __getitem__(self, index):
        raise NotImplementedError

    def __len__(self):
        raise NotImplementedError


class ArrayDataset(Dataset):
    """A dataset held as equal-length arrays (`.arrays`); sample i is tuple(a[i] for a in arrays).

    The DataLoader indexes every array with a whole batch of indices at once."""

    def __init__(self, *arrays):
        if not arrays:
            raise ValueError(f"{type(self).__name__}: expected at least one array")
        lengths = [len(a) for a in arrays]
        if len(set(lengths)) != 1:
            raise ValueError(f"{type(self).__name__}: all arrays must have the same first dimension, "
                             f"got lengths {lengths}")
        self.arrays = tuple(arrays)

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, index):
        return tuple(a[index] for a in self.arrays)


class TensorDataset(ArrayDataset):
    """TensorDataset(*tensors): sample i is tuple(t[i] for t in tensors); also accepts arrays."""

    def __init__(self, *tensors):
        tensors = tuple(t if isinstance(t, Tensor) else Tensor(t) for t in tensors)
        super().__init__(*(t.data for t in tensors))
        self.tensors = tensors

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)


class ImageDataset(ArrayDataset):
    """Images `data` (N, C, H, W) float32 in [0, 1], labels `targets` (N,) int64, names `classes`."""

    classes = ()

    def __init__(self, data, targets):
        if data.dtype != np.float32 or data.ndim != 4:
            raise ValueError(f"{type(self).__name__}: expected float32 images (N, C, H, W), got "
                             f"{data.dtype} {data.shape}")
        super().__init__(data, targets.astype(np.int64, copy=False))
        self.data, self.targets = self.arrays

    def __getitem__(self, index):
        """(image (C, H, W) float32 array, int label), like torchvision's (img, target)."""
        return self.data[index], int(self.targets[index])

    def __repr__(self):
        device = backend.device_of(self.data)
        return (f"{type(self).__name__}(n={len(self)}, image_shape={tuple(self.data.shape[1:])}, "
                f"classes={len(self.classes)}, device={device})")
