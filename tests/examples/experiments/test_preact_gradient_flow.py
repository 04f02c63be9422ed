"""preact_gradient_flow's invariants, on small direct calls (no training): the gradient-norm
recorder equals a direct computation (the forward written out unit by unit, each unit's input
kept with retain_grad); with every residual branch's last conv at zero, a pre-activation unit
with an identity shortcut passes the gradient through exactly (the clean identity), while a
post-activation unit, whose ReLU follows the addition, does not; the probe changes nothing in
the model; the verdict follows the rule."""
import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.nn.functional as F
from examples.experiments import preact_gradient_flow as E
from examples.models import resnet


def model_and_batch(depth, block, seed=0):
    tg.manual_seed(seed)
    model = resnet(depth, block, image_size=8).double()
    model.train()
    rng = np.random.default_rng(seed)
    x = tg.tensor(rng.standard_normal((8, 3, 8, 8)))
    y = tg.tensor(np.arange(8) % 10)
    return model, x, y


def direct_grad_norms(model, x, y):
    """||dL/dx_u|| by hand: ResNet.forward written out, every unit input retained."""
    h = model.conv1(x)
    if model.block == "post":
        h = F.relu(model.bn1(h))
    kept = []
    for unit in E.units(model):
        h.retain_grad()
        kept.append(h)
        h = unit(h)
    if model.block == "pre":
        h = F.relu(model.bn(h))
    loss = F.cross_entropy(model.fc(F.adaptive_avg_pool2d(h, 1).flatten(1)), y)
    loss.backward()
    return [float(np.linalg.norm(t.grad.numpy())) for t in kept]


@pytest.mark.parametrize("block", ["post", "pre"])
def test_recorder_matches_direct_computation(block):
    model, x, y = model_and_batch(14, block)
    recorded = E.unit_input_grad_norms(model, x, y)
    direct = direct_grad_norms(model, x, y)
    assert len(recorded) == len(E.units(model)) == 6
    np.testing.assert_allclose(recorded, direct, rtol=1e-12)
    assert len(set(recorded)) == len(recorded)  # distinct per unit: not one number repeated


def zero_last_convs(model):
    with tg.no_grad():
        for unit in E.units(model):
            unit.conv2.weight.data[...] = 0


def test_preact_identity_shortcut_passes_the_gradient_exactly():
    model, x, y = model_and_batch(14, "pre")
    zero_last_convs(model)
    norms = E.unit_input_grad_norms(model, x, y)
    units = E.units(model)
    identity = [i for i, u in enumerate(units[:-1]) if not u.preact_shared]
    assert identity == [1, 3]  # layer1[1] and layer2[1]; layer3[1] is the last unit
    for i in identity:  # input of unit i and of unit i + 1: the same gradient
        assert norms[i] == pytest.approx(norms[i + 1], rel=1e-12)
    assert norms[0] != pytest.approx(norms[1], rel=1e-3)  # the stem unit's shared BN-ReLU is not an identity


def test_postact_relu_after_the_addition_is_not_an_identity():
    model, x, y = model_and_batch(14, "post")
    zero_last_convs(model)
    norms = E.unit_input_grad_norms(model, x, y)
    for i in (1, 3):  # the same identity-shortcut units: ReLU(x + 0) masks the gradient where x = 0
        assert abs(norms[i] - norms[i + 1]) > 1e-6 * norms[i + 1]


def test_probe_changes_nothing():
    model, x, y = model_and_batch(8, "post")
    before = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    E.unit_input_grad_norms(model, x, y)
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k].detach().numpy()) for k in before)
    assert all(p.grad is None for p in model.parameters())


def test_configs_and_depths():
    assert sorted(E.configs("default")) == ["post20", "post56", "pre20", "pre56"]
    assert sorted(E.configs("full")) == ["post110", "post20", "post56", "pre110", "pre20", "pre56"]
    assert E.depths_of(E.configs("full")) == [20, 56, 110]


def test_verdict_follows_the_rule():
    def runs(ratio, loss):
        return [{"log10_ratio_init": ratio + 0.01 * s, "log10_ratio_epoch1": ratio + 0.01 * s,
                 "final_train_loss": loss + 0.01 * s} for s in range(3)]
    res = {"post8": runs(0.0, 9.0), "pre8": runs(0.0, 9.0), "post56": runs(-1.0, 2.0), "pre56": runs(0.5, 1.5)}
    assert E.verdict(res)[0] == "reproduced"
    assert E.verdict(dict(res, pre56=runs(-0.5, 1.5)))[0] == "not reproduced"
    assert E.verdict(dict(res, pre56=runs(0.5, 2.5)))[0] == "not reproduced"
    assert E.verdict(dict(res, pre56=runs(0.5, 2.0)))[0] == "inconclusive"


def test_depths_option():
    import argparse
    assert sorted(E.configs("full", argparse.Namespace(depths="110"))) == ["post110", "pre110"]
    with pytest.raises(SystemExit):
        E.configs("full", argparse.Namespace(depths="9"))
