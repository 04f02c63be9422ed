"""ghost_bn's invariants: GhostBN with k equal to the batch is BN (outputs, gradients, running
statistics to rounding: 1e-12 in float64 and 1e-5 in float32, since the two layers sum in a
different order; num_batches_tracked exactly), and with k < batch it is not; the experiment's model
uses the configured ghost size; the verdict follows its rule."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn import nn
from tinygrad_bn.norms.ghostbn import GhostBatchNorm2d
from examples.experiments import ghost_bn as E


def step(layer, x, dy):
    xt = tg.tensor(x, requires_grad=True)
    y = layer(xt)
    y.backward(tg.tensor(dy))
    return (y.detach().numpy(), xt.grad.numpy(), layer.weight.grad.numpy(), layer.bias.grad.numpy(),
            layer.running_mean.numpy().copy(), layer.running_var.numpy().copy(),
            int(layer.num_batches_tracked.item()))


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("k, same", [(16, True), (4, False)])
def test_ghost_bn_with_k_equal_to_the_batch_is_bn(k, same, dtype, tol):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((16, 3, 4, 4)) * 3 + 1).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    bn = nn.BatchNorm2d(3, dtype=getattr(tg, dtype))
    ghost = GhostBatchNorm2d(3, virtual_batch_size=k, dtype=getattr(tg, dtype))
    for layer in (bn, ghost):  # non-trivial affine parameters, the same in both
        layer.weight.data[...] = np.array([0.5, 2.0, -1.0], dtype)
        layer.bias.data[...] = np.array([0.1, -0.3, 0.7], dtype)
    a, b = step(bn, x, dy), step(ghost, x, dy)
    if same:
        for u, v in zip(a[:-1], b[:-1]):
            assert u.dtype == v.dtype == np.dtype(dtype)
            np.testing.assert_allclose(v, u, rtol=tol, atol=tol)
        assert a[-1] == b[-1] == 1
    else:
        assert not np.allclose(a[0], b[0], atol=1e-3) and b[-1] == 16 // k


def test_model_uses_the_configured_ghost_size():
    config = E.configs("quick")["ghost_k8"]
    layers = [m for m in E.make_model(config).modules() if isinstance(m, GhostBatchNorm2d)]
    assert layers and all(m.virtual_batch_size == 8 for m in layers)
    plain = E.make_model(E.configs("quick")["bn_large"])
    assert not any(isinstance(m, GhostBatchNorm2d) for m in plain.modules())


def test_verdict_follows_the_rule():
    def runs(acc):
        return [{"test_acc": acc + 0.001 * s} for s in range(3)]
    base = {"bn_large": runs(0.4), "ghost_k8": runs(0.5), "bn_small": runs(0.6)}
    assert E.verdict({**base, "ghost_k32": runs(0.5)})[0] == "reproduced"
    assert E.verdict({**base, "ghost_k32": runs(0.3)})[0] == "not reproduced"
    assert E.verdict({**base, "ghost_k32": runs(0.4)})[0] == "inconclusive"
    assert E.verdict({**base, "bn_large": runs(0.7), "ghost_k32": runs(0.8)})[0] == "not reproduced"
