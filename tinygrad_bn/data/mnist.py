"""MNIST and FashionMNIST from local IDX files (gzipped or raw; never downloaded).

IDX format (http://yann.lecun.com/exdb/mnist/): big-endian; bytes 0-1 are zero, byte 2 is the
element type (0x08 = unsigned byte), byte 3 the number of dimensions d; then d uint32 sizes;
then the prod(sizes) elements. Images: magic 0x00000803, sizes (N, 28, 28). Labels: magic
0x00000801, sizes (N,).

Files: {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz], looked up in root, root/<Name>/raw
(torchvision's layout) and root/<Name>. Images come out float32 (N, 1, 28, 28) in [0, 1].
"""
import math
import os

import numpy as np

from tinygrad_bn.data._files import DatasetFileError, find_file, read_bytes
from tinygrad_bn.data.dataset import ImageDataset

UBYTE = 0x08
IMAGE_SIDE = 28


class MNIST(ImageDataset):
    """MNIST(root, train=True): handwritten digits, 60,000 train / 10,000 test."""

    classes = ("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six",
               "7 - seven", "8 - eight", "9 - nine")

    def __init__(self, root, train=True):
        self.root, self.train = root, bool(train)
        name = type(self).__name__
        folders = [root, os.path.join(root, name, "raw"), os.path.join(root, name)]
        prefix = "train" if self.train else "t10k"
        files = {}
        for kind, idx in (("images", "idx3"), ("labels", "idx1")):
            base = f"{prefix}-{kind}-{idx}-ubyte"
            files[kind] = find_file(name, [base, base + ".gz"], folders)
        images = read_idx(files["images"], ndim=3)
        labels = read_idx(files["labels"], ndim=1)
        if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
            raise DatasetFileError(f"{files['images']}: expected {IMAGE_SIDE}x{IMAGE_SIDE} images, "
                                   f"got {images.shape[1]}x{images.shape[2]}")
        if len(labels) != len(images):
            raise DatasetFileError(f"{files['labels']}: {len(labels)} labels for {len(images)} images "
                                   f"in {files['images']}")
        if labels.size and labels.max() >= len(self.classes):
            raise DatasetFileError(f"{files['labels']}: labels must be in 0..{len(self.classes) - 1}, "
                                   f"found {labels.max()}")
        data = images[:, None].astype(np.float32)
        data /= np.float32(255)  # in place: one float copy of the pixels, not two
        super().__init__(data, labels.astype(np.int64))


class FashionMNIST(MNIST):
    """FashionMNIST(root, train=True): Zalando's clothing images, in MNIST's file format."""

    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
               "Bag", "Ankle boot")


def read_idx(path, ndim):
    """The uint8 array stored in an IDX file with `ndim` dimensions, validated against its header."""
    raw = read_bytes(path)
    header = 4 + 4 * ndim
    expected_magic = bytes([0, 0, UBYTE, ndim])
    if len(raw) < header:
        raise DatasetFileError(f"{path}: {len(raw)} bytes is shorter than the {header}-byte IDX "
                               f"header; the file is truncated or not an IDX file")
    if raw[:4] != expected_magic:
        raise DatasetFileError(f"{path}: bad IDX magic number 0x{raw[:4].hex()}, expected "
                               f"0x{expected_magic.hex()} (unsigned bytes, {ndim} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header + math.prod(dims)  # Python ints: (2**22, 2**21, 2**21) must not wrap to 0
    if len(raw) != expected:
        raise DatasetFileError(f"{path}: the header field dims {dims} promises {expected} bytes in "
                               f"all, but the file has {len(raw)}; it is truncated or corrupt")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)
