"""nn.Embedding (tinygrad_bn/nn/sparse.py): PyTorch's constructor, init N(0, 1) with the padding
row zeroed, from_pretrained (frozen by default), the gradient through the module, and errors."""
import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.nn as nn
from tests.helpers import needs_torch, torch


def test_init_is_standard_normal_with_the_padding_row_zeroed():
    tg.manual_seed(0)
    m = nn.Embedding(2000, 8, padding_idx=-1)
    w = m.weight.detach().numpy()
    assert m.padding_idx == 1999 and w.shape == (2000, 8) and m.weight.requires_grad
    np.testing.assert_array_equal(w[1999], 0)
    assert abs(w[:1999].mean()) < 0.02 and abs(w[:1999].std() - 1) < 0.02


@needs_torch
def test_module_matches_torch_with_the_same_weight():
    w = np.random.default_rng(0).standard_normal((6, 3))
    ours = nn.Embedding(6, 3, padding_idx=2, _weight=tg.tensor(w.copy()))
    theirs = torch.nn.Embedding(6, 3, padding_idx=2, _weight=torch.tensor(w.copy()))
    assert repr(ours) == repr(theirs)
    idx = np.array([[0, 2, 5], [5, 5, 1]])
    out, ref = ours(tg.tensor(idx)), theirs(torch.tensor(idx))
    np.testing.assert_array_equal(out.detach().numpy(), ref.detach().numpy())
    g = np.random.default_rng(1).standard_normal(idx.shape + (3,))
    out.backward(tg.tensor(g))
    ref.backward(torch.tensor(g))
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), rtol=1e-13)


def test_from_pretrained_is_frozen_unless_asked():
    w = tg.tensor(np.arange(12.0).reshape(4, 3))
    frozen = nn.Embedding.from_pretrained(w)
    assert not frozen.weight.requires_grad and (frozen.num_embeddings, frozen.embedding_dim) == (4, 3)
    np.testing.assert_array_equal(frozen(tg.tensor([3, 0])).numpy(), [[9, 10, 11], [0, 1, 2]])
    assert nn.Embedding.from_pretrained(w, freeze=False).weight.requires_grad


def test_state_dict_round_trip():
    a, b = nn.Embedding(5, 2), nn.Embedding(5, 2)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.weight.detach().numpy(), b.weight.detach().numpy())


@pytest.mark.parametrize("make, exc, pattern", [
    (lambda: nn.Embedding(-1, 3), RuntimeError, r"Embedding: num_embeddings must be non-negative, got -1"),
    (lambda: nn.Embedding(4, 2.5), TypeError, r"Embedding: embedding_dim must be an int, got float 2.5"),
    (lambda: nn.Embedding(4, 2, padding_idx=4), AssertionError, r"Embedding: Padding_idx must be within num_embeddings"),
    (lambda: nn.Embedding(4, 2, _weight=tg.ones(3, 2)), AssertionError, r"Embedding: Shape of weight does not match .* expected \[4, 2\], got \[3, 2\]"),
    (lambda: nn.Embedding(4, 2, sparse=True), NotImplementedError, r"Embedding: sparse=True"),
    (lambda: nn.Embedding.from_pretrained(tg.ones(4)), AssertionError, r"Embedding.from_pretrained: Embeddings parameter is expected to be 2-dimensional, got shape \[4\]"),
    (lambda: nn.Embedding(4, 2)(tg.tensor([4])), IndexError, r"embedding: index out of range: index 4 for a weight of 4 rows"),
])
def test_bad_arguments(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()
