"""Every primitive op of the table: PyTorch parity (forward + all input gradients, float64 and
float32) and gradcheck + gradgradcheck in float64, on every backend; and the same at the inputs
where formulas commonly break (exactly 0, +-1, large magnitudes), see check_special_values."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn.autograd import gradcheck, gradgradcheck
from tinygrad_bn.autograd.gradcheck import GradcheckError
from tests.helpers import check_grads, check_torch, needs_torch
from tests.helpers import HAVE_TORCH
from tests.ops.op_table import ALL

IDS = [entry[0] for entry in ALL]
NON_DIFFERENTIABLE_EVERYWHERE = {"sign"}  # zero gradient: gradgradcheck is trivial but still run
# ops with a kink or a tie-break at 0 or between equal values: finite differences lie there
KINKED = {"relu", "abs", "maximum", "minimum", "clamp", "clamp_min", "amax", "amin_keep",
          "max_all", "max_dim", "min_dim_keep", "where", "index_bool_mask", "sign"}


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
    if name in KINKED - NON_DIFFERENTIABLE_EVERYWHERE:
        # kinks: keep inputs away from the non-differentiable points, where finite differences lie
        low, high = opts.get("low", 0.2), opts.get("high", 1.5)
        rng = np.random.default_rng(3)
        arrays = [rng.uniform(low, high, s) * rng.choice([-1, 1], s) for s in shapes]
        if name in ("maximum", "minimum"):
            arrays[1] = arrays[1] + 0.05  # no ties between the operands
        check_grads(ours, shapes, device=device, arrays=arrays)
        return
    check_grads(ours, shapes, device=device, low=opts.get("low"), high=opts.get("high"))


# ---- special values ------------------------------------------------------------------------------
SMALL = (0.0, 1.0, -1.0)               # where a formula may divide by 0 or pick the wrong branch
SMALL_POSITIVE = (1.0, 0.5, 2.0)       # ops defined for positive inputs only (log, sqrt, div)
LARGE = (30.0, -30.0, 1e4, -1e4, 0.0)  # overflow of exp, cancellation in 1 - tanh, and the like
LARGE_POSITIVE = (30.0, 1e4, 1e-30)


def special_arrays(shapes, values, seed=0):
    """Arrays of the given shapes filled with `values` (every value appears where there is room)."""
    rng = np.random.default_rng(seed)
    out = []
    for s in shapes:
        n = int(np.prod(s, dtype=np.int64))
        flat = np.resize(np.asarray(values, dtype=np.float64), n)
        out.append(rng.permutation(flat).reshape(s))
    return out


def check_special_values(entry, device, oracle=True):
    """gradcheck + gradgradcheck at exactly 0 and +-1 (smooth ops), and, with the PyTorch oracle,
    forward and gradients at 0, +-1 and large magnitudes against PyTorch's, infinities included."""
    name, ours, theirs, shapes, opts = entry
    positive = opts.get("low") is not None and opts["low"] > 0
    if name not in KINKED:
        inputs = [tg.tensor(a, device=device, requires_grad=True)
                  for a in special_arrays(shapes, SMALL_POSITIVE if positive else SMALL)]
        try:
            gradcheck(ours, inputs)
        except GradcheckError as e:
            raise GradcheckError(f"{name}: first derivatives at {SMALL} are wrong: {e}") from None
        try:
            gradgradcheck(ours, inputs)
        except GradcheckError as e:
            raise GradcheckError(f"{name}: second derivatives at {SMALL} are wrong: {e}") from None
    if oracle and HAVE_TORCH:
        for values in ((SMALL_POSITIVE, LARGE_POSITIVE) if positive else (SMALL, LARGE)):
            with np.errstate(over="ignore"):  # exp(1e4) = inf on both sides, as it should
                check_torch(ours, theirs, shapes, device=device, atol=1e-12, rtol=1e-7,
                            arrays=special_arrays(shapes, values, seed=1))


@pytest.mark.parametrize("entry", ALL, ids=IDS)
def test_special_values(entry, device):
    check_special_values(entry, device)
