"""sort and topk (tinygrad_bn/ops/sorting.py): values, indices, and gradients through gather."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tests.helpers import torch, needs_torch, assert_close
from tests.ops.method_cases import parity_and_gradchecks

CASES = [
    ("sort", lambda a: a.sort()[0], lambda a: a.sort()[0], [(3, 5)], {}),
    ("sort_dim0_desc", lambda a: a.sort(0, descending=True).values, lambda a: a.sort(0, descending=True).values, [(4, 3)], {}),
    ("topk", lambda a: a.topk(2).values, lambda a: a.topk(2).values, [(3, 5)], {}),
    ("topk_smallest_dim0", lambda a: a.topk(3, dim=0, largest=False)[0],
     lambda a: a.topk(3, dim=0, largest=False)[0], [(4, 2)], {}),
]
test_parity_float64, test_parity_float32, test_gradcheck_and_gradgradcheck = parity_and_gradchecks(CASES)


@needs_torch
@pytest.mark.parametrize("descending", [False, True])
def test_indices_match_pytorch_stable_sort_with_ties_and_nan(descending, device):
    data = np.array([[3.0, 1.0, 3.0, np.nan, 1.0, 2.0], [0.0, -1.0, 0.0, 5.0, 5.0, -1.0]])
    ours = tg.tensor(data, device=device).sort(dim=-1, descending=descending, stable=True)
    ref = torch.tensor(data).sort(dim=-1, descending=descending, stable=True)
    assert_close(ours.values, ref.values)
    assert_close(ours.indices, ref.indices)
    assert ours.indices.dtype == tg.int64


@needs_torch
def test_topk_indices_and_int_inputs():
    data = np.array([[4, 1, 7, 3], [2, 9, 0, 9]])
    ours, ref = tg.tensor(data).topk(2), torch.tensor(data).topk(2)
    assert_close(ours.values, ref.values)
    assert_close(ours.indices, ref.indices)
    values, indices = tg.tensor([True, False, True]).sort()
    assert values.tolist() == [False, True, True] and indices.tolist() == [1, 0, 2]


@pytest.mark.parametrize("fn,exc,pattern", [
    (lambda: tg.ones(2, 3).topk(4), RuntimeError, r"topk: selected index k \(4\) out of range for dimension 1 of size 3 \(input shape \[2, 3\]\)"),
    (lambda: tg.ones(2, 3).topk(1.5), TypeError, r"topk: k must be an int, got 1.5"),
    (lambda: tg.ones(2, 3).sort(3), IndexError, r"sort: Dimension out of range"),
])
def test_bad_arguments(fn, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fn()
