"""The Winograd F(2x2, 3x3) trial (tinygrad_bn/bench/winograd_trial.py): exact in float64, and
within its float32 error bound. It is a measured trial, not a conv path: no timing here."""
import numpy as np
import pytest

from tinygrad_bn.bench.winograd_trial import im2col_conv, winograd_conv


@pytest.mark.parametrize("n, c, size, o, padding", [
    (1, 1, (3, 3), 1, (0, 0)), (2, 3, (7, 5), 4, (1, 1)), (1, 2, (6, 9), 3, (2, 0)),
    (3, 4, (5, 5), 2, (1, 2))])
def test_winograd_matches_im2col_in_float64(n, c, size, o, padding):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((n, c, *size)), rng.standard_normal((o, c, 3, 3))
    np.testing.assert_allclose(winograd_conv(np, x, w, padding), im2col_conv(x, w, padding),
                               rtol=0, atol=1e-12)


def test_winograd_float32_error_bound():
    """Bound: |y - y_exact| <= 8 * eps32 * max_o sum|w[o]| * max|x|, with the float64 direct result
    as y_exact. Measured at the ResNet shapes: ~2e-8 of that scale (F(2x2, 3x3)'s transforms only
    add and halve, so its error is at most a few times im2col's); 8 eps leaves room for C up to
    ~1000 channels."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 64, 10, 10)).astype(np.float32)
    w = rng.standard_normal((32, 64, 3, 3)).astype(np.float32)
    exact = im2col_conv(x.astype(np.float64), w.astype(np.float64), (1, 1))
    scale = np.abs(w).sum(axis=(1, 2, 3)).max() * np.abs(x).max()
    error = np.abs(winograd_conv(np, x, w, (1, 1)) - exact).max()
    assert winograd_conv(np, x, w, (1, 1)).dtype == np.float32
    assert error <= 8 * np.finfo(np.float32).eps * scale
    assert error > 0  # it was float32 arithmetic, so the test can fail
