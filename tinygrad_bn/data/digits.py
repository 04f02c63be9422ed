"""Digits: scikit-learn's handwritten digits (sklearn.datasets.load_digits), 1,797 real 8x8
images that ship inside the scikit-learn wheel: real data with no file and no download.

The images are 8x8 grey levels 0..16 (32x32 bitmaps of 43 writers, counted in 4x4 blocks: the
UCI "Optical Recognition of Handwritten Digits" set). They come out float32 (N, 1, 8, 8) in
[0, 1] (level / 16), labels int64 0..9.

The train/test split is fixed and stratified: within each class, a permutation drawn from one
fixed seed (SPLIT_SEED) sends round(TEST_FRACTION * n_class) images to the test set and the rest
to the training set, so both splits keep the classes' proportions and every call gives the same
images. `indices` holds each sample's position in load_digits' order.

scikit-learn is imported only when a Digits is built (it is in the `examples` extra), never when
tinygrad_bn is imported.
"""
import functools

import numpy as np

from tinygrad_bn.data.dataset import ImageDataset

TEST_FRACTION = 0.2
SPLIT_SEED = 0
MAX_LEVEL = 16  # load_digits' grey levels are the integers 0..16
IMAGE_SIDE = 8


class Digits(ImageDataset):
    """Digits(train=True): scikit-learn's 8x8 handwritten digits, a fixed stratified split of
    1,438 train / 359 test images, float32 (N, 1, 8, 8) in [0, 1], int64 labels."""

    classes = ("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six",
               "7 - seven", "8 - eight", "9 - nine")

    def __init__(self, train=True):
        self.train = bool(train)
        images, labels = _load()
        train_idx, test_idx = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
        self.indices = train_idx if self.train else test_idx
        data = images[self.indices][:, None].astype(np.float32)
        data /= np.float32(MAX_LEVEL)
        super().__init__(data, labels[self.indices])


def stratified_split(labels, test_fraction, seed):
    """(train indices, test indices), each sorted: per class, round(test_fraction * n_class)
    of the class's indices, chosen by a permutation from default_rng(seed), go to the test set."""
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        test.append(members[:int(round(test_fraction * len(members)))])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


@functools.lru_cache(maxsize=1)
def _load():
    """(images (1797, 8, 8) float64 levels 0..16, labels (1797,) int64) from scikit-learn."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError(
            "Digits needs scikit-learn, whose wheel ships the 1,797 images (nothing is downloaded); "
            "install the examples extra: pip install 'tinygrad_bn[examples]' (or pip install "
            f"scikit-learn). The import failed with: {e}") from e
    bunch = load_digits()
    images, labels = np.asarray(bunch.images, np.float64), np.asarray(bunch.target, np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels
