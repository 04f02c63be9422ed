"""A tiny driver shared by the test files of the ops added for issue 15: each case is
(id, our_fn, torch_fn, input shapes, options) as in op_table.py; options: low/high (input range),
grad=False (no gradient), double=False (skip gradgradcheck, with a reason in the table)."""
import numpy as np
import pytest

from tests.helpers import check_grads, check_torch


def parity_and_gradchecks(cases):
    """Three parametrized tests for a table: PyTorch parity in float64 and in float32 (forward and
    every input gradient), and gradcheck + gradgradcheck in float64, all on every backend."""
    ids = [c[0] for c in cases]

    @pytest.mark.parametrize("case", cases, ids=ids)
    def test_parity_float64(case, device):
        name, ours, theirs, shapes, opts = case
        check_torch(ours, theirs, shapes, device=device, low=opts.get("low"), high=opts.get("high"),
                    grad=opts.get("grad", True), arrays=opts.get("arrays"))

    @pytest.mark.parametrize("case", cases, ids=ids)
    def test_parity_float32(case, device):
        name, ours, theirs, shapes, opts = case
        arrays = opts.get("arrays")
        check_torch(ours, theirs, shapes, device=device, dtype=np.float32, atol=1e-5, rtol=1e-4,
                    low=opts.get("low"), high=opts.get("high"), grad=opts.get("grad", True),
                    arrays=None if arrays is None else [a.astype(np.float32) for a in arrays])

    differentiable = [c for c in cases if c[4].get("grad", True)]

    @pytest.mark.parametrize("case", differentiable, ids=[c[0] for c in differentiable])
    def test_gradcheck_and_gradgradcheck(case, device):
        name, ours, _, shapes, opts = case
        check_grads(ours, shapes, device=device, low=opts.get("low"), high=opts.get("high"),
                    double=opts.get("double", True), arrays=opts.get("arrays"))

    return test_parity_float64, test_parity_float32, test_gradcheck_and_gradgradcheck
