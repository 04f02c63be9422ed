"""gather, scatter, scatter_add, index_select, masked_fill (tinygrad_bn/ops/indexing.py)."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tests.helpers import torch, needs_torch, assert_close, check_grads
from tests.ops.method_cases import parity_and_gradchecks

IDX = np.array([[0, 2], [1, 1], [3, 0]])            # repeats: the gradient must add up
IDX0 = np.array([[2, 0, 1, 1], [0, 2, 2, 1]])        # along dim 0 of a (3, 4)
ROWS = np.array([2, 0, 2])


def _t(a):
    return torch.tensor(a)


def _i(like, values):
    """An index (or mask) on the device of the tensor it indexes."""
    return tg.tensor(values, device=like.device)


CASES = [
    ("gather_dim1", lambda a: a.gather(1, _i(a, IDX)), lambda a: a.gather(1, _t(IDX)), [(3, 4)], {}),
    ("gather_dim0", lambda a: a.gather(0, _i(a, IDX0)), lambda a: a.gather(0, _t(IDX0)), [(3, 4)], {}),
    ("gather_smaller_index", lambda a: a.gather(-1, _i(a, IDX[:2, :1])),
     lambda a: a.gather(-1, _t(IDX[:2, :1])), [(3, 4)], {}),
    ("scatter_src", lambda a, s: a.scatter(1, _i(a, np.array([[0, 2], [1, 3], [3, 0]])), s),
     lambda a, s: a.scatter(1, _t(np.array([[0, 2], [1, 3], [3, 0]])), s), [(3, 4), (3, 2)], {}),
    ("scatter_value", lambda a: a.scatter(1, _i(a, IDX), 1.5), lambda a: a.scatter(1, _t(IDX), 1.5), [(3, 4)], {}),
    ("scatter_add", lambda a, s: a.scatter_add(1, _i(a, IDX), s),
     lambda a, s: a.scatter_add(1, _t(IDX), s), [(3, 4), (3, 2)], {}),
    ("index_select", lambda a: a.index_select(0, _i(a, ROWS)), lambda a: a.index_select(0, _t(ROWS)), [(3, 4)], {}),
    ("index_select_dim1", lambda a: a.index_select(-1, _i(a, [3, 3])),
     lambda a: a.index_select(-1, torch.tensor([3, 3])), [(2, 4)], {}),
    ("masked_fill", lambda a: a.masked_fill(a > 0, -2.0), lambda a: a.masked_fill(a > 0, -2.0), [(3, 4)], {}),
    ("masked_fill_bcast_mask", lambda a: a.masked_fill(_i(a, [True, False, True, False]), 0.5),
     lambda a: a.masked_fill(torch.tensor([True, False, True, False]), 0.5), [(3, 4)], {}),
    ("masked_fill_tensor_value", lambda a, v: a.masked_fill(a < 0, v.sum()),
     lambda a, v: a.masked_fill(a < 0, v.sum()), [(3, 4), (2,)], {}),
]
test_parity_float64, test_parity_float32, test_gradcheck_and_gradgradcheck = parity_and_gradchecks(CASES)


@needs_torch
def test_top_level_forms_and_inplace_masked_fill():
    a = np.arange(12.0).reshape(3, 4)
    x = tg.tensor(a)
    assert_close(tg.ops.indexing.gather(x, 1, _i(a, IDX)), torch.gather(_t(a), 1, _t(IDX)))
    y = x.clone()
    y.masked_fill_(y > 5, 0.0)
    assert_close(y, _t(a).masked_fill(_t(a) > 5, 0.0))


@pytest.mark.parametrize("fn,exc,pattern", [
    (lambda: tg.ones(3, 4).gather(1, tg.tensor([[0.0]])), RuntimeError, r"gather\(\): Expected dtype int64 for index, got float32"),
    (lambda: tg.ones(3, 4).gather(1, tg.tensor([0, 1])), RuntimeError, r"gather: Index tensor must have the same number of dimensions as input tensor \(index shape \[2\], input shape \[3, 4\]\)"),
    (lambda: tg.ones(3, 4).gather(1, tg.tensor([[4]])), IndexError, r"gather: index 4 is out of bounds for dimension 1 with size 4"),
    (lambda: tg.ones(3, 4).gather(1, tg.zeros(4, 1, dtype=tg.int64)), RuntimeError, r"gather: Size does not match at dimension 0"),
    (lambda: tg.ones(3, 4).gather(2, tg.tensor([[0]])), IndexError, r"gather: Dimension out of range"),
    (lambda: tg.ones(3, 4).scatter(1, tg.tensor([[0, 1]]), tg.ones(1, 1)), RuntimeError, r"scatter: Expected index \[1, 2\] to be no larger than src \[1, 1\] in dimension 1"),
    (lambda: tg.ones(3, 4).scatter(1, tg.tensor([[0]]), tg.ones(1, 1, dtype=tg.float64)), RuntimeError, r"scatter\(\): Expected self.dtype to be equal to src.dtype \(got float32 and float64\)"),
    (lambda: tg.ones(3, 4).scatter(1, tg.tensor([[0]]), 1.0, reduce="multiply"), RuntimeError, r"scatter: reduce must be None or 'add', got 'multiply'"),
    (lambda: tg.ones(3, 4).index_select(0, tg.tensor([[0]])), IndexError, r"index_select\(\): Expected a 1-D \(or 0-d\) int64 index tensor, got int64 tensor of shape \[1, 1\]"),
    (lambda: tg.ones(3, 4).index_select(0, tg.tensor([3])), IndexError, r"index_select\(\): index 3 is out of bounds for dimension 0 with size 3"),
    (lambda: tg.ones(3, 4).masked_fill(tg.ones(3, 4), 0.0), RuntimeError, r"masked_fill: expected a bool mask tensor, got float32"),
    (lambda: tg.ones(3, 4).masked_fill(tg.ones(2, 3, 4).bool(), 0.0), RuntimeError, r"masked_fill: mask of shape \[2, 3, 4\] cannot be broadcast to the input's shape \[3, 4\]"),
    (lambda: tg.ones(3).masked_fill(tg.ones(3).bool(), tg.ones(2)), RuntimeError, r"masked_fill only supports a 0-dimensional value tensor, but got tensor with 1 dimension"),
])
def test_bad_arguments(fn, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fn()


def test_negative_indices_count_from_the_end():
    x = tg.tensor([[1.0, 2.0, 3.0]])
    assert x.gather(1, tg.tensor([[-1, 0]])).tolist() == [[3.0, 1.0]]


def test_src_larger_than_index_gets_zero_gradient_where_unread(device):
    # PyTorch's own backward refuses this case; checked against finite differences instead
    idx = tg.tensor([[2, 0, 1, 0]], device=device)
    check_grads(lambda a, s: a.scatter(0, idx, s) * 2, [(3, 4), (2, 5)], device=device)
    check_grads(lambda a, s: a.scatter_add(0, idx, s) * 2, [(3, 4), (2, 5)], device=device)
