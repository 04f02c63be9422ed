"""mm, bmm, outer, einsum, norm (tinygrad_bn/ops/linalg.py)."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tests.helpers import torch, needs_torch, assert_close
from tests.ops.method_cases import parity_and_gradchecks

INF = float("inf")
CASES = [
    ("mm", lambda a, b: a.mm(b), lambda a, b: a.mm(b), [(2, 3), (3, 4)], {}),
    ("bmm", lambda a, b: a.bmm(b), lambda a, b: a.bmm(b), [(2, 2, 3), (2, 3, 4)], {}),
    ("outer", lambda a, b: a.outer(b), lambda a, b: a.outer(b), [(3,), (4,)], {}),
    ("einsum_matmul", lambda a, b: tg.einsum("ij,jk->ik", a, b), lambda a, b: torch.einsum("ij,jk->ik", a, b), [(2, 3), (3, 4)], {}),
    ("einsum_implicit", lambda a, b: tg.einsum("ij,jk", a, b), lambda a, b: torch.einsum("ij,jk", a, b), [(2, 3), (3, 4)], {}),
    ("einsum_list", lambda a, b: tg.einsum("bi,bi->b", [a, b]), lambda a, b: torch.einsum("bi,bi->b", [a, b]), [(3, 4), (3, 4)], {}),
    ("einsum_trace", lambda a: tg.einsum("ii", a), lambda a: torch.einsum("ii", a), [(3, 3)], {}),
    ("einsum_diagonal", lambda a: tg.einsum("ii->i", a), lambda a: torch.einsum("ii->i", a), [(3, 3)], {}),
    ("einsum_sum_out", lambda a: tg.einsum("ijk->j", a), lambda a: torch.einsum("ijk->j", a), [(2, 3, 4)], {}),
    ("einsum_transpose", lambda a: tg.einsum("ij->ji", a), lambda a: torch.einsum("ij->ji", a), [(2, 3)], {}),
    ("einsum_ellipsis", lambda a, b: tg.einsum("...ij,...jk->...ik", a, b),
     lambda a, b: torch.einsum("...ij,...jk->...ik", a, b), [(2, 2, 3), (2, 3, 2)], {}),
    ("einsum_ellipsis_right_aligned", lambda a, b: tg.einsum("...i,i->...", a, b),
     lambda a, b: torch.einsum("...i,i->...", a, b), [(2, 3, 4), (4,)], {}),
    ("einsum_ellipsis_broadcast", lambda a, b: tg.einsum("...ij,...jk->...ik", a, b),
     lambda a, b: torch.einsum("...ij,...jk->...ik", a, b), [(1, 2, 3), (3, 3, 2)], {}),
    ("einsum_three", lambda a, b, c: tg.einsum("i,ij,j->", a, b, c),
     lambda a, b, c: torch.einsum("i,ij,j->", a, b, c), [(2,), (2, 3), (3,)], {}),
    ("einsum_outer_batch", lambda a, b: tg.einsum("bi,bj->bij", a, b),
     lambda a, b: torch.einsum("bi,bj->bij", a, b), [(2, 3), (2, 2)], {}),
    ("norm_fro", lambda a: a.norm(), lambda a: a.norm(), [(3, 4)], {}),
    ("norm_dim", lambda a: a.norm(dim=1), lambda a: a.norm(dim=1), [(3, 4)], {}),
    ("norm_p1_keep", lambda a: a.norm(1, dim=0, keepdim=True), lambda a: a.norm(1, dim=0, keepdim=True), [(3, 4)], {}),
    ("norm_p3_dims", lambda a: a.norm(3, dim=(0, 2)), lambda a: a.norm(3, dim=(0, 2)), [(2, 3, 2)], {}),
    ("norm_inf", lambda a: a.norm(INF, dim=1), lambda a: a.norm(INF, dim=1), [(3, 4)], {}),
    ("norm_neg_inf", lambda a: a.norm(-INF), lambda a: a.norm(-INF), [(3, 4)], {}),
]
test_parity_float64, test_parity_float32, test_gradcheck_and_gradgradcheck = parity_and_gradchecks(CASES)


@needs_torch
def test_norm_of_zeros_has_zero_gradient_like_pytorch():
    ours = tg.zeros(3, dtype=tg.float64, requires_grad=True)
    ref = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    ours.norm().backward()
    ref.norm().backward()
    assert_close(ours.grad, ref.grad)
    assert_close(tg.tensor([0.0, 2.0, -1.0]).norm(0), torch.tensor([0.0, 2.0, -1.0]).norm(0))


@pytest.mark.parametrize("fn,exc,pattern", [
    (lambda: tg.ones(2, 3).mm(tg.ones(3)), RuntimeError, r"mm: expected two matrices, got shapes \[2, 3\] and \[3\]"),
    (lambda: tg.ones(2, 3).mm(tg.ones(4, 2)), RuntimeError, r"matmul: mat1 and mat2 shapes cannot be multiplied \(2x3 and 4x2\)"),
    (lambda: tg.ones(2, 2, 3).bmm(tg.ones(3, 3, 4)), RuntimeError, r"bmm: batch1 and batch2 must have the same batch size, got 2 and 3"),
    (lambda: tg.ones(2, 3).bmm(tg.ones(2, 3, 4)), RuntimeError, r"bmm: batch1 and batch2 must be 3D tensors, got shapes \[2, 3\] and \[2, 3, 4\]"),
    (lambda: tg.ones(2, 3).outer(tg.ones(3)), RuntimeError, r"outer: expected two 1-D vectors, got shapes \[2, 3\] and \[3\]"),
    (lambda: tg.einsum("ij,jk->ik", tg.ones(2, 3), tg.ones(4, 2)), RuntimeError, r"einsum\(\): subscript 'j' has size 3 in one operand and 4 in another"),
    (lambda: tg.einsum("ij,jk->ik", tg.ones(2, 3)), ValueError, r"einsum\(\): the equation 'ij,jk->ik' has 2 operand\(s\) but 1 tensor\(s\) were given"),
    (lambda: tg.einsum("ijk->i", tg.ones(2, 3)), RuntimeError, r"einsum\(\): the subscripts 'ijk' do not match operand of shape \[2, 3\] \(2 dims\)"),
    (lambda: tg.einsum("ij->iz", tg.ones(2, 3)), ValueError, r"einsum\(\): output subscript 'z' appears in no operand"),
    (lambda: tg.einsum(tg.ones(2), "i"), TypeError, r"einsum\(\): the first argument must be the equation string"),
    (lambda: tg.ones(3).norm("nuc"), RuntimeError, r"norm: p must be 'fro', inf, -inf or a number, got 'nuc'"),
    (lambda: tg.tensor([1, 2]).norm(), RuntimeError, r"norm\(\): input dtype should be floating point, but got int64"),
])
def test_bad_arguments(fn, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fn()


# ---- normalize (issue 15) ------------------------------------------------------------------------
from tests.helpers import check_grads, check_torch  # noqa: E402
from tinygrad_bn.ops.linalg import normalize  # noqa: E402


@pytest.mark.parametrize("p, dim", [(2.0, 1), (1.0, 0), (3, -1), (INF, 1), (0.5, 2), ("fro", 1), (None, 0)])
def test_normalize_matches_torch(device, p, dim):
    check_torch(lambda x: normalize(x, p=p, dim=dim), lambda x: torch.nn.functional.normalize(x, p=p, dim=dim),
                [(3, 4, 2)], device=device)


@pytest.mark.parametrize("p, dim", [(-1.0, 1), (-2.5, 0)])
def test_normalize_negative_p_matches_torch(device, p, dim):
    """(sum |x|^p)^(1/p), as PyTorch's vector_norm gives for a negative p (inputs away from 0)."""
    check_torch(lambda x: normalize(x, p=p, dim=dim), lambda x: torch.nn.functional.normalize(x, p=p, dim=dim),
                [(3, 4)], device=device, low=0.3, high=2.0)


def test_normalize_against_numpy_and_eps():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-14, 0.0]])
    got = normalize(tg.tensor(x), dim=1).numpy()
    expected = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    np.testing.assert_allclose(got, expected, rtol=1e-15)   # rows of norm below eps are divided by eps


def test_normalize_gradcheck_and_double_backward(device):
    check_grads(lambda x: normalize(x, p=2.0, dim=1), [(2, 3)], device=device)
    check_grads(lambda x: normalize(x, p=3.0, dim=0), [(3, 2)], device=device, low=0.5, high=2.0)
    check_grads(lambda x: normalize(x, p=-1.5, dim=1), [(2, 3)], device=device, low=0.5, high=2.0)


@pytest.mark.parametrize("fn, exc, pattern", [
    (lambda: normalize(tg.tensor([1, 2])), RuntimeError, r"normalize: expected a floating-point input, got dtype int64"),
    (lambda: normalize(tg.ones(2, 3), p="nuc"), RuntimeError, r"normalize: p='nuc' is not supported; expected a number, 'fro' or None"),
    (lambda: normalize(tg.ones(2, 3), p=[2]), TypeError, r"normalize\(\): argument 'p' must be a number, got list"),
    (lambda: normalize(tg.ones(2, 3), dim=2), IndexError, r"normalize: Dimension out of range \(expected to be in range of \[-2, 1\], but got 2\)"),
    (lambda: normalize([1.0, 2.0]), TypeError, r"normalize"),
])
def test_normalize_bad_arguments(fn, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fn()


@pytest.mark.parametrize("p, dim", [(-1.0, 1), (-2.5, None), (-3, (0, 1))])
def test_norm_negative_p_matches_torch(device, p, dim):
    """tg.norm with p < 0 (it refused it before): (sum |x|^p)^(1/p), as torch.norm gives."""
    check_torch(lambda x: tg.norm(x, p, dim), lambda x: torch.norm(x, p, dim), [(3, 4)], device=device,
                low=0.3, high=2.0)
    check_grads(lambda x: tg.norm(x, p, dim), [(2, 3)], device=device, low=0.5, high=2.0)


def test_norm_negative_p_of_nothing_raises_as_torch():
    with pytest.raises(RuntimeError, match="cannot compute the -1 norm on an empty tensor"):
        tg.norm(tg.ones(0), -1)
    with pytest.raises(RuntimeError, match="cannot compute the -1 norm on the dimension 0"):
        tg.norm(tg.ones(0, 2), -1, 0)
    assert tg.norm(tg.ones(0, 2), -1, 1).shape == (0,)
