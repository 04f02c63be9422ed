"""Datasets: the base classes and every built-in image set (images float32 (N, C, H, W) in
[0, 1], labels int64, class names in `classes`)."""
from tinygrad_bn.data._files import DatasetFileError  # noqa: F401
from tinygrad_bn.data._safe_pickle import UnsafePickleError  # noqa: F401
from tinygrad_bn.data.cifar import CIFAR10  # noqa: F401
from tinygrad_bn.data.dataset import ArrayDataset, Dataset, ImageDataset, TensorDataset  # noqa: F401
from tinygrad_bn.data.digits import Digits  # noqa: F401
from tinygrad_bn.data.mnist import MNIST, FashionMNIST  # noqa: F401
from tinygrad_bn.data.shapes10 import Shapes10  # noqa: F401
