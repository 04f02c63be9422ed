"""cumsum, cumprod, prod (tinygrad_bn/ops/cumulative.py), zeros in the input included."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tests.helpers import torch, needs_torch, assert_close
from tests.ops.method_cases import parity_and_gradchecks

WITH_ZERO = {"arrays": [np.array([[0.5, 0.0, 1.5, -2.0], [1.2, -0.7, 0.0, 0.0], [0.9, 1.1, -1.3, 0.8]])]}
CASES = [
    ("cumsum", lambda a: a.cumsum(1), lambda a: a.cumsum(1), [(3, 4)], {}),
    ("cumsum_dim0", lambda a: a.cumsum(-3), lambda a: a.cumsum(-3), [(3, 2, 2)], {}),
    ("cumprod", lambda a: a.cumprod(1), lambda a: a.cumprod(1), [(3, 4)], {}),
    ("cumprod_dim0", lambda a: a.cumprod(0), lambda a: a.cumprod(0), [(4, 2)], {}),
    ("cumprod_zeros", lambda a: a.cumprod(1), lambda a: a.cumprod(1), [(3, 4)], WITH_ZERO),
    ("cumprod_zeros_dim0", lambda a: a.cumprod(0), lambda a: a.cumprod(0), [(3, 4)], WITH_ZERO),
    ("prod_all", lambda a: a.prod(), lambda a: a.prod(), [(2, 3)], {}),
    ("prod_dim", lambda a: a.prod(1), lambda a: a.prod(1), [(3, 4)], {}),
    ("prod_dim_keep", lambda a: a.prod(0, keepdim=True), lambda a: a.prod(0, keepdim=True), [(3, 4)], {}),
    ("prod_zeros", lambda a: a.prod(1), lambda a: a.prod(1), [(3, 4)], WITH_ZERO),
    ("prod_all_one_zero", lambda a: a.prod(), lambda a: a.prod(), [(2, 3)],
     {"arrays": [np.array([[0.5, 0.0, 1.5], [1.2, -0.7, 2.0]])]}),
]
test_parity_float64, test_parity_float32, test_gradcheck_and_gradgradcheck = parity_and_gradchecks(CASES)


@needs_torch
def test_integer_and_bool_inputs_give_int64_like_pytorch():
    for data in ([1, 2, 3], [True, False, True]):
        ours, ref = tg.tensor(data), torch.tensor(data)
        for name in ("cumsum", "cumprod"):
            out, want = getattr(ours, name)(0), getattr(ref, name)(0)
            assert out.dtype == tg.int64 and want.dtype == torch.int64
            assert_close(out, want)
        assert_close(ours.prod(), ref.prod())
    assert_close(tg.tensor([1, 2]).cumsum(0, dtype=tg.float64), torch.tensor([1, 2]).cumsum(0, dtype=torch.float64))


@pytest.mark.parametrize("fn,exc,pattern", [
    (lambda: tg.ones(2, 3).cumsum(2), IndexError, r"cumsum: Dimension out of range \(expected to be in range of \[-2, 1\], but got 2\)"),
    (lambda: tg.ones(2, 3).cumprod(None), TypeError, r"cumprod: dim must be an int, got NoneType"),
    (lambda: tg.ones(2, 3).prod(5), IndexError, r"prod: Dimension out of range"),
])
def test_bad_arguments(fn, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fn()
