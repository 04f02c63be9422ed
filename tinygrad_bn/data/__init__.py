"""Data: datasets (Shapes10 built in; CIFAR-10, MNIST, FashionMNIST from local files; Digits
from scikit-learn), a vectorised DataLoader with reproducible per-epoch shuffling, and batched
transforms."""
from tinygrad_bn.data import transforms  # noqa: F401
from tinygrad_bn.data.datasets import (CIFAR10, MNIST, ArrayDataset, Dataset,  # noqa: F401
                                       DatasetFileError, Digits, FashionMNIST, ImageDataset, Shapes10,
                                       TensorDataset, UnsafePickleError)
from tinygrad_bn.data.loader import DataLoader  # noqa: F401

__all__ = ["Dataset", "ArrayDataset", "ImageDataset", "TensorDataset", "DataLoader", "Shapes10",
           "CIFAR10", "MNIST", "FashionMNIST", "DatasetFileError", "UnsafePickleError", "transforms",
           "Digits"]
