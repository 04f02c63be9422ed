"""Activations: leaky_relu, softmax, log_softmax (relu, sigmoid and tanh live in elementwise.py).

Each is one Function whose backward is written with Tensor ops, so that differentiating the
gradient again (create_graph=True) works. softmax and log_softmax subtract the row maximum before
exponentiating, so no input overflows."""
import warnings

from tinygrad_bn.autograd.function import Function
from tinygrad_bn.ops._helpers import check_float, log_sum_exp_shifted, normalize_dims
from tinygrad_bn.tensor import Tensor


class LeakyRelu(Function):
    """y = x if x > 0 else slope * x.   dx = g * (1 if x > 0 else slope).

    The slope mask is a constant of backward: the second derivative is zero almost everywhere."""

    def forward(self, x, negative_slope):
        positive = x > 0
        # keep the per-element slope, not x: an in-place caller may overwrite x afterwards
        self.save_for_backward(slope=self.xp.where(positive, 1, negative_slope).astype(x.dtype))
        return self.xp.where(positive, x, x * negative_slope)

    def backward(self, g):
        return g * Tensor._make(self.saved_array("slope"))


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """torch.nn.functional.leaky_relu."""
    _check_tensor(input, "leaky_relu")
    out = LeakyRelu.apply(input, negative_slope=float(negative_slope))
    return input._inplace(out, "leaky_relu_", result_is_saved=True) if inplace else out


class Softmax(Function):
    """y = exp(x - m) / sum(exp(x - m)) along dim, m = max along dim (for stability).

    dx = y * (g - sum(g * y, dim))   (the Jacobian diag(y) - y y^T applied to g)."""

    def forward(self, x, dim):
        z = x - x.max(axis=dim, keepdims=True)
        y = self.xp.exp(z, out=z)
        y /= y.sum(axis=dim, keepdims=True)
        self.save_for_backward(y=y)
        return y

    def backward(self, g):
        y = self.saved("y")  # connected to this node, so double backward sees y's dependence on x
        return y * (g - (g * y).sum(self.attrs["dim"], keepdim=True))


class LogSoftmax(Function):
    """y = x - m - log(sum(exp(x - m))) along dim, m = max along dim.

    dx = g - exp(y) * sum(g, dim)   (exp(y) is the softmax)."""

    def forward(self, x, dim):
        xp = self.xp
        m = x.max(axis=dim, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)  # a row of all -inf stays -inf, not nan
        z = x - m
        y = z - log_sum_exp_shifted(xp, z, dim)
        self.save_for_backward(y=y)
        return y

    def backward(self, g):
        y = self.saved("y")
        return g - y.exp() * g.sum(self.attrs["dim"], keepdim=True)


def _softmax_dim(dim, x, name):
    """The one dim softmax works along; PyTorch's legacy choice (with a warning) when None."""
    if dim is None:
        warnings.warn(f"Implicit dimension choice for {name} has been deprecated. "
                      f"Change the call to include dim=X as an argument.", stacklevel=3)
        dim = 0 if x.ndim in (0, 1, 3) else 1
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"{name}: dim must be a single int, got {dim!r}")
    dims = normalize_dims(dim, x.ndim, name)
    return dims[0] if dims else None  # None: a 0-d tensor, reduced over "all" of its one element


def _prepare(input, dim, dtype, name):
    _check_tensor(input, name)
    if dtype is not None:
        input = input.to(dtype)
    check_float(input, name)
    return input, _softmax_dim(dim, input, name)


def _apply_along(fn, input, d):
    """A 0-d input works as one element along a dim of size 1; an empty input gives an empty result."""
    if input.ndim == 0:
        return fn.apply(input.reshape(1), dim=0).reshape(())
    if input.numel() == 0:
        return input * 1.0  # nothing to normalise; still a node, so the graph stays connected
    return fn.apply(input, dim=d)


def softmax(input, dim=None, dtype=None):
    """torch.nn.functional.softmax: exp(x) / sum(exp(x)) along dim."""
    input, d = _prepare(input, dim, dtype, "softmax")
    return _apply_along(Softmax, input, d)


def log_softmax(input, dim=None, dtype=None):
    """torch.nn.functional.log_softmax: x - logsumexp(x) along dim."""
    input, d = _prepare(input, dim, dtype, "log_softmax")
    return _apply_along(LogSoftmax, input, d)


def _check_tensor(x, name):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a Tensor as input, got {type(x).__name__}")
