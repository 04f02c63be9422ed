"""Running and whole products and sums: cumsum, cumprod, prod.

Integer and bool inputs give int64, as PyTorch (no gradient). The product gradients are written
without dividing by x, so that zeros in x are handled exactly."""
from tinygrad_bn import dtypes
from tinygrad_bn.autograd.function import Function
from tinygrad_bn.tensor import Tensor, _wrap_dim


def _prepare(x, dim, dtype, opname):
    if not isinstance(x, Tensor):
        raise TypeError(f"{opname}: expected a Tensor, got {type(x).__name__}")
    if dtype is not None:
        x = x.to(dtype)
    elif not dtypes.is_floating(x.dtype) and x.dtype != dtypes.int64:
        x = x.to(dtypes.int64)
    return x, (None if dim is None and opname == "prod" else _wrap_dim(dim, x.ndim, opname))


class Cumsum(Function):
    """y_i = sum_{j <= i} x_j along dim.   dx_j = sum_{i >= j} g_i  (a reversed cumsum of g)."""

    def forward(self, x, dim):
        return self.xp.cumsum(x, axis=dim)

    def backward(self, g):
        from tinygrad_bn.ops.layout import flip
        d = self.attrs["dim"]
        return flip(cumsum(flip(g, d), d), d)


def cumsum(x, dim, dtype=None):
    x, d = _prepare(x, dim, dtype, "cumsum")
    if x.ndim == 0:
        return x * 1
    return Cumsum.apply(x, dim=d)


class Cumprod(Function):
    """y_i = prod_{j <= i} x_j along dim.

    dx_j = sum_{i >= j} g_i prod_{k <= i, k != j} x_k. With no zero in x that is
    revcumsum(g * y)_j / x_j; with a zero, the products leaving out x_j are formed directly: row j
    of a matrix holds x with x_j set to 1, and its cumprod gives prod_{k <= i, k != j} x_k."""

    def forward(self, x, dim):
        y = self.xp.cumprod(x, axis=dim)
        self.save_for_backward(x=x, y=y)
        return y

    def backward(self, g):
        from tinygrad_bn.ops.layout import flip
        from tinygrad_bn.ops.elementwise import where
        x, y = self.saved("x", "y")
        d = self.attrs["dim"]
        if bool((self.saved_array("x") != 0).all()):
            return flip(cumsum(flip(g * y, d), d), d) / x
        n = x.shape[d]
        xm = x.transpose(d, -1)
        gm = g.transpose(d, -1)
        eye = Tensor._make(self.xp.eye(n, dtype=bool))                    # [j, k]
        left_out = where(eye, Tensor._make(self.xp.ones((), dtype=x.dtype)), xm.unsqueeze(-2))
        partial = cumprod(left_out, -1)                                   # [..., j, i]
        later = Tensor._make(self.xp.triu(self.xp.ones((n, n), dtype=x.dtype)))  # i >= j
        dx = (partial * later * gm.unsqueeze(-2)).sum(-1)                 # [..., j]
        return dx.transpose(d, -1)


def cumprod(x, dim, dtype=None):
    x, d = _prepare(x, dim, dtype, "cumprod")
    if x.ndim == 0:
        return x * 1
    return Cumprod.apply(x, dim=d)


class Prod(Function):
    """y = prod of x along dim (every element when dim is None).
    dx_j = g * prod_{k != j} x_k = g * (exclusive cumprod from the left)_j * (from the right)_j."""

    def forward(self, x, dim, keepdim):
        self.save_for_backward(x=x)
        return x.prod(axis=dim, keepdims=keepdim)

    def backward(self, g):
        from tinygrad_bn.ops.layout import flip
        from tinygrad_bn.ops.shape import pad
        x = self.saved("x")
        d, keepdim = self.attrs["dim"], self.attrs["keepdim"]
        flat = x.reshape(-1) if d is None else x
        axis = 0 if d is None else d
        moved = flat.transpose(axis, -1)
        ones_first = pad(moved, (1, 0), value=1.0).narrow(-1, 0, moved.shape[-1])
        before = cumprod(ones_first, -1)                       # prod_{k < j} x_k
        after = flip(cumprod(pad(flip(moved, -1), (1, 0), value=1.0).narrow(-1, 0, moved.shape[-1]), -1), -1)
        others = (before * after).transpose(axis, -1).reshape(x.shape)
        if d is None:
            return g.expand(*x.shape) * others if x.ndim else g
        gk = g if keepdim else g.unsqueeze(d)
        return gk.expand(*x.shape) * others


def prod(x, dim=None, keepdim=False, dtype=None):
    x, d = _prepare(x, dim, dtype, "prod")
    return Prod.apply(x, dim=d, keepdim=keepdim)
