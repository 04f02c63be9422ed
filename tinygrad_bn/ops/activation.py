"""Activations: leaky_relu, softmax, log_softmax, gelu, silu, elu, hardtanh, relu6, prelu, softplus (relu,
sigmoid and tanh live in elementwise.py).

Each is one Function whose backward is written with Tensor ops, so that differentiating the
gradient again (create_graph=True) works. softmax and log_softmax subtract the row maximum before
exponentiating, so no input overflows."""
import math
import warnings

from tinygrad_bn import dtypes
from tinygrad_bn.autograd.function import Function
from tinygrad_bn.ops._helpers import check_float, log_sum_exp_shifted, normalize_dims
from tinygrad_bn.ops.elementwise import sigmoid, where
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


# ---- smooth activations: gelu, silu, elu ------------------------------------------------------
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _erf_array(xp, x):
    """erf(x) on raw arrays, to float64 accuracy (NumPy has no erf, and CuPy's lives elsewhere).

    erf(x) = 2/sqrt(pi) exp(-x^2) sum_n x (2x^2)^n / (1*3*...*(2n+1))   (Abramowitz & Stegun 7.1.6):
    every term is positive, so nothing cancels. |x| >= 6 gives +-1 in float64 (erfc(6) < 3e-17).
    Summed in float64 (about 50 terms for |x| <= 3, 100 at most) and rounded to x's dtype."""
    a = xp.minimum(xp.abs(x.astype(xp.float64)), 6.0)
    z2 = 2 * a * a
    term, total = a.copy(), a.copy()
    n = 0
    while True:  # one host check per 8 terms: stop when no term can change any sum
        for _ in range(8):
            term *= z2 / (2 * n + 3)
            total += term
            n += 1
        if not bool((term > 2.8e-17 * total).any()):
            break
    y = xp.minimum(total * xp.exp(-a * a) * (2 / math.sqrt(math.pi)), 1.0)
    return (xp.sign(x) * y).astype(x.dtype)


def _erfc_of_nonnegative(xp, a):
    """erfc(a) = 1 - erf(a) for float64 a >= 0, to ~1e-13 relative, including where it is tiny.

    Below 2, 1 - erf(a) (erfc(2) = 4.7e-3: nothing much cancels). From 2 on, the continued fraction
    erfc(a) = e^(-a^2) / sqrt(pi) / (a + (1/2) / (a + 1 / (a + (3/2) / (a + 2 / ...)))),
    evaluated from its 40th level back (measured against math.erfc on [2, 27]: 6e-14)."""
    tail = a.copy()
    for n in range(40, 0, -1):
        tail = a + (n / 2) / xp.maximum(tail, 2.0)  # the clamp only touches a < 2, not used below
    fraction = xp.exp(-a * a) / (math.sqrt(math.pi) * tail)
    return xp.where(a < 2, 1 - _erf_array(xp, xp.minimum(a, 2.0)), fraction)


class Erf(Function):
    """y = erf(x) = 2/sqrt(pi) int_0^x exp(-t^2) dt.   dx = g * 2/sqrt(pi) exp(-x^2)."""

    def forward(self, x):
        self.save_for_backward(x=x)
        return _erf_array(self.xp, x)

    def backward(self, g):
        x = self.saved("x")
        return g * ((x * x).neg().exp() * (2 / math.sqrt(math.pi)))


class Gelu(Function):
    """y = x Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2 the standard normal CDF.

    dx = g * (Phi(x) + x phi(x)),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi). Phi is the Erf node, so the
    gradient is differentiable again: d2y/dx2 = (2 - x^2) phi(x)."""

    def forward(self, x):
        self.save_for_backward(x=x)
        # Phi(x) = erfc(-x / sqrt 2) / 2, in float64 and rounded once: 1 + erf(x / sqrt 2) would
        # cancel to 0 for negative x (at x = -4 in float32, where Phi is 3e-5), and x (1 + erf)
        # overflows float32 for x above half its maximum
        xp = self.xp
        x64 = x.astype(xp.float64)
        tail = 0.5 * _erfc_of_nonnegative(xp, xp.abs(x64) * (1 / math.sqrt(2)))   # Phi(-|x|)
        return (x64 * xp.where(x64 < 0, tail, 1 - tail)).astype(x.dtype)

    def backward(self, g):
        x = self.saved("x")
        cdf = (Erf.apply(x * (1 / math.sqrt(2))) + 1) * 0.5
        pdf = (x * x * -0.5).exp() * _INV_SQRT_2PI
        return g * (cdf + x * pdf)


class GeluTanh(Function):
    """y = x (1 + tanh(u)) / 2,  u = sqrt(2/pi) (x + 0.044715 x^3)   (approximate='tanh').

    dx = g * ((1 + t) / 2 + x (1 - t^2) / 2 * sqrt(2/pi) (1 + 3 * 0.044715 x^2)),  t = tanh(u)."""

    def forward(self, x):
        self.save_for_backward(x=x)
        t = self.xp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))
        return x * (1 + t) * 0.5

    def backward(self, g):
        x = self.saved("x")
        t = ((x + x * x * x * 0.044715) * _SQRT_2_OVER_PI).tanh()
        du = (x * x * (3 * 0.044715) + 1) * _SQRT_2_OVER_PI
        return g * ((t + 1) * 0.5 + x * (1 - t * t) * 0.5 * du)


class Silu(Function):
    """y = x sigmoid(x).   dx = g * s (1 + x (1 - s)),  s = sigmoid(x)."""

    def forward(self, x):
        self.save_for_backward(x=x)
        xp = self.xp
        t = xp.exp(-xp.abs(x))  # <= 1: the two-branch sigmoid of Sigmoid, which never overflows
        return x * xp.where(x >= 0, 1, t).astype(x.dtype, copy=False) / (1 + t)

    def backward(self, g):
        x = self.saved("x")
        s = x.sigmoid()
        return g * (s * (x * (1 - s) + 1))


class Elu(Function):
    """y = x if x > 0 else alpha (exp(x) - 1).   dx = g * (1 if x > 0 else alpha exp(x)).

    The mask x > 0 is a constant of backward; alpha exp(x) stays differentiable."""

    def forward(self, x, alpha):
        self.save_for_backward(x=x)
        xp = self.xp
        return xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, 0)))

    def backward(self, g):
        from tinygrad_bn.ops.elementwise import where
        x = self.saved("x")
        positive = Tensor._make(self.saved_array("x") > 0)
        return where(positive, g, g * (x.exp() * self.attrs["alpha"]))


def _check_floating(input, name):
    """gelu, silu, elu: floating-point only (PyTorch: NotImplementedError for integer and bool)."""
    _check_tensor(input, name)
    if not dtypes.is_floating(input.dtype):
        raise NotImplementedError(f"{name}: not implemented for dtype {input.dtype}; expected a "
                                  f"floating-point tensor (float16, float32 or float64)")


def _number(value, what, name):
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name}(): argument '{what}' must be a number, got {type(value).__name__}")
    return float(value)


def gelu(input, approximate="none"):
    """torch.nn.functional.gelu: x Phi(x) (Phi the normal CDF); approximate='tanh' uses
    x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2."""
    if not isinstance(approximate, str):
        raise TypeError(f"gelu(): argument 'approximate' must be str, not {type(approximate).__name__}")
    if approximate not in ("none", "tanh"):
        raise RuntimeError(f"gelu: approximate argument must be either none or tanh, got {approximate!r}")
    _check_floating(input, "gelu")
    return (GeluTanh if approximate == "tanh" else Gelu).apply(input)


def silu(input, inplace=False):
    """torch.nn.functional.silu: x * sigmoid(x) (the swish)."""
    _check_floating(input, "silu")
    out = Silu.apply(input)
    return input._inplace(out, "silu_") if inplace else out


def elu(input, alpha=1.0, inplace=False):
    """torch.nn.functional.elu: x if x > 0 else alpha (exp(x) - 1)."""
    alpha = _number(alpha, "alpha", "elu")
    _check_floating(input, "elu")
    out = Elu.apply(input, alpha=alpha)
    return input._inplace(out, "elu_") if inplace else out


# ---- piecewise-linear: hardtanh, relu6, prelu -------------------------------------------------
class Hardtanh(Function):
    """y = min(max(x, min_val), max_val).   dx = g where min_val < x < max_val, else 0.

    Unlike clamp, the edges themselves get no gradient (PyTorch's hardtanh_backward)."""

    def forward(self, x, min_val, max_val):
        self.save_for_backward(inside=(x > min_val) & (x < max_val))
        return self.xp.clip(x, min_val, max_val).astype(x.dtype)

    def backward(self, g):
        return g * Tensor._make(self.saved_array("inside").astype(g.dtype))


def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    """torch.nn.functional.hardtanh: x clipped to [min_val, max_val]."""
    min_val = _number(min_val, "min_val", "hardtanh")
    max_val = _number(max_val, "max_val", "hardtanh")
    if min_val > max_val:
        raise ValueError(f"hardtanh: min_val cannot be greater than max_val (got min_val={min_val}, "
                         f"max_val={max_val})")
    _check_tensor(input, "hardtanh")
    if input.dtype == dtypes.bool_:
        raise RuntimeError("hardtanh: Bool inputs not supported for hardtanh; expected a numeric tensor")
    out = Hardtanh.apply(input, min_val=min_val, max_val=max_val)
    return input._inplace(out, "hardtanh_") if inplace else out


def relu6(input, inplace=False):
    """torch.nn.functional.relu6: min(max(x, 0), 6), i.e. hardtanh(x, 0, 6)."""
    _check_tensor(input, "relu6")
    if input.dtype == dtypes.bool_:
        raise RuntimeError("relu6: Bool inputs not supported for relu6; expected a numeric tensor")
    return hardtanh(input, 0.0, 6.0, inplace)


class Prelu(Function):
    """y = x if x > 0 else w x, w of shape (C,) along dim 1 (or one w for all).

    dx = g * (1 if x > 0 else w),   dw = sum of g x where x <= 0, over every dim but the channel's."""

    def forward(self, x, w):
        negative = x <= 0
        w_b = w.reshape(self._broadcast_shape(x.ndim, w.size))
        self.save_for_backward(x=x, w=w, negative=negative)
        return self.xp.where(negative, w_b * x, x)

    def backward(self, g):
        x, w = self.saved("x", "w")
        negative = Tensor._make(self.saved_array("negative").astype(g.dtype))
        dx = dw = None
        if self.needs_input_grad[0]:
            dx = g * (1 - negative + negative * w.reshape(self._broadcast_shape(x.ndim, w.numel())))
        if self.needs_input_grad[1]:
            per_element = g * x * negative
            if w.numel() == 1:
                dw = per_element.sum().reshape(w.shape)
            else:
                dw = per_element.sum(tuple(d for d in range(x.ndim) if d != 1))
        return dx, dw

    @staticmethod
    def _broadcast_shape(ndim, n_weights):
        """w as (C, 1, ..., 1) against (N, C, *), or as a scalar when it is one weight."""
        return (n_weights,) + (1,) * (ndim - 2) if n_weights > 1 else ()


def prelu(input, weight):
    """torch.nn.functional.prelu: max(0, x) + weight * min(0, x), weight per channel (dim 1)."""
    _check_tensor(input, "prelu")
    if not isinstance(weight, Tensor):
        raise TypeError(f"prelu(): argument 'weight' must be a Tensor, got {type(weight).__name__}")
    if weight.ndim > 1:
        raise RuntimeError(f"prelu: Expected `weight` to be a scalar or 1D tensor, but got: ndim = "
                           f"{weight.ndim} (weight shape {list(weight.shape)})")
    if input.dtype != weight.dtype:
        raise RuntimeError(f"prelu: Type promoting not supported. Got {input.dtype} (input) and "
                           f"{weight.dtype} (weight); expected the same floating-point dtype")
    if not dtypes.is_floating(input.dtype):  # PyTorch: NotImplementedError for integer and bool
        raise NotImplementedError(f"prelu: not implemented for dtype {input.dtype}; expected a "
                                  f"floating-point input and weight")
    n = weight.numel()
    if n != 1:
        if input.ndim == 0:
            raise RuntimeError(f"prelu: Not allow zero-dim input tensor with {n} weights; expected "
                               f"one weight for a 0-d input")
        channels = input.shape[1] if input.ndim >= 2 else 1
        if n != channels:
            raise RuntimeError(f"prelu: Mismatch of parameter numbers and input channel size. Found "
                               f"parameter numbers = {n} and channel size = {channels} (input shape "
                               f"{list(input.shape)}; the channels are dim 1)")
    return Prelu.apply(input, weight)


class Softplus(Function):
    """y = log(1 + e^(beta x)) / beta, and y = x where beta x > threshold (PyTorch's switch to the
    identity, where the two differ by less than e^-threshold).
    dx = g sigmoid(beta x), and g where beta x > threshold.

    Computed as max(z, 0) + log(1 + e^-|z|), z = beta x: e^-|z| <= 1, so nothing overflows, and
    the derivative at z = 0 is exactly 1/2 (composing relu and abs would give 0 there)."""

    def forward(self, x, beta, threshold):
        xp = self.xp
        self.save_for_backward(x=x)  # x, not beta x: backward must stay differentiable in x
        z = x * beta
        y = (xp.maximum(z, 0) + xp.log1p(xp.exp(-xp.abs(z)))) / beta
        return xp.where(z > threshold, x, y).astype(x.dtype, copy=False)

    def backward(self, g):
        z = self.saved("x") * self.attrs["beta"]
        return where(z > self.attrs["threshold"], g, g * sigmoid(z))


def softplus(input, beta=1.0, threshold=20.0):
    """torch.nn.functional.softplus: log(1 + exp(beta x)) / beta, linear above threshold."""
    _check_floating(input, "softplus")
    beta, threshold = _number(beta, "beta", "softplus"), _number(threshold, "threshold", "softplus")
    if beta == 0:
        raise ValueError("softplus: beta must be non-zero (the result is divided by beta), got 0")
    return Softplus.apply(input, beta=beta, threshold=threshold)
