"""sin, cos, floor, ceil, round, trunc, isnan, isinf (tinygrad_bn/ops/pointwise.py)."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tests.helpers import torch, needs_torch, assert_close
from tests.ops.method_cases import parity_and_gradchecks
from tinygrad_bn.ops import pointwise

# the rounding ops' inputs stay away from the jumps (x.5 for round, integers for floor/ceil)
STEPS = {"arrays": [np.array([[-1.7, -0.2, 0.3], [1.2, 2.6, -3.3]])]}
CASES = [
    ("sin", lambda a: a.sin(), lambda a: a.sin(), [(3, 4)], {}),
    ("cos", lambda a: a.cos(), lambda a: a.cos(), [(3, 4)], {}),
    ("floor", lambda a: a.floor(), lambda a: a.floor(), [(2, 3)], STEPS),
    ("ceil", lambda a: a.ceil(), lambda a: a.ceil(), [(2, 3)], STEPS),
    ("round", lambda a: a.round(), lambda a: a.round(), [(2, 3)], STEPS),
    ("round_decimals", lambda a: a.round(decimals=1), lambda a: a.round(decimals=1), [(2, 3)],
     {"arrays": [np.array([[-1.73, -0.21, 0.33], [1.22, 2.67, -3.38]])]}),
    ("trunc", lambda a: a.trunc(), lambda a: a.trunc(), [(2, 3)], STEPS),
]
test_parity_float64, test_parity_float32, test_gradcheck_and_gradgradcheck = parity_and_gradchecks(CASES)


@needs_torch
def test_round_half_to_even_and_isnan_isinf_like_pytorch(device):
    data = np.array([0.5, 1.5, 2.5, -0.5, np.nan, np.inf, -np.inf, 1.0])
    ours, ref = tg.tensor(data, device=device), torch.tensor(data)
    assert_close(ours.round(), ref.round())
    assert_close(ours.isnan(), ref.isnan())
    assert_close(ours.isinf(), ref.isinf())
    assert ours.isnan().dtype == tg.bool_


def test_integer_inputs():
    x = tg.tensor([1, -2, 3])
    assert x.floor().dtype == tg.int64 and x.floor().tolist() == [1, -2, 3]
    assert x.sin().dtype == tg.float32  # math of integers is in the default float dtype
    assert x.isnan().tolist() == [False] * 3 and x.isinf().tolist() == [False] * 3


@pytest.mark.parametrize("fn,exc,pattern", [
    (lambda: tg.tensor([1, 2]).round(decimals=1), RuntimeError, r"round: decimals=1 is only supported for floating-point tensors, got dtype int64"),
    (lambda: tg.ones(2).round(decimals=1.5), TypeError, r"round: decimals must be an int, got 1.5"),
    (lambda: pointwise.isnan([1.0]), TypeError, r"isnan: expected a Tensor, got list"),
])
def test_bad_arguments(fn, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fn()
