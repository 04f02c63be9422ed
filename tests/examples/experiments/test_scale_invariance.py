"""scale_invariance's exact checks, asserted: the experiment's own numbers on one direct call.
Each must fail when BN is replaced by an identity (a control that shows the check can fail)."""
import pytest

from tinygrad_bn import nn
from examples.experiments import scale_invariance as E


@pytest.fixture(scope="module")
def checks():
    return E.exact_checks(seed=0)


@pytest.mark.parametrize("c", E.C_VALUES)
def test_scaling_weights_before_bn_leaves_output_and_divides_gradient(checks, c):
    assert checks[f"output_rel_diff_c{c:g}"] < E.EXACT_TOL
    assert checks[f"grad_ratio_c{c:g}"] == pytest.approx(1.0 / c, rel=E.EXACT_TOL)


def test_bias_before_bn_is_redundant(checks):
    assert checks["bias_grad_rel"] < E.EXACT_TOL
    assert checks["bias_shift_output_diff"] < E.EXACT_TOL
    assert E.exact_checks_hold(checks)


def test_checks_fail_without_bn():
    control = E.exact_checks(seed=0, norm=nn.Identity())
    assert not E.exact_checks_hold(control)
    for c in E.C_VALUES:
        assert control[f"output_rel_diff_c{c:g}"] > 1e-3       # the output scales with c
        assert control[f"grad_ratio_err_c{c:g}"] > 1e-3        # the gradient does not go as 1/c
    assert control["bias_grad_rel"] > 1e-3 and control["bias_shift_output_diff"] > 1e-3


def test_default_eps_breaks_invariance_only_for_small_weights():
    # eps = 1e-5 is added to c^2 var: the effect is large at c = 0.01, small at c = 100
    c = E.exact_checks(seed=0, eps=1e-5)
    assert c["output_rel_diff_c0.01"] > c["output_rel_diff_c0.1"] > c["output_rel_diff_c100"]
    assert c["bias_grad_rel"] < E.EXACT_TOL  # the bias stays redundant whatever eps


def test_verdict_follows_the_rule():
    def runs(norm_ratio, eff, final, hold=True):
        return [{"norm_ratio": norm_ratio + 0.01 * s, "eff_step_ratio": eff + 0.01 * s,
                 "final_norm": final + 0.01 * s, "exact_hold_epstiny": hold} for s in range(3)]
    ok = {"no_weight_decay": runs(1.5, 0.5, 5.0), "weight_decay_5e-4": runs(1.2, 0.7, 4.0)}
    assert E.verdict(ok)[0] == "reproduced"
    shrink = {"no_weight_decay": runs(0.8, 1.5, 5.0), "weight_decay_5e-4": runs(0.7, 1.6, 4.0)}
    assert E.verdict(shrink)[0] == "not reproduced"
    broken = {"no_weight_decay": runs(1.5, 0.5, 5.0, hold=False), "weight_decay_5e-4": runs(1.2, 0.7, 4.0)}
    assert E.verdict(broken)[0] == "not reproduced"
