"""Lookups by class index: one_hot (not differentiable) and embedding (a row gather of a weight).

embedding's gradient is the scatter-add of the output gradient back into the rows that were read
(rows read twice get both gradients); the row at padding_idx gets none, as in PyTorch."""
from tinygrad_bn import dtypes
from tinygrad_bn.autograd.function import Function
from tinygrad_bn.autograd.grad_mode import no_grad
from tinygrad_bn.ops.indexing import ScatterAdd
from tinygrad_bn.tensor import Tensor


def one_hot(tensor, num_classes=-1):
    """torch.nn.functional.one_hot: int64 y[..., k] = 1 if tensor[...] == k else 0, k < num_classes
    (num_classes=-1: one more than the largest value). Not differentiable."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"one_hot(): argument 'tensor' must be a Tensor, got {type(tensor).__name__}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool):
        raise TypeError(f"one_hot(): argument 'num_classes' must be int, got {type(num_classes).__name__}")
    if tensor.dtype != dtypes.int64:
        raise RuntimeError(f"one_hot: one_hot is only applicable to index tensor of type LongTensor "
                           f"(int64), got dtype {tensor.dtype}")
    xp, values = tensor.xp, tensor.data
    if values.size:  # one host sync: a bad class value must not give a silently wrong row
        low, high = int(values.min()), int(values.max())
        if low < 0:
            raise RuntimeError(f"one_hot: Class values must be non-negative, got {low} in a tensor of "
                               f"shape {list(tensor.shape)}")
        if num_classes == -1:
            num_classes = high + 1
        elif high >= num_classes:
            raise RuntimeError(f"one_hot: Class values must be smaller than num_classes, got value "
                               f"{high} with num_classes={num_classes}")
    elif num_classes <= 0:  # PyTorch: 0 or negative classes of an empty tensor cannot be inferred either
        raise RuntimeError(f"one_hot: Can not infer total number of classes from empty tensor (shape "
                           f"{list(tensor.shape)}); pass num_classes")
    if num_classes < 0:
        raise RuntimeError(f"one_hot: num_classes must be -1 or non-negative, got {num_classes}")
    classes = xp.arange(num_classes, dtype=values.dtype)
    return Tensor._make((values[..., None] == classes).astype(values.dtype))


class Embedding(Function):
    """y[..., :] = W[indices[...], :].

    dW[k] = sum of g[...] over the positions where indices == k (rows read twice add up), scaled by
    1 / count(k) when scale_grad_by_freq, and 0 for k == padding_idx. dW is a ScatterAdd node, so it
    is differentiable in g again (double backward)."""

    def forward(self, weight, indices, padding_idx, scale_grad_by_freq):
        return weight[indices]

    def backward(self, g):
        xp = self.xp
        (num_embeddings, dim), _ = self.input_meta[0]
        rows = self.attrs["indices"].reshape(-1)
        g_rows = g.reshape(-1, dim)
        scale = None
        if self.attrs["padding_idx"] is not None:
            scale = (rows != self.attrs["padding_idx"]).astype(g.dtype)
        if self.attrs["scale_grad_by_freq"]:
            counts = xp.bincount(rows, minlength=num_embeddings)[rows].astype(g.dtype)
            scale = 1 / counts if scale is None else scale / counts
        if scale is not None:
            g_rows = g_rows * Tensor._make(scale[:, None])
        zeros = Tensor._make(xp.zeros((num_embeddings, dim), dtype=g.dtype))
        index = xp.broadcast_to(rows[:, None], (rows.shape[0], dim))
        return ScatterAdd.apply(zeros, g_rows, dim=0, index=index)


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
              sparse=False):
    """torch.nn.functional.embedding: the rows of weight (num_embeddings, embedding_dim) at the
    int64/int32 indices in input; output shape input.shape + (embedding_dim,).

    max_norm: first rescale, in place and outside the graph, every row that input reads whose
    norm_type-norm exceeds max_norm to norm max_norm (PyTorch's embedding_renorm_)."""
    for what, t in (("input", input), ("weight", weight)):
        if not isinstance(t, Tensor):
            raise TypeError(f"embedding(): argument '{what}' must be a Tensor, got {type(t).__name__}")
    if input.dtype not in (dtypes.int64, dtypes.int32):
        raise RuntimeError(f"embedding: Expected tensor for argument #1 'indices' to have one of the "
                           f"following scalar types: int64, int32; but got {input.dtype} instead")
    if weight.ndim != 2:
        raise RuntimeError(f"embedding: 'weight' must be 2-D (num_embeddings, embedding_dim), got shape "
                           f"{list(weight.shape)}")
    if input.device != weight.device:
        raise RuntimeError(f"embedding: input is on {input.device} but weight is on {weight.device}")
    if sparse:
        raise NotImplementedError("embedding: sparse=True (a sparse gradient) is not supported; "
                                  "sparse=False gives the same gradient as a dense tensor")
    n = weight.shape[0]
    if padding_idx is not None:
        if not isinstance(padding_idx, int) or isinstance(padding_idx, bool):
            raise TypeError(f"embedding: padding_idx must be an int or None, got {padding_idx!r}")
        if not -n <= padding_idx < n:
            raise AssertionError(f"embedding: Padding_idx must be within num_embeddings (got "
                                 f"padding_idx={padding_idx} for {n} embeddings)")
        padding_idx %= n
    indices = input.data.astype(dtypes.int64, copy=False)
    if indices.size and bool(((indices < 0) | (indices >= n)).any()):  # one host sync
        bad = int(indices[(indices < 0) | (indices >= n)].reshape(-1)[0])
        raise IndexError(f"embedding: index out of range: index {bad} for a weight of {n} rows "
                         f"(num_embeddings); expected indices in [0, {n - 1}]")
    if max_norm is not None:
        _renorm_rows(weight, indices, float(max_norm), float(norm_type))
    return Embedding.apply(weight, indices=indices, padding_idx=padding_idx,
                           scale_grad_by_freq=bool(scale_grad_by_freq))


def _renorm_rows(weight, indices, max_norm, norm_type):
    """W[k] *= max_norm / (||W[k]|| + 1e-7) for each row k that is read and whose norm > max_norm
    (PyTorch's embedding_renorm_: in place, not recorded, bumps weight's version)."""
    xp = weight.xp
    rows = xp.unique(indices.reshape(-1))
    norms = (xp.abs(weight.data[rows]) ** norm_type).sum(axis=1) ** (1.0 / norm_type)
    scale = xp.ones((weight.shape[0], 1), dtype=weight.dtype)
    scale[rows, 0] = xp.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0)
    with no_grad():
        weight.mul_(Tensor._make(scale))
