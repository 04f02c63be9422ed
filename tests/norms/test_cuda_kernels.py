"""The fused CuPy kernels (tinygrad_bn/cuda_kernels.py) against the generic array expressions
they replace, and BatchNorm on CUDA (fused path) against BatchNorm on NumPy (generic path).
These need a GPU and skip without one."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn import cuda_kernels
from tests.helpers import assert_close

pytestmark = pytest.mark.skipif(not tg.cuda.is_available(),
                                reason="needs CuPy and a CUDA GPU (fused kernels exist only there)")


@pytest.fixture
def arrays():
    import cupy as cp
    rng = np.random.default_rng(0)
    x = cp.asarray(rng.standard_normal((6, 4, 10)))
    dy = cp.asarray(rng.standard_normal((6, 4, 10)))
    per_channel = [cp.asarray(rng.standard_normal((1, 4, 1))) for _ in range(3)]
    return cp, x, dy, per_channel


def test_kernels_match_the_generic_expressions(arrays):
    cp, x, dy, (a, b, c) = arrays
    assert cuda_kernels.available_for(cp)
    assert_close(cuda_kernels.normalize_affine(x, a, b, c).get(), ((x - a) * b + c).get(), atol=1e-12)
    assert_close(cuda_kernels.affine3(dy, x, a, b, c).get(), (a * dy + b * x + c).get(), atol=1e-12)
    assert_close(cuda_kernels.centred_product_sum(dy, x, a, (0, 2)).get(),
                 (dy * (x - a)).sum(axis=(0, 2), keepdims=True).get(), atol=1e-10)
    assert_close(cuda_kernels.centred_square_sum(x, a, (0, 2)).get(), ((x - a) ** 2).sum(axis=(0, 2), keepdims=True).get(), atol=1e-10)


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_on_cuda_matches_numpy(training):
    outputs = {}
    for device in ("cpu", "cuda"):
        tg.manual_seed(0)
        bn = tg.nn.BatchNorm2d(3).double().to(device)
        bn.train(training)
        x_np = np.random.default_rng(1).standard_normal((5, 3, 4, 4))
        x = tg.tensor(x_np, device=device, requires_grad=True)
        y = bn(x)
        y.backward(tg.tensor(np.random.default_rng(2).standard_normal(y.shape), device=device))
        outputs[device] = (y, x.grad, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var)
    for ours, ref in zip(outputs["cuda"], outputs["cpu"]):
        assert_close(ours, ref, atol=1e-10)


def test_float16_sums_do_not_overflow():
    """65,536 values of 2 per channel: a float16 sum would overflow (65,504), float32 does not."""
    import cupy as cp
    x = cp.full((64, 1, 1024), 2.0, dtype=cp.float16)
    mean = cp.zeros((1, 1, 1), dtype=cp.float16)
    assert float(cuda_kernels.centred_square_sum(x, mean, (0, 2)).get().item()) == 4.0 * 65536
    assert float(cuda_kernels.centred_product_sum(x, x, mean, (0, 2)).get().item()) == 4.0 * 65536
