"""Digits: shapes, dtypes and range, the fixed stratified split (disjoint, complete, class
proportions kept), determinism, the lazy scikit-learn import and its error."""
import subprocess
import sys

import numpy as np
import pytest

from tinygrad_bn.data import DataLoader, Digits
from tinygrad_bn.data import digits as digits_module

sklearn_datasets = pytest.importorskip("sklearn.datasets")


@pytest.fixture(scope="module")
def splits():
    return Digits(train=True), Digits(train=False)


def test_shapes_dtypes_range(splits):
    train, test = splits
    assert train.data.shape == (1438, 1, 8, 8) and test.data.shape == (359, 1, 8, 8)
    for d in splits:
        assert d.data.dtype == np.float32 and d.targets.dtype == np.int64
        assert d.data.min() == 0.0 and d.data.max() == 1.0
        assert set(np.unique(d.targets)) == set(range(10)) and len(d.classes) == 10
    image, label = train[5]
    assert image.shape == (1, 8, 8) and isinstance(label, int)


def test_the_images_are_load_digits_divided_by_16(splits):
    bunch = sklearn_datasets.load_digits()
    for d in splits:
        np.testing.assert_array_equal(d.data[:, 0], (bunch.images[d.indices] / 16).astype(np.float32))
        np.testing.assert_array_equal(d.targets, bunch.target[d.indices])


def test_split_is_disjoint_complete_and_stratified(splits):
    train, test = splits
    assert not set(train.indices) & set(test.indices)
    assert sorted(np.concatenate([train.indices, test.indices])) == list(range(1797))
    per_class = np.bincount(train.targets, minlength=10) + np.bincount(test.targets, minlength=10)
    expected_test = np.round(0.2 * per_class)
    np.testing.assert_array_equal(np.bincount(test.targets, minlength=10), expected_test)


def test_deterministic(splits):
    again = Digits(train=False)
    np.testing.assert_array_equal(again.indices, splits[1].indices)
    np.testing.assert_array_equal(again.data, splits[1].data)
    # the split is a shuffle, not the file's first or last 20%, and its seed matters
    assert splits[1].indices.max() > 1500 and splits[1].indices.min() < 50
    labels = splits[0].targets
    assert not np.array_equal(digits_module.stratified_split(labels, 0.2, 0)[1],
                              digits_module.stratified_split(labels, 0.2, 1)[1])


def test_stratified_split_on_a_toy_label_set():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 1)
    train, test = digits_module.stratified_split(labels, 0.2, seed=3)
    assert np.bincount(labels[test], minlength=3).tolist() == [2, 1, 0]
    assert len(train) + len(test) == 16 and not set(train) & set(test)


def test_scikit_learn_is_not_imported_with_the_library():
    code = ("import sys, tinygrad_bn, tinygrad_bn.data, tinygrad_bn.data.digits; "
            "sys.exit(1 if any(m == 'sklearn' or m.startswith('sklearn.') for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_missing_scikit_learn_names_the_examples_extra(monkeypatch):
    digits_module._load.cache_clear()
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    try:
        with pytest.raises(ImportError, match=r"Digits needs scikit-learn.*tinygrad_bn\[examples\]"):
            Digits()
    finally:
        digits_module._load.cache_clear()


def test_feeds_the_loader(splits, device):
    x, y = next(iter(DataLoader(splits[0], batch_size=32, shuffle=True, seed=0, device=device)))
    assert x.shape == (32, 1, 8, 8) and x.device == device and y.dtype == np.int64
