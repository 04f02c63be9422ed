"""Batched transforms: shapes, determinism, and exact flip / crop / normalize results on tiny arrays."""
import numpy as np
import pytest

from tinygrad_bn.data.transforms import Compose, Normalize, RandomCrop, RandomHorizontalFlip


def _batch(n=4, c=2, h=3, w=3):
    return np.arange(n * c * h * w, dtype=np.float32).reshape(n, c, h, w)


def test_normalize_per_channel():
    x = _batch(n=2, c=2)
    out = Normalize(mean=[1.0, 2.0], std=[2.0, 4.0])(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out[:, 0], (x[:, 0] - 1) / 2)
    np.testing.assert_allclose(out[:, 1], (x[:, 1] - 2) / 4)
    with pytest.raises(ValueError, match="3 channels but mean/std have 2"):
        Normalize([0, 0], [1, 1])(_batch(c=3))
    with pytest.raises(ValueError, match="division by zero"):
        Normalize([0], [0])


def test_flip_p1_and_p0_exact():
    x = _batch()
    np.testing.assert_array_equal(RandomHorizontalFlip(p=1.0)(x), x[..., ::-1])
    np.testing.assert_array_equal(RandomHorizontalFlip(p=0.0)(x), x)


def test_flip_is_per_image_and_seeded():
    x = np.random.default_rng(0).random((64, 3, 4, 5), dtype=np.float32)
    out = RandomHorizontalFlip(seed=1)(x)
    flipped = np.array([np.array_equal(o, i[..., ::-1]) for o, i in zip(out, x)])
    unchanged = np.array([np.array_equal(o, i) for o, i in zip(out, x)])
    assert np.all(flipped | unchanged) and 16 < flipped.sum() < 48
    np.testing.assert_array_equal(RandomHorizontalFlip(seed=1)(x), out)
    np.testing.assert_array_equal(RandomHorizontalFlip(seed=2)(x, rng=np.random.default_rng(5)),
                                  RandomHorizontalFlip(seed=3)(x, rng=np.random.default_rng(5)))


def test_crop_matches_a_per_image_reference():
    x = _batch(n=6, c=2, h=4, w=5)
    out = RandomCrop((3, 4), padding=2)(x, rng=np.random.default_rng(9))
    assert out.shape == (6, 2, 3, 4)
    # the same draws, in the same order, applied image by image
    rng = np.random.default_rng(9)
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    top, left = rng.integers(0, 8 - 3 + 1, 6), rng.integers(0, 9 - 4 + 1, 6)
    for i in range(6):
        np.testing.assert_array_equal(out[i], padded[i, :, top[i]:top[i] + 3, left[i]:left[i] + 4])


def test_crop_without_padding_at_full_size_is_identity_and_padding_pads_zeros():
    x = _batch()
    np.testing.assert_array_equal(RandomCrop(3)(x), x)
    out = RandomCrop(5, padding=1)(x)  # the whole padded image: a zero border
    np.testing.assert_array_equal(out[:, :, 1:4, 1:4], x)
    assert np.all(out[:, :, 0] == 0) and np.all(out[:, :, :, -1] == 0)


def test_crop_tuple_padding_is_left_right_then_top_bottom():
    out = RandomCrop((3 + 2, 3 + 4), padding=(2, 1))(_batch())
    assert out.shape == (4, 2, 5, 7)


def test_crop_errors():
    with pytest.raises(ValueError, match="larger than the padded image"):
        RandomCrop(5)(_batch())
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        RandomCrop(2)(np.zeros((3, 3), np.float32))


def test_compose_is_deterministic_given_seeds():
    x = np.random.default_rng(0).random((8, 3, 8, 8), dtype=np.float32)

    def pipeline():
        return Compose([RandomCrop(8, padding=2, seed=0), RandomHorizontalFlip(seed=0),
                        Normalize([0.5] * 3, [0.25] * 3)])

    a, b = pipeline()(x), pipeline()(x)
    assert a.shape == (8, 3, 8, 8) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    shared = np.random.default_rng(4)
    np.testing.assert_array_equal(pipeline()(x, rng=np.random.default_rng(4)), pipeline()(x, rng=shared))
