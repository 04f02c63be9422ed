"""Every primitive op of the table: PyTorch parity (forward + all input gradients, float64 and
float32) and gradcheck + gradgradcheck in float64, on every backend."""
import numpy as np
import pytest

from tests.helpers import check_grads, check_torch, needs_torch
from tests.ops.op_table import ALL

IDS = [entry[0] for entry in ALL]
NON_DIFFERENTIABLE_EVERYWHERE = {"sign"}  # zero gradient: gradgradcheck is trivial but still run


@needs_torch
@pytest.mark.parametrize("entry", ALL, ids=IDS)
def test_parity_float64(entry, device):
    name, ours, theirs, shapes, opts = entry
    check_torch(ours, theirs, shapes, device=device, low=opts.get("low"), high=opts.get("high"))


@needs_torch
@pytest.mark.parametrize("entry", ALL, ids=IDS)
def test_parity_float32(entry, device):
    name, ours, theirs, shapes, opts = entry
    check_torch(ours, theirs, shapes, device=device, dtype=np.float32, atol=1e-5, rtol=1e-4,
                low=opts.get("low"), high=opts.get("high"))


@pytest.mark.parametrize("entry", ALL, ids=IDS)
def test_gradcheck_and_gradgradcheck(entry, device):
    name, ours, _, shapes, opts = entry
    if name in ("relu", "abs", "maximum", "minimum", "clamp", "clamp_min", "amax", "amin_keep",
                "max_all", "max_dim", "min_dim_keep", "where", "index_bool_mask"):
        # kinks: keep inputs away from the non-differentiable points, where finite differences lie
        low, high = opts.get("low", 0.2), opts.get("high", 1.5)
        rng = np.random.default_rng(3)
        arrays = [rng.uniform(low, high, s) * rng.choice([-1, 1], s) for s in shapes]
        if name in ("maximum", "minimum"):
            arrays[1] = arrays[1] + 0.05  # no ties between the operands
        check_grads(ours, shapes, device=device, arrays=arrays)
        return
    check_grads(ours, shapes, device=device, low=opts.get("low"), high=opts.get("high"))
