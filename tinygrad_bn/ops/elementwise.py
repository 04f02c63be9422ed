"""Elementwise ops: arithmetic, math functions, comparisons. Each Function is followed by its
lowercase functional form. Binary ops broadcast like PyTorch; their backward sums the gradient
back down to each input's shape (`sum_to_shape`)."""
from tinygrad_bn import dtypes
from tinygrad_bn.autograd.function import Function
from tinygrad_bn.ops._helpers import as_tensor, binary_operands, broadcast_shape, sum_to_shape
from tinygrad_bn.tensor import Tensor


def _const(array):
    return Tensor._make(array)


# ---- arithmetic -----------------------------------------------------------------------------
class Add(Function):
    """y = a + b.   da = g,  db = g."""

    def forward(self, a, b):
        return a + b

    def backward(self, g):
        (sa, _), (sb, _) = self.input_meta
        return (sum_to_shape(g, sa) if self.needs_input_grad[0] else None,
                sum_to_shape(g, sb) if self.needs_input_grad[1] else None)


def add(a, b):
    return Add.apply(*binary_operands(a, b, "add"))


class Sub(Function):
    """y = a - b.   da = g,  db = -g."""

    def forward(self, a, b):
        return a - b

    def backward(self, g):
        (sa, _), (sb, _) = self.input_meta
        return (sum_to_shape(g, sa) if self.needs_input_grad[0] else None,
                sum_to_shape(-g, sb) if self.needs_input_grad[1] else None)


def sub(a, b):
    if any(isinstance(v, bool) or (isinstance(v, Tensor) and v.dtype == dtypes.bool_) for v in (a, b)):  # PyTorch refuses; ~ or logical_not is what was meant
        raise RuntimeError(f"sub: subtraction, the `-` operator, with a bool tensor is not supported (got "
                           f"{getattr(a, 'dtype', type(a).__name__)} and {getattr(b, 'dtype', type(b).__name__)}). "
                           f"If you are trying to invert a mask, use the `~` or `logical_not()` operator instead.")
    return Sub.apply(*binary_operands(a, b, "sub"))


class Mul(Function):
    """y = a * b.   da = g * b,  db = g * a."""

    def forward(self, a, b):
        # each gradient needs the *other* operand only
        if self.needs_input_grad[1]:
            self.save_for_backward(a=a)
        if self.needs_input_grad[0]:
            self.save_for_backward(b=b)
        return a * b

    def backward(self, g):
        (sa, _), (sb, _) = self.input_meta
        da = sum_to_shape(g * self.saved("b"), sa) if self.needs_input_grad[0] else None
        db = sum_to_shape(g * self.saved("a"), sb) if self.needs_input_grad[1] else None
        return da, db


def mul(a, b):
    return Mul.apply(*binary_operands(a, b, "mul"))


class Div(Function):
    """y = a / b.   da = g / b,  db = -g * a / b^2."""

    def forward(self, a, b):
        self.save_for_backward(a=a, b=b)
        return a / b

    def backward(self, g):
        (sa, _), (sb, _) = self.input_meta
        a, b = self.saved("a", "b")
        da = sum_to_shape(g / b, sa) if self.needs_input_grad[0] else None
        db = sum_to_shape(-g * a / (b * b), sb) if self.needs_input_grad[1] else None
        return da, db


def div(a, b):
    a, b = binary_operands(a, b, "div")
    if not dtypes.is_floating(a.dtype):  # true division of integers gives floats, as in PyTorch
        a, b = cast(a, dtypes.get_default_dtype()), cast(b, dtypes.get_default_dtype())
    return Div.apply(a, b)


class PowScalar(Function):
    """y = x ** p for a Python number p.   dx = g * p * x^(p-1)."""

    def forward(self, x, exponent):
        self.save_for_backward(x=x)
        return x ** exponent

    def backward(self, g):
        p = self.attrs["exponent"]
        x = self.saved("x")
        if p == 0:
            return g * 0
        return g * p * (x if p == 2 else pow(x, p - 1))


class Pow(Function):
    """y = a ** b.   da = g * b * a^(b-1) (0 where b == 0, so d/da 0^0 = 0),
    db = g * y * log(a) (0 where a == 0 and b >= 0): PyTorch's conventions."""

    def forward(self, a, b):
        y = a ** b
        self.save_for_backward(a=a, b=b, y=y)
        return y

    def backward(self, g):
        (sa, _), (sb, _) = self.input_meta
        a, b, y = self.saved("a", "b", "y")
        da = None
        if self.needs_input_grad[0]:
            da = sum_to_shape(where(b == 0, as_tensor(0.0, g, g.dtype), g * b * pow(a, b - 1)), sa)
        db = None
        if self.needs_input_grad[1]:
            zero_base = (a == 0) & (b >= 0)
            safe_log = log(where(zero_base, as_tensor(1.0, a, a.dtype), a))
            db = sum_to_shape(where(zero_base, as_tensor(0.0, g, g.dtype), g * y * safe_log), sb)
        return da, db


def pow(base, exponent):
    if isinstance(base, Tensor) and isinstance(exponent, (int, float)) and not isinstance(exponent, bool):
        if not dtypes.is_floating(base.dtype) and (exponent < 0 or isinstance(exponent, float)):
            base = cast(base, dtypes.get_default_dtype())
        return PowScalar.apply(base, exponent=exponent)
    return Pow.apply(*binary_operands(base, exponent, "pow"))


# ---- unary math -----------------------------------------------------------------------------
class Neg(Function):
    """y = -x.   dx = -g."""

    def forward(self, x):
        return -x

    def backward(self, g):
        return -g


def neg(x):
    return Neg.apply(x)


class Exp(Function):
    """y = e^x.   dx = g * y."""

    def forward(self, x):
        y = self.xp.exp(x)
        self.save_for_backward(y=y)
        return y

    def backward(self, g):
        return g * self.saved("y")


class Log(Function):
    """y = ln x.   dx = g / x."""

    def forward(self, x):
        self.save_for_backward(x=x)
        return self.xp.log(x)

    def backward(self, g):
        return g / self.saved("x")


class Sqrt(Function):
    """y = sqrt(x).   dx = g / (2 y)."""

    def forward(self, x):
        y = self.xp.sqrt(x)
        self.save_for_backward(y=y)
        return y

    def backward(self, g):
        return g / (2 * self.saved("y"))


class Rsqrt(Function):
    """y = 1 / sqrt(x).   dx = -g * y^3 / 2."""

    def forward(self, x):
        y = 1 / self.xp.sqrt(x)
        self.save_for_backward(y=y)
        return y

    def backward(self, g):
        y = self.saved("y")
        return g * (y * y * y) * -0.5


def _sign(xp, x):
    """sign(x), with sign(NaN) = 0 as in PyTorch (NumPy gives NaN)."""
    s = xp.sign(x)
    return xp.where(xp.isnan(s), 0, s).astype(s.dtype, copy=False) if s.dtype.kind == "f" else s


class Abs(Function):
    """y = |x|.   dx = g * sign(x)  (0 at 0 and at NaN, as in PyTorch)."""

    def forward(self, x):
        self.save_for_backward(x=x)
        return self.xp.abs(x)

    def backward(self, g):
        return g * _const(_sign(self.xp, self.saved_array("x")))


class Sign(Function):
    """y = sign(x), sign(NaN) = 0 as in PyTorch.   dx = 0 (almost everywhere)."""

    def forward(self, x):
        return _sign(self.xp, x)

    def backward(self, g):
        return g * 0


class Tanh(Function):
    """y = tanh x.   dx = g * (1 - y^2)."""

    def forward(self, x):
        y = self.xp.tanh(x)
        self.save_for_backward(y=y)
        return y

    def backward(self, g):
        y = self.saved("y")
        return g * (1 - y * y)


class Sigmoid(Function):
    """y = 1 / (1 + e^-x).   dx = g*y*(1-y).

    Two branches with t = e^-|x| <= 1, so nothing overflows and no 1 - (nearly 1) cancels:
    y = 1 / (1 + t) for x >= 0, y = t / (1 + t) for x < 0. (The one-line (1 + tanh(x/2)) / 2 loses
    all relative precision for negative x in float32: sigmoid(-17) off by 44%, sigmoid(-20) = 0.)"""

    def forward(self, x):
        xp = self.xp
        t = xp.exp(-xp.abs(x))
        y = xp.where(x >= 0, 1, t).astype(t.dtype, copy=False)
        t += 1
        y /= t
        self.save_for_backward(y=y)
        return y

    def backward(self, g):
        y = self.saved("y")
        return g * y * (1 - y)


class Relu(Function):
    """y = max(x, 0).   dx = g * [not y <= 0]  (so relu'(NaN) = 1, as in PyTorch)."""

    def forward(self, x):
        y = self.xp.maximum(x, 0)
        self.save_for_backward(y=y)
        return y

    def backward(self, g):
        return g * _const(~(self.saved_array("y") <= 0))


def _as_float(x, name):
    """Math functions of integer tensors work in the default float dtype, as in PyTorch."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a Tensor, got {type(x).__name__}")
    return x if dtypes.is_floating(x.dtype) else cast(x, dtypes.get_default_dtype())


def exp(x): return Exp.apply(_as_float(x, "exp"))
def log(x): return Log.apply(_as_float(x, "log"))
def sqrt(x): return Sqrt.apply(_as_float(x, "sqrt"))
def rsqrt(x): return Rsqrt.apply(_as_float(x, "rsqrt"))
def tanh(x): return Tanh.apply(_as_float(x, "tanh"))
def sigmoid(x): return Sigmoid.apply(_as_float(x, "sigmoid"))
def abs(x):
    if isinstance(x, Tensor) and x.dtype == dtypes.bool_:
        raise NotImplementedError("abs: not implemented for a bool tensor, as in PyTorch")
    return Abs.apply(x)
def sign(x):
    if isinstance(x, Tensor) and x.dtype == dtypes.bool_:
        return Tensor._make(x.data.copy())  # PyTorch: sign of a bool tensor is the tensor itself
    return Sign.apply(x)
def relu(x):
    if isinstance(x, Tensor) and x.dtype == dtypes.bool_:
        raise RuntimeError("relu: boolean inputs are not supported, as in PyTorch")
    return Relu.apply(x)


# ---- two-operand selections -----------------------------------------------------------------
class Maximum(Function):
    """y = max(a, b).   The gradient goes to the larger input; ties split it half and half."""

    def forward(self, a, b):
        self.save_for_backward(a=a, b=b)
        return self.xp.maximum(a, b)

    def backward(self, g):
        return _select_backward(self, g, larger=True)


class Minimum(Function):
    """y = min(a, b).   The gradient goes to the smaller input; ties split it half and half."""

    def forward(self, a, b):
        self.save_for_backward(a=a, b=b)
        return self.xp.minimum(a, b)

    def backward(self, g):
        return _select_backward(self, g, larger=False)


def _select_backward(node, g, larger):
    """PyTorch's masks: an input gets g unless it lost (so where a NaN meets anything, both sides
    get all of g), half of g on a tie."""
    a, b = node.saved_array("a"), node.saved_array("b")
    a_lost, b_lost = ((a < b), (a > b)) if larger else ((a > b), (a < b))
    tie = (a == b).astype(g.dtype) * 0.5
    share_a = (1 - a_lost.astype(g.dtype)) - tie
    share_b = (1 - b_lost.astype(g.dtype)) - tie
    (sa, _), (sb, _) = node.input_meta
    da = sum_to_shape(g * _const(share_a), sa) if node.needs_input_grad[0] else None
    db = sum_to_shape(g * _const(share_b), sb) if node.needs_input_grad[1] else None
    return da, db


def maximum(a, b):
    return Maximum.apply(*binary_operands(a, b, "maximum"))


def minimum(a, b):
    return Minimum.apply(*binary_operands(a, b, "minimum"))


class Clamp(Function):
    """y = min(max(x, lo), hi) for Python numbers lo, hi.   dx = g * [lo <= x <= hi]."""

    def forward(self, x, min, max):
        self.save_for_backward(x=x)
        return self.xp.clip(x, min, max)

    def backward(self, g):
        x = self.saved_array("x")
        lo, hi = self.attrs["min"], self.attrs["max"]
        inside = (x >= lo) if lo is not None else (x == x)
        if hi is not None:
            inside &= x <= hi
        return g * _const(inside)


def clamp(x, min=None, max=None):
    if min is None and max is None:
        raise RuntimeError("clamp: at least one of 'min' or 'max' must not be None")
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        out = x if min is None else maximum(x, min)
        return out if max is None else minimum(out, max)
    return Clamp.apply(x, min=min, max=max)


class Where(Function):
    """y = a where cond else b.   da = g where cond else 0,  db = g where not cond else 0."""

    def forward(self, cond, a, b):
        self.save_for_backward(cond=cond)
        return self.xp.where(cond, a, b)

    def backward(self, g):
        cond = self.saved("cond")
        (_, _), (sa, _), (sb, _) = self.input_meta
        zero = as_tensor(0, g, g.dtype)
        da = sum_to_shape(where(cond, g, zero), sa) if self.needs_input_grad[1] else None
        db = sum_to_shape(where(cond, zero, g), sb) if self.needs_input_grad[2] else None
        return None, da, db


def where(condition, a, b):
    if not isinstance(condition, Tensor):
        raise TypeError(f"where: condition must be a bool Tensor, got {type(condition).__name__}")
    if condition.dtype != dtypes.bool_:
        raise TypeError(f"where: expected condition to be a bool tensor, got dtype {condition.dtype}")
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):  # where(cond, 1.0, 0.0): scalars
        a = as_tensor(a, condition)
    a, b = binary_operands(a, b, "where")
    if condition.device != a.device:
        raise RuntimeError(f"where: expected all tensors to be on the same device, but found "
                           f"{condition.device} and {a.device}")
    broadcast_shape(broadcast_shape(condition.shape, a.shape, "where"), b.shape, "where")
    return Where.apply(condition, a, b)


# ---- dtype conversion and copies ------------------------------------------------------------
class Cast(Function):
    """y = x converted to `dtype`.   dx = g converted back to x's dtype."""

    def forward(self, x, dtype):
        return x.astype(dtype)

    def backward(self, g):
        in_dtype = self.input_meta[0][1]
        return cast(g, in_dtype) if dtypes.is_floating(in_dtype) else None


def cast(x, dtype):
    if x.dtype == dtype:
        return x
    return Cast.apply(x, dtype=dtype)


class Clone(Function):
    """y = a copy of x.   dx = g."""

    def forward(self, x):
        return x.copy()

    def backward(self, g):
        return g


def clone(x):
    return Clone.apply(x)


# ---- comparisons and logic (no gradient) ----------------------------------------------------
def _compare(op, name):
    def compare(a, b):
        a, b = binary_operands(a, b, name)
        return Tensor._make(op(a.data, b.data))
    compare.__name__ = name
    return compare


eq = _compare(lambda a, b: a == b, "eq")
ne = _compare(lambda a, b: a != b, "ne")
lt = _compare(lambda a, b: a < b, "lt")
le = _compare(lambda a, b: a <= b, "le")
gt = _compare(lambda a, b: a > b, "gt")
ge = _compare(lambda a, b: a >= b, "ge")


def logical_not(x):
    if x.dtype != dtypes.bool_:
        raise TypeError(f"logical_not (~): expected a bool tensor, got dtype {x.dtype}")
    return Tensor._make(~x.data)


def logical_and(a, b):
    a, b = binary_operands(a, b, "logical_and")
    return Tensor._make(a.data & b.data)


def logical_or(a, b):
    a, b = binary_operands(a, b, "logical_or")
    return Tensor._make(a.data | b.data)

