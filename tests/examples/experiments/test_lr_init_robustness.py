"""lr_init_robustness's invariants: the init scale multiplies the conv weights exactly; a run that
blows up is recorded as diverged, never raised; the verdict's widths count what they say."""
import numpy as np

import tinygrad_bn as tg
from examples.experiments import lr_init_robustness as E


def test_init_scale_multiplies_every_conv_weight():
    tg.manual_seed(0)
    base = E.PlainCNN(4, bn=True, init_scale=1.0)
    tg.manual_seed(0)
    scaled = E.PlainCNN(4, bn=True, init_scale=3.0)
    convs = lambda m: [c.weight.detach().numpy() for c in m.modules() if isinstance(c, tg.nn.Conv2d)]  # noqa: E731
    assert len(convs(base)) == 10
    for a, b in zip(convs(base), convs(scaled)):
        np.testing.assert_allclose(b, 3.0 * a, rtol=1e-6)
    assert sum(isinstance(m, tg.nn.BatchNorm2d) for m in base.modules()) == 10
    assert not any(isinstance(m, tg.nn.BatchNorm2d) for m in E.PlainCNN(4, bn=False).modules())


def test_divergence_is_recorded_not_raised():
    config = dict(E.configs("quick")["no_bn_lr3"], lr=1e4, init_scale=10.0, steps=5)

    class Ctx:
        device, scale, seed = "cpu", "quick", 0
        def steps(self, n, desc=""):
            return range(n)
    result = E.run(config, 0, Ctx())
    assert result["diverged"] is True and result["steps_done"] <= 5


def test_widths_and_verdict_follow_the_rule():
    def runs(acc, diverged=False):
        return [{"test_acc": acc, "diverged": diverged} for _ in range(3)]
    res = {}
    for variant, good in (("bn", 4), ("no_bn", 1)):
        for i, lr in enumerate((0.01, 0.1, 1.0, 3.0)):
            res[f"{variant}_lr{lr:g}"] = runs(0.9 if i < good else 0.1)
        for i, init in enumerate((0.1, 1.0, 10.0, 30.0)):
            res[f"{variant}_init{init:g}"] = runs(0.9 if i < good else 0.1)
    assert E.threshold(res) == 0.1 + 0.5 * (0.9 - 0.1)
    assert E.widths(res, "bn", "lr", 0.5) == [4, 4, 4] and E.widths(res, "no_bn", "init", 0.5) == [1, 1, 1]
    assert E.verdict(res)[0] == "reproduced"
    res["bn_lr0.01"] = runs(0.9, diverged=True)  # a diverged run never counts
    assert E.widths(res, "bn", "lr", 0.5) == [3, 3, 3]
    swapped = {k.replace("no_bn", "tmp").replace("bn", "no_bn").replace("tmp", "bn"): v for k, v in res.items()}
    assert E.verdict(swapped)[0] == "not reproduced"
