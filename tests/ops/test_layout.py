"""flip, roll, repeat, tril, triu, diag, unbind, unflatten, t (tinygrad_bn/ops/layout.py)."""
import pytest

import tinygrad_bn as tg
from tests.helpers import torch, needs_torch, assert_close
from tests.ops.method_cases import parity_and_gradchecks

CASES = [
    ("flip", lambda a: a.flip(0, 2), lambda a: a.flip(0, 2), [(2, 3, 4)], {}),
    ("flip_list", lambda a: a.flip([-1]), lambda a: a.flip([-1]), [(2, 3)], {}),
    ("roll_flat", lambda a: a.roll(2), lambda a: a.roll(2), [(3, 4)], {}),
    ("roll_dims", lambda a: a.roll((1, -2), (0, 1)), lambda a: a.roll((1, -2), (0, 1)), [(3, 4)], {}),
    ("repeat", lambda a: a.repeat(2, 1, 3), lambda a: a.repeat(2, 1, 3), [(2, 3)], {}),
    ("repeat_tuple", lambda a: a.repeat((2, 2)), lambda a: a.repeat((2, 2)), [(3,)], {}),
    ("tril", lambda a: a.tril(), lambda a: a.tril(), [(3, 4)], {}),
    ("tril_batched_k", lambda a: a.tril(-1), lambda a: a.tril(-1), [(2, 4, 3)], {}),
    ("triu", lambda a: a.triu(1), lambda a: a.triu(1), [(4, 3)], {}),
    ("diag_embed", lambda a: a.diag(), lambda a: a.diag(), [(3,)], {}),
    ("diag_embed_k", lambda a: a.diag(-2), lambda a: a.diag(-2), [(3,)], {}),
    ("diag_extract", lambda a: a.diag(), lambda a: a.diag(), [(3, 4)], {}),
    ("diag_extract_k", lambda a: a.diag(1), lambda a: a.diag(1), [(4, 3)], {}),
    ("unbind", lambda a: a.unbind(1), lambda a: a.unbind(1), [(2, 3)], {}),
    ("unflatten", lambda a: a.unflatten(1, (2, -1)), lambda a: a.unflatten(1, (2, -1)), [(3, 6)], {}),
    ("t", lambda a: a.t(), lambda a: a.t(), [(2, 3)], {}),
    ("t_vector", lambda a: a.t() * 1, lambda a: a.t() * 1, [(3,)], {}),
    ("narrow", lambda a: a.narrow(1, 1, 2), lambda a: a.narrow(1, 1, 2), [(2, 4)], {}),
]
test_parity_float64, test_parity_float32, test_gradcheck_and_gradgradcheck = parity_and_gradchecks(CASES)


@needs_torch
def test_flip_copies():
    x = tg.tensor([1.0, 2.0, 3.0])
    y = x.flip(0)
    y[0] = 10.0
    assert x.tolist() == [1.0, 2.0, 3.0]
    assert_close(tg.tensor([[1, 2], [3, 4]]).tril(), torch.tensor([[1, 2], [3, 4]]).tril())


@pytest.mark.parametrize("fn,exc,pattern", [
    (lambda: tg.ones(3).tril(), RuntimeError, r"tril: input tensor must have at least 2 dimensions, got shape \[3\]"),
    (lambda: tg.ones(2, 2).triu(0.5), TypeError, r"triu: diagonal must be an int, got 0.5"),
    (lambda: tg.ones(2, 3).repeat(2), RuntimeError, r"repeat: Number of dimensions of repeat dims \(1\) can not be smaller than number of dimensions of tensor \(2, shape \[2, 3\]\)"),
    (lambda: tg.ones(2, 3).roll((1, 1), 0), RuntimeError, r"roll: shifts and dimensions must align. shifts: 2, dims: 1"),
    (lambda: tg.ones(2, 3).flip(2), IndexError, r"flip: Dimension out of range"),
    (lambda: tg.ones(2, 2, 2).diag(), RuntimeError, r"diag\(\): Supports 1D or 2D tensors. Got 3D \(shape \[2, 2, 2\]\)"),
    (lambda: tg.ones(2, 2, 2).t(), RuntimeError, r"t\(\) expects a tensor with <= 2 dimensions, but self is 3D"),
    (lambda: tg.ones(2, 6).unflatten(1, (4, 2)), RuntimeError, r"unflatten: Provided sizes \[4, 2\] don't multiply up to the size of dim 1 \(6\) in the input tensor of shape \[2, 6\]"),
    (lambda: tg.tensor(1.0).unbind(), IndexError, r"unbind: Dimension specified as 0 but tensor has no dimensions"),
])
def test_bad_arguments(fn, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fn()
