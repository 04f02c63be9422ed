"""affine_ablation's invariants: BN can represent the identity (gamma = sqrt(var_B + eps),
beta = mu_B make BN in training mode return its input, to 1e-6 in float64); affine=False has
no gamma and beta; the near-linear fraction is what it says."""
import numpy as np

import tinygrad_bn as tg
from tinygrad_bn import nn
from examples.experiments import affine_ablation as E


def test_bn_represents_the_identity_exactly():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.5, (64, 7))
    bn = nn.BatchNorm1d(7).double()
    with tg.no_grad():
        bn.weight.copy_(tg.tensor(np.sqrt(x.var(axis=0) + bn.eps)))
        bn.bias.copy_(tg.tensor(x.mean(axis=0)))
    bn.train()
    y = bn(tg.tensor(x)).detach().numpy()
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, x, atol=1e-6, rtol=0)
    # and with any other gamma it is not the identity: the test can fail
    with tg.no_grad():
        bn.weight.copy_(tg.tensor(np.sqrt(x.var(axis=0, ddof=1) + bn.eps)))  # unbiased: wrong
    assert np.abs(bn(tg.tensor(x)).detach().numpy() - x).max() > 1e-3


def test_frozen_bn_has_no_gamma_and_beta():
    assert nn.BatchNorm1d(5, affine=False).weight is None
    model = E.SigmoidMLP(64, norm="bn_frozen")
    assert all(m.weight is None and m.bias is None for m in model.norms)
    assert len(list(E.SigmoidMLP(64, norm="bn").parameters())) == len(list(model.parameters())) + 6


def test_linear_fraction():
    assert E.linear_fraction([np.array([0.0, 0.5, -0.99, 1.0]), np.array([[2.0, -3.0]])]) == 0.5
    # a standard normal puts P(|z| < 1) = 0.6827 in the near-linear region
    z = np.random.default_rng(0).standard_normal(200_000)
    assert abs(E.linear_fraction([z]) - 0.6827) < 0.005
