"""Embedding: a lookup table of num_embeddings learnable vectors of size embedding_dim, read by
integer index (PyTorch's arguments, init N(0, 1), the padding row zeroed, from_pretrained)."""
from tinygrad_bn import creation
from tinygrad_bn.autograd.grad_mode import no_grad
from tinygrad_bn.nn import functional as F
from tinygrad_bn.nn import init
from tinygrad_bn.nn.module import Module
from tinygrad_bn.nn.parameter import Parameter
from tinygrad_bn.tensor import Tensor

__all__ = ["Embedding"]


class Embedding(Module):
    """y = weight[input]: output shape input.shape + (embedding_dim,).

    weight (num_embeddings, embedding_dim) ~ N(0, 1), its padding_idx row zeroed at construction;
    that row gets no gradient. _weight: use this tensor as the weight (shape-checked, not re-drawn)."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False, _weight=None, _freeze=False, device=None,
                 dtype=None):
        super().__init__()
        for what, n in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if not isinstance(n, int) or isinstance(n, bool):
                raise TypeError(f"Embedding: {what} must be an int, got {type(n).__name__} {n!r}")
            if n < 0:
                raise RuntimeError(f"Embedding: {what} must be non-negative, got {n}")
        if sparse:
            raise NotImplementedError("Embedding: sparse=True (a sparse gradient) is not supported; "
                                      "sparse=False gives the same gradient as a dense tensor")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise AssertionError(f"Embedding: Padding_idx must be within num_embeddings (got "
                                     f"padding_idx={padding_idx} for {num_embeddings} embeddings)")
            padding_idx %= num_embeddings
        self.padding_idx, self.max_norm, self.norm_type = padding_idx, max_norm, norm_type
        self.scale_grad_by_freq, self.sparse = scale_grad_by_freq, sparse
        if _weight is None:
            self.weight = Parameter(creation.empty(num_embeddings, embedding_dim, device=device, dtype=dtype),
                                    requires_grad=not _freeze)
            self.reset_parameters()
        else:
            if not isinstance(_weight, Tensor):
                raise TypeError(f"Embedding: _weight must be a Tensor, got {type(_weight).__name__}")
            if list(_weight.shape) != [num_embeddings, embedding_dim]:
                raise AssertionError(f"Embedding: Shape of weight does not match num_embeddings and "
                                     f"embedding_dim: expected [{num_embeddings}, {embedding_dim}], got "
                                     f"{list(_weight.shape)}")
            self.weight = Parameter(_weight, requires_grad=not _freeze)

    def reset_parameters(self):
        init.normal_(self.weight)
        self._fill_padding_idx_with_zero()

    def _fill_padding_idx_with_zero(self):
        if self.padding_idx is not None:
            with no_grad():
                self.weight[self.padding_idx].fill_(0)

    def forward(self, input):
        return F.embedding(input, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            s += f", max_norm={self.max_norm}"
        if self.norm_type != 2:
            s += f", norm_type={self.norm_type}"
        if self.scale_grad_by_freq is not False:
            s += f", scale_grad_by_freq={self.scale_grad_by_freq}"
        if self.sparse is not False:
            s += ", sparse=True"
        return s

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None, max_norm=None, norm_type=2.0,
                        scale_grad_by_freq=False, sparse=False):
        """An Embedding whose weight is `embeddings` (2-D); frozen (requires_grad=False) unless freeze=False."""
        if not isinstance(embeddings, Tensor):
            raise TypeError(f"Embedding.from_pretrained: embeddings must be a Tensor, got "
                            f"{type(embeddings).__name__}")
        if embeddings.ndim != 2:
            raise AssertionError(f"Embedding.from_pretrained: Embeddings parameter is expected to be "
                                 f"2-dimensional, got shape {list(embeddings.shape)}")
        rows, cols = embeddings.shape
        return cls(num_embeddings=rows, embedding_dim=cols, _weight=embeddings, _freeze=freeze,
                   padding_idx=padding_idx, max_norm=max_norm, norm_type=norm_type,
                   scale_grad_by_freq=scale_grad_by_freq, sparse=sparse)
