"""deep_linear_chain's invariants, on small direct calls: the first-order prediction of a step's
loss change is right to O(eta^2) (log-log slope 2), the second-order one to O(eta^3), the
Hessian-vector product from double backward matches finite differences, and with a
batch-normalized unit at every layer the loss is quadratic in what moves it (second order exact)."""
import numpy as np
import pytest

import tinygrad_bn as tg
from examples.experiments import deep_linear_chain as E

TINY_ETAS = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3]


@pytest.mark.parametrize("depth", [2, 8])
def test_first_order_gap_is_order_eta_squared(depth):
    preds = E.step_predictions(E.Chain(depth, 64, seed=0), TINY_ETAS)
    gaps1 = [abs(p["actual"] - p["first"]) for p in preds]
    gaps2 = [abs(p["actual"] - p["second"]) for p in preds]
    assert abs(E.loglog_slope(TINY_ETAS, gaps1) - 2.0) < 0.1
    assert E.loglog_slope(TINY_ETAS[2:], gaps2[2:]) > 2.6  # the second order leaves O(eta^3)
    # a wrong prediction fails the check: no prediction at all leaves O(eta), slope 1
    gaps0 = [abs(p["actual"]) for p in preds]
    assert abs(E.loglog_slope(TINY_ETAS, gaps0) - 1.0) < 0.1


@pytest.mark.parametrize("bn", [False, True])
def test_hessian_vector_product_matches_finite_differences(bn):
    chain = E.Chain(3, 32, seed=1, bn=bn)
    p = E.step_predictions(chain, [1e-3])[0]
    values = chain.values()
    loss, leaves = chain.loss(values)
    g = [x.numpy() for x in tg.autograd.grad(loss, leaves)]
    h = 1e-6
    def grads_at(sign):
        l, lv = chain.loss([v + sign * h * gi for v, gi in zip(values, g)])
        return [x.numpy() for x in tg.autograd.grad(l, lv)]
    plus, minus = grads_at(1), grads_at(-1)
    ghg_fd = sum(float(((a - b) / (2 * h) * gi).sum()) for a, b, gi in zip(plus, minus, g))
    assert p["ghg"] == pytest.approx(ghg_fd, rel=1e-5)
    assert p["gg"] == pytest.approx(sum(float((gi * gi).sum()) for gi in g), rel=1e-12)


def test_bn_chain_is_quadratic_in_its_moving_parameters():
    # with BN at every unit the output is gamma_l * x_hat + beta_l: the second order is exact
    for p in E.step_predictions(E.Chain(16, 64, seed=2, bn=True), [1e-2, 1e-1]):
        assert abs(p["actual"] - p["second"]) < 1e-8 * abs(p["first"])
    # and the plain chain of the same depth is not
    p = E.step_predictions(E.Chain(16, 64, seed=2), [1e-1])[0]
    assert abs(p["actual"] - p["second"]) > 1e-4 * abs(p["first"])


def test_verdict_follows_the_rule():
    def fake(plain_deep):
        res = {}
        for variant in ("plain", "bn"):
            for d in (2, 32):
                base = plain_deep if (variant == "plain" and d == 32) else 0.1
                res[f"{variant}_d{d}"] = [{"rel_err1_eta0.001": base * 0.01 + s * 1e-5,
                                           "rel_err1_eta0.1": base + s * 1e-3} for s in range(3)]
        return res
    assert E.verdict(fake(1.0))[0] == "reproduced"
    assert E.verdict(fake(0.01))[0] == "not reproduced"
