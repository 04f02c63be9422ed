"""small_batch's invariants: every registry normalizer is crossed with every batch size, the
learning rate scales linearly with the batch, the model carries the configured normalizer (and
Batch Renorm its compressed schedule), and the verdict follows its rule."""
import pytest

from tinygrad_bn import nn
from tinygrad_bn.norms.batchrenorm import BatchRenorm2d
from examples.experiments import small_batch as E


@pytest.mark.parametrize("scale", ["quick", "default", "full"])
def test_configs_cross_every_normalizer_with_every_batch(scale):
    configs = E.configs(scale)
    batches = E.SCALES[scale]["batches"]
    assert set(configs) == {f"{s}_b{b}" for s in E.NORMS for b in batches}
    for name, c in configs.items():
        assert c["norm"] == E.NORMS[name.split("_b")[0]]
        assert c["lr"] == pytest.approx(c["base_lr"] * c["batch_size"] / 32)


def test_model_uses_the_configured_normalizer():
    configs = E.configs("quick")
    bn = E.make_model(configs["BN_b2"], 100)
    assert any(type(m) is nn.BatchNorm2d for m in bn.modules())
    assert not any(isinstance(m, nn.GroupNorm) for m in bn.modules())
    gn = E.make_model(configs["GN_b2"], 100)
    assert any(isinstance(m, nn.GroupNorm) for m in gn.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gn.modules())
    brn = [m for m in E.make_model(configs["BRN_b2"], 100).modules() if isinstance(m, BatchRenorm2d)]
    assert brn  # plain BN for the first 10% of 100 steps, rmax 3 at 60%, dmax 5 at 40%
    for m in brn:
        assert (m.rmax(10), m.dmax(10)) == (1.0, 0.0)
        assert (m.rmax(60), m.dmax(40)) == (3.0, 5.0)
        assert 1.0 < m.rmax(35) < 3.0


def test_verdict_follows_the_rule():
    def runs(acc):
        return [{"test_acc": acc + 0.001 * s} for s in range(3)]

    def results(bn2, bn32, gn2):
        out = {f"{s}_b{b}": runs(0.5) for s in E.NORMS for b in (2, 32)}
        out.update(BN_b2=runs(bn2), BN_b32=runs(bn32), GN_b2=runs(gn2))
        return out

    assert E.verdict(results(0.3, 0.6, 0.5))[0] == "reproduced"
    assert E.verdict(results(0.7, 0.6, 0.8))[0] == "not reproduced"   # BN rises as the batch shrinks
    assert E.verdict(results(0.3, 0.6, 0.2))[0] == "not reproduced"   # GN below BN at batch 2
    assert E.verdict(results(0.3, 0.6, 0.3))[0] == "inconclusive"     # GN ties BN at batch 2
    assert E.verdict(results(0.6, 0.6, 0.8))[0] == "inconclusive"     # BN flat
