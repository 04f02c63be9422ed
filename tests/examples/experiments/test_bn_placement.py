"""bn_placement's invariants: the variants are the same SmallCNN (same initial conv weights) in
the stated orders, with a conv bias only where it is not redundant; the dead-ReLU count sees a
ReLU that is off for every input; steps-to-target and the verdict follow their definitions."""
import numpy as np

import tinygrad_bn as tg
from tinygrad_bn import nn
from examples.experiments import bn_placement as E
from examples.models import SmallCNN


def models(seed=0):
    out = {}
    for variant in E.VARIANTS:
        tg.manual_seed(seed)
        out[variant] = E.make_model(E.configs("quick")[variant])
    return out


def kinds(model):
    return [type(m).__name__ for m in model.features]


def test_variants_are_the_stated_orders_with_the_same_initial_weights():
    m = models()
    assert kinds(m["bn_relu"])[:4] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
    assert kinds(m["relu_bn"])[:4] == ["Conv2d", "ReLU", "BatchNorm2d", "MaxPool2d"]
    assert kinds(m["no_bn"])[:3] == ["Conv2d", "ReLU", "MaxPool2d"] and "BatchNorm2d" not in kinds(m["no_bn"])
    convs = {v: [c for c in model.features if isinstance(c, nn.Conv2d)] for v, model in m.items()}
    for a, b, c in zip(*convs.values()):
        assert np.array_equal(a.weight.detach().numpy(), b.weight.detach().numpy()) and np.array_equal(a.weight.detach().numpy(), c.weight.detach().numpy())
        assert a.bias is None and b.bias is not None and not b.bias.detach().numpy().any()
    tg.manual_seed(0)
    config = E.configs("quick")["bn_relu"]
    plain = SmallCNN(image_size=config["image_size"], widths=tuple(config["widths"]))
    assert all(np.array_equal(p.detach().numpy(), q.detach().numpy()) for p, q in zip(plain.parameters(), m["bn_relu"].parameters()))


def test_dead_relus_sees_a_relu_that_is_off_for_every_input():
    model = models()["relu_bn"]
    x = tg.tensor(np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32))
    units, channels = E.dead_relus(model, x)
    assert 0 <= units < 0.9
    first = model.features[0]
    with tg.no_grad():
        first.bias.fill_(-1e4)  # the first ReLU now outputs 0 everywhere
    units_after, channels_after = E.dead_relus(model, x)
    outputs = [4 * 8 * 8, 8 * 4 * 4, 8 * 2 * 2]  # units per ReLU (widths 4, 8, 8 at 8, 4, 2)
    assert units_after >= outputs[0] / sum(outputs) and channels_after >= 4 / 20
    assert model.training  # the probe runs in eval mode and puts the model back


def test_steps_to_target():
    assert E.steps_to([0.1, 0.3, 0.5, 0.4], [0, 10, 20, 30], 0.45) == 20
    assert E.steps_to([0.1, 0.3], [0, 10], 0.45) is None


def test_verdict_follows_the_rule():
    def runs(final, mean):
        return [{"final_test_acc": final + 0.001 * s, "mean_test_acc": mean + 0.001 * s} for s in range(3)]
    assert E.verdict({"bn_relu": runs(0.6, 0.5), "relu_bn": runs(0.5, 0.4), "no_bn": runs(0.3, 0.3)})[0] == "reproduced"
    assert E.verdict({"bn_relu": runs(0.6, 0.3), "relu_bn": runs(0.5, 0.4), "no_bn": runs(0.3, 0.3)})[0] == "not reproduced"
    assert E.verdict({"bn_relu": runs(0.5, 0.4), "relu_bn": runs(0.5, 0.4), "no_bn": runs(0.3, 0.3)})[0] == "inconclusive"
