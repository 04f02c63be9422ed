"""Products and norms: mm, bmm, outer (checked forms of matmul and mul), einsum, norm, normalize.

einsum's gradient for one operand is another einsum: of the output gradient with the other
operands, into that operand's subscripts. A letter only that operand has (summed away in forward)
comes back through a ones vector; a letter it repeats (a diagonal, "ii->i") through an identity."""
import string

from tinygrad_bn import dtypes
from tinygrad_bn.autograd.function import Function
from tinygrad_bn.ops import elementwise, matmul as matmul_ops, reduce
from tinygrad_bn.ops._helpers import normalize_dims
from tinygrad_bn.tensor import Tensor


def _need_tensor(x, opname, what="input"):
    if not isinstance(x, Tensor):
        raise TypeError(f"{opname}: expected a Tensor as {what}, got {type(x).__name__}")


def mm(input, mat2):
    """torch.mm: (n, m) @ (m, p), both matrices (no broadcasting)."""
    _need_tensor(input, "mm")
    _need_tensor(mat2, "mm", "mat2")
    if input.ndim != 2 or mat2.ndim != 2:
        raise RuntimeError(f"mm: expected two matrices, got shapes {list(input.shape)} and "
                           f"{list(mat2.shape)} ({'self' if input.ndim != 2 else 'mat2'} must be a matrix)")
    return matmul_ops.matmul(input, mat2)


def bmm(input, mat2):
    """torch.bmm: (b, n, m) @ (b, m, p), the same batch size b (no broadcasting)."""
    _need_tensor(input, "bmm")
    _need_tensor(mat2, "bmm", "mat2")
    if input.ndim != 3 or mat2.ndim != 3:
        raise RuntimeError(f"bmm: batch1 and batch2 must be 3D tensors, got shapes "
                           f"{list(input.shape)} and {list(mat2.shape)}")
    if input.shape[0] != mat2.shape[0]:
        raise RuntimeError(f"bmm: batch1 and batch2 must have the same batch size, got "
                           f"{input.shape[0]} and {mat2.shape[0]} (shapes {list(input.shape)} and "
                           f"{list(mat2.shape)})")
    return matmul_ops.matmul(input, mat2)


def outer(input, vec2):
    """torch.outer: y_ij = a_i b_j for two vectors (through mul: da = g b, db = g^T a)."""
    _need_tensor(input, "outer")
    _need_tensor(vec2, "outer", "vec2")
    if input.ndim != 1 or vec2.ndim != 1:
        raise RuntimeError(f"outer: expected two 1-D vectors, got shapes {list(input.shape)} and "
                           f"{list(vec2.shape)}")
    return input.reshape(-1, 1) * vec2.reshape(1, -1)


# ---- einsum ---------------------------------------------------------------------------------
def _parse(equation, operands):
    """Subscripts per operand and for the output, '...' spelled out as fresh capital letters."""
    eq = equation.replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(operands):
        raise ValueError(f"einsum(): the equation {equation!r} has {len(terms)} operand(s) but "
                         f"{len(operands)} tensor(s) were given")
    fresh = [c for c in string.ascii_uppercase if c not in eq]
    counts = []
    for term, op in zip(terms, operands):
        explicit = term.replace("...", "")
        if not all(c in string.ascii_letters for c in explicit):
            raise ValueError(f"einsum(): invalid subscript in {term!r} of {equation!r}: use letters "
                             f"and '...'")
        n_ell = op.ndim - len(explicit)
        if ("..." in term and n_ell < 0) or ("..." not in term and n_ell != 0):
            raise RuntimeError(f"einsum(): the subscripts {term!r} do not match operand of shape "
                               f"{list(op.shape)} ({op.ndim} dims)")
        counts.append(n_ell)
    longest = max(counts, default=0)
    # '...' dims align from the right, as in broadcasting: the last n_ell of the longest's letters
    subs = [term.replace("...", "".join(fresh[longest - n:longest])) for term, n in zip(terms, counts)]
    ell = "".join(fresh[:longest])
    if not arrow:
        counts = {c: sum(s.count(c) for s in subs) for c in set("".join(subs))}
        out = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    else:
        out = out.replace("...", ell)
    sizes = {}
    for s, op in zip(subs, operands):
        for c, n in zip(s, op.shape):
            if sizes.setdefault(c, n) == 1:
                sizes[c] = n  # a size-1 dim broadcasts (einsum() expands it)
            elif n != 1 and sizes[c] != n:
                raise RuntimeError(f"einsum(): subscript {c!r} has size {sizes[c]} in one operand "
                                   f"and {n} in another (equation {equation!r}, shapes "
                                   f"{[list(o.shape) for o in operands]})")
    for c in out:
        if c not in sizes:
            raise ValueError(f"einsum(): output subscript {c!r} appears in no operand of {equation!r}")
    return subs, out, sizes


class Einsum(Function):
    """y = einsum(subs -> out)(x_1, ..., x_n).
    dx_k = einsum(out, subs of the others -> subs_k)(g, the others), see the module docstring."""

    def forward(self, *arrays, subs, out):
        self.save_for_backward(**{f"x{i}": a for i, a in enumerate(arrays)})
        return self.xp.einsum(",".join(subs) + "->" + out, *arrays)

    def backward(self, g):
        subs, out, xp = self.attrs["subs"], self.attrs["out"], self.xp
        operands = [self.saved(f"x{i}") for i in range(len(subs))]
        sizes = {c: n for s, (shape, _) in zip(subs, self.input_meta) for c, n in zip(s, shape)}
        grads = []
        for k, sk in enumerate(subs):
            if not self.needs_input_grad[k]:
                grads.append(None)
                continue
            terms, ops = [out], [g]
            for j, sj in enumerate(subs):
                if j != k:
                    terms.append(sj)
                    ops.append(operands[j])
            spare = iter(c for c in string.ascii_letters if c not in "".join(subs) + out)
            target = ""
            for c in sk:
                if c in target:  # a repeated letter: a fresh one, tied to c by an identity
                    new = next(spare)
                    terms.append(c + new)
                    ops.append(Tensor._make(xp.eye(sizes[c], dtype=g.dtype)))
                    target += new
                else:
                    target += c
            for c in dict.fromkeys(sk):
                if not any(c in t for t in terms):  # summed away in this operand only
                    terms.append(c)
                    ops.append(Tensor._make(xp.ones(sizes[c], dtype=g.dtype)))
            grads.append(einsum(",".join(terms) + "->" + target, *ops))
        return tuple(grads)


def einsum(equation, *operands):
    """torch.einsum(equation, *operands) (also einsum(equation, [a, b])): sums of products over
    the subscripts that the output does not name."""
    if not isinstance(equation, str):
        raise TypeError(f"einsum(): the first argument must be the equation string, got "
                        f"{type(equation).__name__}")
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    for i, op in enumerate(operands):
        _need_tensor(op, "einsum", f"operand {i}")
    dtype = operands[0].dtype
    for op in operands[1:]:
        dtype = dtypes.promote(dtype, op.dtype)
    operands = [elementwise.cast(op, dtype) for op in operands]
    subs, out, sizes = _parse(equation, operands)
    # broadcast size-1 dims explicitly, so that each gradient has its operand's own shape (Expand sums)
    operands = [op.expand(*[sizes[c] for c in s]) if tuple(sizes[c] for c in s) != op.shape else op
                for s, op in zip(subs, operands)]
    return Einsum.apply(*operands, subs=tuple(subs), out=out)


# ---- norm -----------------------------------------------------------------------------------
class PNorm(Function):
    """y = (sum |x|^p)^(1/p) over dims, p > 0.
    dx = g * sign(x) |x|^(p-1) / y^(p-1)   (0 where y = 0, PyTorch's subgradient)."""

    def forward(self, x, p, dims, keepdim):
        xp = self.xp
        y = (xp.abs(x) ** p).sum(axis=dims, keepdims=True) ** (1.0 / p)
        y = y if keepdim else y.reshape(tuple(n for i, n in enumerate(x.shape) if i not in dims))
        self.save_for_backward(x=x, y=y)  # the output itself: double backward sees y(x)
        return y

    def backward(self, g):
        x, y = self.saved("x", "y")
        p, dims = self.attrs["p"], self.attrs["dims"]
        kept = tuple(1 if i in dims else n for i, n in enumerate(x.shape))
        y, gk = y.reshape(kept), g.reshape(kept)
        zero = y == 0
        safe_y = elementwise.where(zero, Tensor._make(self.xp.ones((), dtype=y.dtype)), y)
        scale = elementwise.where(zero, gk * 0, gk / safe_y ** (p - 1))
        return scale * x.sign() * (x.abs() if p == 2 else x.abs() ** (p - 1))


def norm(input, p="fro", dim=None, keepdim=False, dtype=None):
    """torch.norm: the vector p-norm of input over dim (every element when None).
    p: 'fro' (= 2), a number > 0, inf (max |x|), -inf (min |x|), 0 (the count of non-zeros), or a
    number < 0: (sum |x|^p)^(1/p) composed from abs, pow and sum (so its gradients are theirs), as
    PyTorch's vector_norm computes it."""
    _need_tensor(input, "norm")
    if dtype is not None:
        input = input.to(dtype)
    if not dtypes.is_floating(input.dtype):
        raise RuntimeError(f"norm(): input dtype should be floating point, but got {input.dtype}")
    if p == "fro":
        p = 2
    if isinstance(p, str) or not isinstance(p, (int, float)) or isinstance(p, bool):
        raise RuntimeError(f"norm: p must be 'fro', inf, -inf or a number, got {p!r} ('nuc' is "
                           f"not supported)")
    dims = normalize_dims(dim, input.ndim, "norm")
    if p < 0 and input.numel() == 0:  # the min-like norms have no value for nothing (PyTorch)
        if dim is None:
            raise RuntimeError(f"norm: cannot compute the {p} norm on an empty tensor because the "
                               f"operation does not have an identity")
        for d in dims:
            if input.shape[d] == 0:
                raise RuntimeError(f"norm: cannot compute the {p} norm on the dimension {d} because this "
                                   f"dimension is empty and the operation does not have an identity")
    if p == float("inf"):
        return reduce.amax(input.abs(), dims, keepdim)
    if p == float("-inf"):
        return reduce.amin(input.abs(), dims, keepdim)
    if p == 0:
        return reduce.sum((input != 0).to(input.dtype), dims, keepdim)
    if p < 0:
        return reduce.sum(input.abs() ** p, dims, keepdim) ** (1.0 / p)
    return PNorm.apply(input, p=float(p), dims=dims, keepdim=keepdim)


def normalize(input, p=2.0, dim=1, eps=1e-12, out=None):
    """torch.nn.functional.normalize: x / max(||x||_p, eps) along dim, composed from norm, clamp and
    div (so its gradient, and the gradient of that, come from theirs)."""
    _need_tensor(input, "normalize")
    if out is not None:
        raise NotImplementedError("normalize: out= is not supported; use the returned tensor")
    if not dtypes.is_floating(input.dtype):
        raise RuntimeError(f"normalize: expected a floating-point input, got dtype {input.dtype}")
    if p is None or p == "fro":  # PyTorch passes p on to Tensor.norm, where both mean the 2-norm
        p = 2.0
    if isinstance(p, str):
        raise RuntimeError(f"normalize: p={p!r} is not supported; expected a number, 'fro' or None")
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"normalize(): argument 'p' must be a number, got {type(p).__name__}")
    normalize_dims(dim, input.ndim, "normalize")  # a bad dim is named as normalize's mistake
    denominator = norm(input, p, dim, keepdim=True).clamp(min=eps)
    return input / denominator
