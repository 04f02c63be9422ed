"""batch_stat_noise's invariants: on Gaussian data the measured relative fluctuation of the batch
mean and variance matches the theory to within 10% at m = 32 (and the kurtosis correction is
needed for heavy tails); BN's backward formula equals the library's autograd; m = 1 records
the library's error."""
import numpy as np

import tinygrad_bn as tg
import tinygrad_bn.nn.functional as F
from examples.experiments import batch_stat_noise as E


def test_gaussian_fluctuation_matches_theory_at_m32():
    rng = np.random.default_rng(0)
    acts = rng.standard_normal((20_000, 16)) * 3.0 + 5.0
    mean_rs, var_rs = E.fluctuation(acts, 32, 2000, rng)
    t_mean, t_var = E.theory(32, 0.0, len(acts))
    assert abs(np.median(mean_rs) / t_mean - 1) < 0.10
    assert abs(np.median(var_rs) / t_var - 1) < 0.10
    # the check can fail: the m = 8 theory is far from the m = 32 measurement
    assert abs(np.median(var_rs) / E.theory(8)[1] - 1) > 0.3


def test_kurtosis_correction_for_heavy_tails():
    rng = np.random.default_rng(1)
    acts = rng.laplace(size=(50_000, 8))  # excess kurtosis 3
    kurt = E.excess_kurtosis(acts)
    assert np.all(np.abs(kurt - 3) < 0.5)
    _, var_rs = E.fluctuation(acts, 32, 2000, rng)
    _, gauss = E.theory(32, 0.0, len(acts))
    _, corrected = E.theory(32, kurt, len(acts))
    assert abs(np.median(var_rs / corrected) - 1) < 0.10
    assert np.median(var_rs) / gauss > 1.3  # the Gaussian theory underestimates it


def test_bn_backward_formula_equals_autograd():
    rng = np.random.default_rng(2)
    x, g = rng.standard_normal((12, 5)), rng.standard_normal((12, 5))
    gamma, beta = rng.uniform(0.5, 2, 5), rng.standard_normal(5)
    xt = tg.tensor(x, requires_grad=True)
    y = F.batch_norm(xt, None, None, tg.tensor(gamma), tg.tensor(beta), training=True, eps=E.EPS)
    (y * tg.tensor(g)).sum().backward()
    ours = E.bn_backward(x, g, gamma, x.mean(axis=0), x.var(axis=0))
    np.testing.assert_allclose(ours, xt.grad.numpy(), rtol=1e-7, atol=1e-9)
    assert np.abs(ours - gamma / np.sqrt(x.var(axis=0) + E.EPS) * g).max() > 1e-2  # not the fixed-stat one


def test_m1_records_the_library_error():
    message = E.m1_error(6)
    assert message is not None and message.startswith("ValueError") and "1 value per channel" in message
