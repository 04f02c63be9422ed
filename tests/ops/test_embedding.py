"""one_hot and embedding (tinygrad_bn/ops/embedding.py): PyTorch parity of values and of the
weight gradient (padding_idx, scale_grad_by_freq, repeated rows), gradcheck + gradgradcheck in
float64, max_norm's in-place renorm, and clear errors."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tests.helpers import check_grads, needs_torch, torch
from tinygrad_bn.ops.embedding import embedding, one_hot

TF = torch.nn.functional


@needs_torch
@pytest.mark.parametrize("values, num_classes", [([0, 2, 1, 2], -1), ([[1, 0], [3, 3]], 5), ([], 3),
                                                 ([[4]], -1), (3, 4)])
def test_one_hot_matches_torch(values, num_classes):
    ours = one_hot(tg.tensor(values, dtype=tg.int64), num_classes)
    theirs = TF.one_hot(torch.tensor(values, dtype=torch.int64), num_classes)
    assert ours.dtype == tg.int64 and list(ours.shape) == list(theirs.shape)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_one_hot_against_numpy():
    labels = np.array([[3, 0, 1], [2, 2, 0]])
    expected = (labels[..., None] == np.arange(4)).astype(np.int64)
    np.testing.assert_array_equal(one_hot(tg.tensor(labels)).numpy(), expected)


@pytest.mark.parametrize("fn, exc, pattern", [
    (lambda: one_hot(tg.tensor([0, -1])), RuntimeError, r"one_hot: Class values must be non-negative, got -1"),
    (lambda: one_hot(tg.tensor([0, 3]), 3), RuntimeError, r"one_hot: Class values must be smaller than num_classes, got value 3 with num_classes=3"),
    (lambda: one_hot(tg.tensor([0.0, 1.0])), RuntimeError, r"one_hot: .*LongTensor \(int64\), got dtype float32"),
    (lambda: one_hot(tg.tensor([], dtype=tg.int64)), RuntimeError, r"one_hot: Can not infer total number of classes from empty tensor"),
    (lambda: one_hot([0, 1]), TypeError, r"one_hot\(\): argument 'tensor' must be a Tensor, got list"),
    (lambda: one_hot(tg.tensor([0]), 2.0), TypeError, r"one_hot\(\): argument 'num_classes' must be int, got float"),
    (lambda: one_hot(tg.tensor([0]), -3), RuntimeError, r"one_hot: Class values must be smaller than num_classes, got value 0 with num_classes=-3"),
])
def test_one_hot_bad_arguments(fn, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fn()


INDICES = np.array([[0, 2, 2, 4], [1, 4, 4, 4]])   # rows read 0, 1, 2 or 3 times


@needs_torch
@pytest.mark.parametrize("kwargs", [{}, {"padding_idx": 4}, {"padding_idx": -1}, {"padding_idx": 3},
                                    {"scale_grad_by_freq": True},
                                    {"padding_idx": 2, "scale_grad_by_freq": True}])
@pytest.mark.parametrize("index_dtype", [np.int64, np.int32])
def test_embedding_matches_torch(device, kwargs, index_dtype):
    rng = np.random.default_rng(0)
    w_np, g_np = rng.standard_normal((5, 3)), rng.standard_normal(INDICES.shape + (3,))
    w = tg.tensor(w_np, device=device, requires_grad=True)
    tw = torch.tensor(w_np, requires_grad=True)
    out = embedding(tg.tensor(INDICES.astype(index_dtype), device=device), w, **kwargs)
    ref = TF.embedding(torch.tensor(INDICES.astype(index_dtype)), tw, **kwargs)
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=0, atol=0)
    out.backward(tg.tensor(g_np, device=device))
    ref.backward(torch.tensor(g_np))
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_embedding_gradcheck_and_double_backward(device):
    """Only the plain lookup: padding_idx and scale_grad_by_freq deliberately give a gradient that
    is not the derivative (0 for the padding row, 1/count scaling), as in PyTorch; those are
    checked against PyTorch above instead."""
    indices = tg.tensor(INDICES, device=device)
    check_grads(lambda w: embedding(indices, w) ** 2, [(5, 3)], device=device)


def test_embedding_gradient_against_numpy():
    """dW[k] = sum of the output gradients at the positions that read row k; 0 at padding_idx."""
    rng = np.random.default_rng(1)
    w = tg.tensor(rng.standard_normal((5, 2)), requires_grad=True)
    g = rng.standard_normal(INDICES.shape + (2,))
    embedding(tg.tensor(INDICES), w, padding_idx=4).backward(tg.tensor(g))
    expected = np.zeros((5, 2))
    np.add.at(expected, INDICES.reshape(-1), g.reshape(-1, 2))
    expected[4] = 0
    np.testing.assert_allclose(w.grad.numpy(), expected, rtol=1e-13)


@needs_torch
@pytest.mark.parametrize("max_norm, norm_type", [(1.0, 2.0), (0.5, 1.0), (2.0, 3.0)])
def test_embedding_max_norm_renormalises_the_rows_read_in_place(max_norm, norm_type):
    w_np = np.random.default_rng(2).standard_normal((6, 4)) * 2
    w, tw = tg.tensor(w_np.copy()), torch.tensor(w_np.copy())
    version = list(w._version)
    out = embedding(tg.tensor(INDICES), w, max_norm=max_norm, norm_type=norm_type)
    ref = TF.embedding(torch.tensor(INDICES), tw, max_norm=max_norm, norm_type=norm_type)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-12)
    np.testing.assert_allclose(w.numpy(), tw.numpy(), rtol=1e-12)  # row 5 (never read) unchanged
    assert list(w._version) > version


@pytest.mark.parametrize("fn, exc, pattern", [
    (lambda: embedding(tg.tensor([0, 5]), tg.ones(5, 2)), IndexError, r"embedding: index out of range: index 5 for a weight of 5 rows"),
    (lambda: embedding(tg.tensor([-1]), tg.ones(5, 2)), IndexError, r"embedding: index out of range: index -1"),
    (lambda: embedding(tg.tensor([0.0]), tg.ones(5, 2)), RuntimeError, r"embedding: Expected tensor for argument #1 'indices' .* but got float32"),
    (lambda: embedding(tg.tensor([0]), tg.ones(5)), RuntimeError, r"embedding: 'weight' must be 2-D \(num_embeddings, embedding_dim\), got shape \[5\]"),
    (lambda: embedding(tg.tensor([0]), tg.ones(5, 2), padding_idx=5), AssertionError, r"embedding: Padding_idx must be within num_embeddings"),
    (lambda: embedding([0], tg.ones(5, 2)), TypeError, r"embedding\(\): argument 'input' must be a Tensor, got list"),
    (lambda: embedding(tg.tensor([0]), tg.ones(5, 2), sparse=True), NotImplementedError, r"embedding: sparse=True"),
])
def test_embedding_bad_arguments(fn, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fn()
