"""Property-based parity with PyTorch (issue 18): hypothesis draws shapes (0-d, size-0 dims,
broadcasting pairs), dims (negative and out of range) and keepdim, dtypes (bool, int64, float16,
float32, float64) and layouts (contiguous, transposed, sliced, expanded), and every op must give
PyTorch's values, dtype, shape and float64 gradients, or, where PyTorch raises, raise a clear
error of its own: a built-in exception type, raised from tinygrad_bn's code, never from NumPy.

The op list comes from the package: the public functions of tinygrad_bn and the methods of
Tensor are sorted into families by their signatures (one tensor; two operands; a tensor, a dim and
keepdim), so a new op with one of those signatures is swept with no test edit. A public name
that fits no family must be listed in NOT_SWEPT with the reason; test_every_public_op_is_classified
fails until it is. The draws are derandomized (the same examples on every run); `--slow` draws
about 15 times as many.
"""
import inspect
import os

import numpy as np
import pytest

import tinygrad_bn as tg
from tests.helpers import needs_torch, torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import array_shapes, mutually_broadcastable_shapes  # noqa: E402

DTYPES = ["bool", "int64", "float16", "float32", "float64"]
LAYOUTS = ["contiguous", "transposed", "sliced", "expanded"]
INPLACE_BINARY = {"add_", "sub_", "mul_", "div_"}
INPLACE_UNARY = {"relu_", "zero_"}

#: public names that fit no swept family, with why (covered elsewhere by tests/ops and tests/nn)
NOT_SWEPT = {
    **{n: "creation / RNG / IO: no tensor input to draw" for n in (
        "arange", "empty", "empty_like", "eye", "full", "full_like", "linspace", "ones", "ones_like", "rand",
        "rand_like", "randint", "randn", "randn_like", "randperm", "zeros", "zeros_like", "tensor", "load",
        "save", "manual_seed", "initial_seed", "get_default_dtype", "set_default_dtype", "is_grad_enabled")},
    **{n: "shape op with op-specific arguments: tests/ops/test_op_table.py, test_shape.py, test_edge_cases.py"
       for n in ("cat", "chunk", "flatten", "narrow", "pad", "permute", "reshape", "split", "squeeze", "stack",
                 "transpose", "unsqueeze", "where", "clamp", "std", "var", "matmul", "__matmul__", "expand_as",
                 "clip", "clamp_", "size", "view", "expand", "copy_", "fill_", "__rpow__")},
    **{n: "not an op on values (conversion, graph or device plumbing)" for n in (
        "bool", "clone", "contiguous", "cpu", "detach", "detach_", "dim", "double", "float", "half", "int",
        "item", "long", "numel", "numpy", "retain_grad", "tolist", "backward", "cuda", "register_hook",
        "requires_grad_", "to", "type")},
    **{n: "not an op on values: conversion or construction, tests/test_tensor_methods.py, tests/test_tensor.py"
       for n in ("allclose", "as_tensor", "from_numpy", "is_tensor", "new_full", "new_ones", "new_tensor",
                 "new_zeros")},
    **{n: "RNG: values differ from PyTorch's by design (own generator); tests/test_tensor_methods.py"
       for n in ("normal_", "uniform_")},
}


#: knowingly different from PyTorch, each recorded in docs/engine.md's coverage table:
#: op name -> (does this draw hit it?, why). Such draws are left out of the comparison.
KNOWN_DIFFERENCES = {
    "maximum": (lambda dtypes, scalar: scalar is not None, "accepts a Python number for other; PyTorch raises TypeError"),
    "minimum": (lambda dtypes, scalar: scalar is not None, "accepts a Python number for other; PyTorch raises TypeError"),
    "square": (lambda dtypes, scalar: "bool" in dtypes, "of a bool tensor is bool; PyTorch promotes it to int64"),
    "__invert__": (lambda dtypes, scalar: "bool" not in dtypes, "~ is logical_not of bool tensors only; PyTorch's "
                   "bitwise not of integers raises TypeError here"),
    **{n: (lambda dtypes, scalar: any(d != "float64" for d in dtypes),
           "bool and integer powers follow NumPy (bool ** 2 is int8, int ** negative int raises NumPy's "
           "ValueError); mixed float precisions not yet matched") for n in ("pow", "__pow__")},
    "__rtruediv__": (lambda dtypes, scalar: dtypes[0] != "float64", "PyTorch's Tensor.__rtruediv__ "
                     "is other * reciprocal(self), the reciprocal rounded in self's dtype (or float32 for "
                     "integers); ours divides once in the promoted dtype"),
    **{n: (lambda dtypes, scalar: dtypes[0] == "bool", "matrix products of bool tensors are computed (as "
           "NumPy does, a bool result); PyTorch raises NotImplementedError") for n in ("bmm", "einsum")},
    "div": (lambda dtypes, scalar: dtypes[0] == "bool", "div(rounding_mode='trunc' or 'floor') of bool tensors "
            "is computed; PyTorch raises NotImplementedError"),
    "logsumexp": (lambda dtypes, scalar: dtypes[0] in ("bool", "int64"), "of bool and int64 refused; PyTorch "
                  "computes it in the default float dtype"),
}


def _known_difference(name, dtypes, scalar=None):
    hit, _ = KNOWN_DIFFERENCES.get(name, (lambda *_: False, ""))
    return hit(dtypes, scalar)


def _family(params):
    params = [p for p in params if p != "self"]
    if len(params) == 1 and params[0] in ("x", "input"):
        return "unary"
    if params in (["x"], []):
        return "unary"
    if params in (["a", "b"], ["other"], ["exponent"], ["other", "alpha"]):
        return "binary"
    if params[:3] == ["x", "dim", "keepdim"] or params == ["dim", "keepdim"]:
        return "reduction"
    return None


def _public_ops():
    """(kind, name, family): the package's functions and Tensor's methods that PyTorch also has."""
    ops = []
    for name in sorted(getattr(tg, "__all__", None) or dir(tg)):
        f = getattr(tg, name, None)
        if inspect.isfunction(f) and not name.startswith("_"):
            ops.append(("function", name, _family(list(inspect.signature(f).parameters))))
    for name in sorted(vars(tg.Tensor)):
        f = inspect.getattr_static(tg.Tensor, name)
        if name.startswith("_") and not (name.startswith("__") and name.strip("_") in _DUNDERS):
            continue
        if not inspect.isfunction(f):
            continue
        ops.append(("method", name, _family(list(inspect.signature(f).parameters))))
    return ops


# ---- ops with their own arguments: one drawer per op --------------------------------------------
# Each drawer draws the first operand's shape and the op's other arguments: ints and tuples as they
# are, and tensors as Like (the operand's dtype; float64 ones get gradients too), Index (int64) or
# Mask (bool), built the same in both frameworks. Out-of-range dims, indices and sizes are drawn on
# purpose: where PyTorch raises, we must raise clearly.
class Like:
    def __init__(self, shape):
        self.shape = tuple(shape)


class Index:
    def __init__(self, values):
        self.values = np.asarray(values, dtype=np.int64)


class Mask:
    def __init__(self, shape):
        self.shape = tuple(shape)


SELF = object()  # where the operand goes when it is not the first argument (einsum)


def _shape(data, min_dims=0, max_dims=3):
    return data.draw(array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=0, max_side=4))


def _dim(data, ndim):
    return data.draw(st.integers(-max(ndim, 1) - 1, max(ndim, 1)))  # one out of range on each side


def _valid_dim(data, ndim):
    return data.draw(st.integers(-max(ndim, 1), max(ndim, 1) - 1))


def _size(shape, dim):
    return shape[dim] if shape else 1  # a 0-d tensor has one entry along dim 0 / -1


def _dim_only(data):
    shape = _shape(data)
    return shape, (_dim(data, len(shape)),), {}


def _prod(data):
    shape = _shape(data)
    if data.draw(st.booleans()):
        return shape, (), {}
    return shape, (_dim(data, len(shape)),), {"keepdim": data.draw(st.booleans())}


def _flip(data):
    shape = _shape(data)
    dims = data.draw(st.lists(st.integers(-len(shape) - 1, len(shape)), max_size=3, unique=True))
    return shape, (tuple(dims),), {}


def _roll(data):
    shape = _shape(data)
    if data.draw(st.booleans()):
        return shape, (data.draw(st.integers(-5, 5)),), {}
    return shape, (data.draw(st.integers(-5, 5)), _dim(data, len(shape))), {}


def _sort(data):
    shape = _shape(data)
    return shape, (), {"dim": _dim(data, len(shape)), "descending": data.draw(st.booleans()), "stable": True}


def _topk(data):
    shape = _shape(data)
    dim = _dim(data, len(shape))
    in_range = -max(len(shape), 1) <= dim < max(len(shape), 1)
    k = data.draw(st.integers(0, (_size(shape, dim) if in_range else 1) + 1))
    return shape, (k,), {"dim": dim, "largest": data.draw(st.booleans()), "sorted": True}


def _index_for(data, shape, dim, same_rank):
    """An int64 index along `dim` of `shape` (0-d when the operand is), every value in range but for
    one draw in eight, which may be one past either end."""
    n = _size(shape, dim)
    if same_rank:
        index_shape = tuple(data.draw(st.integers(0, s)) if d != dim % max(len(shape), 1) else
                            data.draw(st.integers(0, 3)) for d, s in enumerate(shape))
    else:
        index_shape = (data.draw(st.integers(0, 4)),)
    low, high = (-1, n) if data.draw(st.integers(0, 7)) == 0 else (0, n - 1)
    values = data.draw(st.lists(st.integers(low, max(low, high)), min_size=int(np.prod(index_shape)),
                                max_size=int(np.prod(index_shape))))
    return np.array(values, dtype=np.int64).reshape(index_shape)


def _gather(data):
    shape = _shape(data)
    dim = _valid_dim(data, len(shape))
    return shape, (dim, Index(_index_for(data, shape, dim, same_rank=True))), {}


def _index_select(data):
    shape = _shape(data)
    dim = _valid_dim(data, len(shape))
    index = _index_for(data, shape, dim, same_rank=False)
    return shape, (dim, Index(index if shape else index[:1])), {}  # a 0-d input takes at most one


def _scatter_add(data):
    shape = _shape(data)
    dim = _valid_dim(data, len(shape))
    index = _index_for(data, shape, dim, same_rank=True)
    return shape, (dim, Index(index), Like(index.shape)), {}


def _scatter_value(data):  # a scalar value: which duplicate index wins does not matter
    shape = _shape(data)
    dim = _valid_dim(data, len(shape))
    return shape, (dim, Index(_index_for(data, shape, dim, same_rank=True))), {"value": 2.5}


def _masked_fill(data):
    shape = _shape(data)
    mask = tuple(s if data.draw(st.booleans()) else 1 for s in shape)[data.draw(st.integers(0, len(shape))):]
    return shape, (Mask(mask), data.draw(st.sampled_from([-1.5, 0.0, 3.0]))), {}


def _diagonal_op(min_dims, max_dims):
    def draw(data):
        return _shape(data, min_dims, max_dims), (data.draw(st.integers(-3, 3)),), {}
    return draw


def _repeat(data):
    shape = _shape(data, 0, 2)
    sizes = data.draw(st.lists(st.integers(0, 3), min_size=max(len(shape) - 1, 0), max_size=len(shape) + 1))
    return shape, tuple(sizes), {}


def _unflatten(data):
    shape = _shape(data, 1, 3)
    dim = _valid_dim(data, len(shape))
    n = shape[dim]
    sizes = data.draw(st.sampled_from([(n,), (1, n), (n, 1), (-1, 1), (1, -1)] +
                                      ([(2, n // 2)] if n % 2 == 0 else [(2, -1)])))
    return shape, (dim, sizes), {}


def _norm(data):
    shape = _shape(data)
    p = data.draw(st.sampled_from(["fro", 1, 2, 3, float("inf"), 0, -1, -2.5, float("-inf")]))
    dim = data.draw(st.one_of(st.none(), st.just(_valid_dim(data, len(shape)))))
    if p == "fro" and dim is None:
        return shape, (), {}
    return shape, (p, dim), {"keepdim": data.draw(st.booleans())}


def _round(data):
    return _shape(data), (), {"decimals": data.draw(st.integers(-1, 2))}


def _div(data):
    shape = _shape(data)
    return shape, (Like(shape[data.draw(st.integers(0, len(shape))):]),), \
        {"rounding_mode": data.draw(st.sampled_from([None, "trunc", "floor"]))}


def _mm(data):
    n, k, m = (data.draw(st.integers(0, 3)) for _ in range(3))
    k2 = k if data.draw(st.integers(0, 5)) else k + 1  # sometimes a mismatch
    return (n, k), (Like((k2, m)),), {}


def _bmm(data):
    b, n, k, m = (data.draw(st.integers(0, 3)) for _ in range(4))
    return (b, n, k), (Like((b, k, m)),), {}


def _outer(data):
    return (data.draw(st.integers(0, 4)),), (Like((data.draw(st.integers(0, 4)),)),), {}


def _einsum(data):
    equation, shapes = data.draw(st.sampled_from([
        ("ij,jk->ik", ((2, 3), (3, 4))), ("i,i->", ((3,), (3,))), ("bij->bji", ((2, 3, 4),)),
        ("ij->", ((2, 3),)), ("ij,ij->ij", ((0, 2), (0, 2))), ("bij,bjk->bik", ((2, 1, 3), (2, 3, 2)))]))
    return shapes[0], (equation, SELF, *[Like(s) for s in shapes[1:]]), {}


ARGUMENT_OPS = {
    "cumsum": _dim_only, "cumprod": _dim_only, "softmax": _dim_only, "log_softmax": _dim_only,
    "prod": _prod, "flip": _flip, "roll": _roll, "sort": _sort, "topk": _topk, "gather": _gather,
    "index_select": _index_select, "scatter_add": _scatter_add, "scatter": _scatter_value,
    "masked_fill": _masked_fill, "masked_fill_": _masked_fill, "tril": _diagonal_op(0, 3),
    "triu": _diagonal_op(0, 3), "diag": _diagonal_op(0, 3), "repeat": _repeat, "unflatten": _unflatten,
    "unbind": _dim_only, "norm": _norm, "round": _round, "div": _div, "mm": _mm, "bmm": _bmm,
    "outer": _outer, "einsum": _einsum,
}
#: values that must be distinct for the comparison to be defined (which of two equal values topk
#: returns first is up to each implementation)
DISTINCT_VALUES = {"topk"}



_DUNDERS = {"add", "sub", "mul", "truediv", "pow", "neg", "lt", "le", "gt", "ge", "eq", "ne", "abs", "radd",
            "rsub", "rmul", "rtruediv", "and", "or", "xor", "invert", "floordiv", "mod", "matmul", "rpow"}
OPS = _public_ops()
SWEPT = [(k, n, fam) for k, n, fam in OPS if fam and n not in NOT_SWEPT and n not in ARGUMENT_OPS]


def test_every_public_op_is_classified():
    unclassified = sorted({n for _, n, fam in OPS if fam is None and n not in NOT_SWEPT and n not in ARGUMENT_OPS})
    assert not unclassified, f"public ops in no swept family and not in NOT_SWEPT: {unclassified}"
    assert len(SWEPT) >= 40, f"the sweep found only {len(SWEPT)} ops"


# ---- drawing inputs -------------------------------------------------------------------------
def _examples(request, n):
    slow = request.config.getoption("--slow", default=False) or os.environ.get("TINYGRAD_BN_SLOW") == "1"
    return settings(max_examples=n * 15 if slow else n, derandomize=True, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


def _values(rng, shape, dtype):
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype == "int64":
        return rng.integers(-4, 5, size=shape).astype(np.int64)
    return (rng.standard_normal(shape) * 2).astype(dtype)


def _make(rng, shape, dtype, layout):
    """The same input in both frameworks, as a view of the given layout of a base each can
    differentiate (float64 bases require grad)."""
    shape = tuple(shape)
    if layout == "transposed" and len(shape) >= 2:
        base_shape = (shape[-1],) + shape[1:-1] + (shape[0],)
        view = lambda t: t.transpose(0, -1)  # noqa: E731
    elif layout == "sliced" and len(shape) >= 1:
        base_shape = shape[:-1] + (2 * shape[-1],)
        view = lambda t: t[..., ::2]  # noqa: E731
    elif layout == "expanded" and len(shape) >= 1:
        base_shape = (1,) + shape[1:]
        view = lambda t: t.expand(*shape)  # noqa: E731
    else:
        base_shape, view = shape, (lambda t: t)
    base = _values(rng, base_shape, dtype)
    grad = dtype == "float64"
    ours = tg.tensor(base, requires_grad=grad)
    theirs = torch.tensor(base, requires_grad=grad)
    return (ours, view), (theirs, view)


# ---- comparing --------------------------------------------------------------------------------
def _dtype_name(dt):
    return str(dt).replace("torch.", "")


def _tolerance(dtype):
    return {"float16": (2e-2, 2e-2), "float32": (1e-5, 1e-5)}.get(dtype, (1e-9, 1e-12))


def _assert_same(ours, ref, what):
    if isinstance(ref, tuple):  # (values, indices)
        assert isinstance(ours, tuple) and len(ours) == len(ref), f"{what}: expected a {len(ref)}-tuple"
        for i, (o, r) in enumerate(zip(ours, ref)):
            _assert_same(o, r, f"{what}[{i}]")
        return
    assert isinstance(ours, tg.Tensor), f"{what}: expected a Tensor, got {type(ours).__name__}"
    assert ours.shape == tuple(ref.shape), f"{what}: shape {ours.shape} != PyTorch's {tuple(ref.shape)}"
    assert _dtype_name(ours.dtype) == _dtype_name(ref.dtype), \
        f"{what}: dtype {ours.dtype} != PyTorch's {_dtype_name(ref.dtype)}"
    rtol, atol = _tolerance(_dtype_name(ref.dtype))
    np.testing.assert_allclose(ours.detach().numpy().astype(np.float64) if ours.dtype.kind != "b" else
                               ours.detach().numpy(),
                               ref.detach().numpy().astype(np.float64) if ref.dtype != torch.bool else
                               ref.detach().numpy(), rtol=rtol, atol=atol, equal_nan=True, err_msg=what)


def _assert_clear_error(error, what):
    """Raised from tinygrad_bn's own code with a built-in type, never from inside NumPy (or Python's
    own TypeError for a call that does not match the signature, as PyTorch's argument parser gives)."""
    assert type(error).__module__ == "builtins", f"{what}: {type(error).__module__}.{type(error).__name__}: {error}"
    tb = error.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    where = tb.tb_frame.f_code.co_filename
    if isinstance(error, TypeError) and where == __file__ and "argument" in str(error):
        return
    assert f"{os.sep}tinygrad_bn{os.sep}" in where and "numpy" not in where, \
        f"{what}: {type(error).__name__} raised from {where}: {error}"


def _run(call_ours, call_theirs, ours_inputs, theirs_inputs, what):
    """Both calls; the same outcome; then the float64 gradients of every base."""
    with np.errstate(all="ignore"):
        try:
            ref = call_theirs()
        except Exception as e:  # noqa: BLE001 - PyTorch refused: we must refuse clearly too
            try:
                call_ours()
            except Exception as ours_error:  # noqa: BLE001
                _assert_clear_error(ours_error, what)
                return
            raise AssertionError(f"{what}: PyTorch raises {type(e).__name__}: {e}, we do not")
        try:
            out = call_ours()
        except Exception as e:  # noqa: BLE001
            raise AssertionError(f"{what}: we raise {type(e).__name__}: {e}; PyTorch gives a result") from e
        _assert_same(out, ref, what)
        if isinstance(ref, tuple):  # (values, indices), or unbind's pieces: the first carries the gradient
            if not ref:
                return
            out, ref = out[0], ref[0]
        bases = [(o, t) for o, t in zip(ours_inputs, theirs_inputs) if t.requires_grad]
        if not bases or not ref.requires_grad or not ref.dtype.is_floating_point:
            return
        g = np.random.default_rng(7).standard_normal(tuple(ref.shape))
        out.backward(tg.tensor(g))
        ref.backward(torch.tensor(g))
        for i, (o, t) in enumerate(bases):
            if t.grad is None:
                continue
            assert o.grad is not None, f"{what}: input {i} got no gradient"
            rtol, atol = _tolerance(_dtype_name(ref.dtype))  # a gradient through a float16 output is float16-exact
            np.testing.assert_allclose(o.grad.numpy(), t.grad.numpy(), rtol=rtol, atol=atol, equal_nan=True,
                                       err_msg=f"{what}: gradient of input {i}")


def _callable(kind, name, framework):
    if kind == "function":
        return getattr(framework, name)
    return lambda self, *args, **kw: getattr(self, name)(*args, **kw)


def _input(t, view, inplace):
    """The op's operand: the view of the base, of a non-leaf copy when the op writes in place."""
    return view(t * 1 if inplace and t.requires_grad else t)


# ---- the families -----------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("kind,name", [(k, n) for k, n, fam in SWEPT if fam == "unary"],
                         ids=lambda v: str(v))
def test_unary_ops_match_torch(request, kind, name):
    ours_fn, theirs_fn = _callable(kind, name, tg), _callable(kind, name, torch)
    inplace = name in INPLACE_UNARY

    @_examples(request, 12)
    @given(shape=array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4), dtype=st.sampled_from(DTYPES),
           layout=st.sampled_from(LAYOUTS), seed=st.integers(0, 2 ** 16))
    def check(shape, dtype, layout, seed):
        if _known_difference(name, (dtype,)):
            return
        (a, va), (b, vb) = _make(np.random.default_rng(seed), shape, dtype, layout)
        what = f"{name}({dtype}{list(shape)} {layout})"
        _run(lambda: ours_fn(_input(a, va, inplace)), lambda: theirs_fn(_input(b, vb, inplace)), [a], [b], what)

    check()


@needs_torch
@pytest.mark.parametrize("kind,name", [(k, n) for k, n, fam in SWEPT if fam == "binary"],
                         ids=lambda v: str(v))
def test_binary_ops_match_torch_with_broadcasting_and_promotion(request, kind, name):
    ours_fn, theirs_fn = _callable(kind, name, tg), _callable(kind, name, torch)
    inplace = name in INPLACE_BINARY

    @_examples(request, 15)
    @given(shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=0, max_side=3),
           dtypes=st.tuples(st.sampled_from(DTYPES), st.sampled_from(DTYPES)),
           layouts=st.tuples(st.sampled_from(LAYOUTS), st.sampled_from(LAYOUTS)),
           scalar=st.sampled_from([None, None, None, 2, -1.5, True]), seed=st.integers(0, 2 ** 16))
    def check(shapes, dtypes, layouts, scalar, seed):
        if _known_difference(name, dtypes if scalar is None else dtypes[:1], scalar):
            return
        rng = np.random.default_rng(seed)
        (a, va), (b, vb) = _make(rng, shapes.input_shapes[0], dtypes[0], layouts[0])
        if scalar is None:
            (c, vc), (d, vd) = _make(rng, shapes.input_shapes[1], dtypes[1], layouts[1])
            ours_other, theirs_other, ins = (lambda: vc(c)), (lambda: vd(d)), ([a, c], [b, d])
            other = f"{dtypes[1]}{list(shapes.input_shapes[1])} {layouts[1]}"
        else:
            ours_other = theirs_other = (lambda: scalar)
            ins, other = ([a], [b]), repr(scalar)
        what = f"{name}({dtypes[0]}{list(shapes.input_shapes[0])} {layouts[0]}, {other})"
        _run(lambda: ours_fn(_input(a, va, inplace), ours_other()),
             lambda: theirs_fn(_input(b, vb, inplace), theirs_other()), *ins, what)

    check()


@needs_torch
@pytest.mark.parametrize("kind,name", [(k, n) for k, n, fam in SWEPT if fam == "reduction"],
                         ids=lambda v: str(v))
def test_reductions_match_torch_over_every_dim(request, kind, name):
    ours_fn, theirs_fn = _callable(kind, name, tg), _callable(kind, name, torch)

    @_examples(request, 15)
    @given(shape=array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4), dtype=st.sampled_from(DTYPES),
           layout=st.sampled_from(LAYOUTS), dim=st.one_of(st.none(), st.integers(-4, 3),
                                                          st.tuples(st.integers(-3, 2), st.integers(-3, 2))),
           keepdim=st.booleans(), seed=st.integers(0, 2 ** 16))
    def check(shape, dtype, layout, dim, keepdim, seed):
        if _known_difference(name, (dtype,)):
            return
        (a, va), (b, vb) = _make(np.random.default_rng(seed), shape, dtype, layout)
        what = f"{name}({dtype}{list(shape)} {layout}, dim={dim}, keepdim={keepdim})"
        if dim is None:
            _run(lambda: ours_fn(va(a)), lambda: theirs_fn(vb(b)), [a], [b], what)
        else:
            _run(lambda: _as_tuple(ours_fn(va(a), dim, keepdim=keepdim)),
                 lambda: _as_tuple(theirs_fn(vb(b), dim, keepdim=keepdim)), [a], [b], what)

    check()


def _as_tuple(result):
    """PyTorch's (values, indices) named tuple as a plain tuple; a Tensor as itself."""
    return tuple(result) if isinstance(result, tuple) else result


def _build(arg, rng, dtype, framework):
    """One argument in one framework; tensors from the same numbers in both."""
    if isinstance(arg, Like):
        values = _values(rng, arg.shape, dtype)
        return framework.tensor(values, requires_grad=dtype == "float64")
    if isinstance(arg, Index):
        return framework.tensor(arg.values)
    if isinstance(arg, Mask):
        return framework.tensor(rng.random(arg.shape) < 0.5)
    return arg


@needs_torch
@pytest.mark.parametrize("kind,name", [(k, n) for k, n, _ in OPS if n in ARGUMENT_OPS], ids=lambda v: str(v))
def test_ops_with_their_own_arguments_match_torch(request, kind, name):
    ours_fn, theirs_fn = _callable(kind, name, tg), _callable(kind, name, torch)
    inplace = name.endswith("_")

    @_examples(request, 15)
    @given(data=st.data(), dtype=st.sampled_from(DTYPES), layout=st.sampled_from(LAYOUTS),
           seed=st.integers(0, 2 ** 16))
    def check(data, dtype, layout, seed):
        shape, args, kwargs = ARGUMENT_OPS[name](data)
        if name in DISTINCT_VALUES and (dtype == "bool" or layout == "expanded"):
            return  # ties: bool has two values, an expanded view repeats its rows
        if _known_difference(name, (dtype,)):
            return
        rng = np.random.default_rng(seed)
        (a, va), (b, vb) = _make(rng, shape, dtype, layout)
        if name in DISTINCT_VALUES:
            distinct = rng.permutation(int(np.prod(a.shape))).reshape(a.shape).astype(dtype)
            a, b = tg.tensor(distinct, requires_grad=dtype == "float64"), \
                torch.tensor(distinct, requires_grad=dtype == "float64")
        state = rng.bit_generator.state
        ours_args = [_build(x, rng, dtype, tg) for x in args]
        rng.bit_generator.state = state  # the same numbers for PyTorch's copies
        theirs_args = [_build(x, rng, dtype, torch) for x in args]
        what = f"{name}({dtype}{list(shape)} {layout}, args={[type(x).__name__ if isinstance(x, (Like, Index, Mask)) else x for x in args]}, {kwargs})"

        def call(fn, operand, built):
            if any(x is SELF for x in built):
                return fn(*[operand if x is SELF else x for x in built], **kwargs)
            return fn(operand, *built, **kwargs)

        ours_inputs = [a] + [x for x in ours_args if isinstance(x, tg.Tensor)]
        theirs_inputs = [b] + [x for x in theirs_args if isinstance(x, torch.Tensor)]
        _run(lambda: _as_tuple(call(ours_fn, _input(a, va, inplace), ours_args)),
             lambda: _as_tuple(call(theirs_fn, _input(b, vb, inplace), theirs_args)),
             ours_inputs, theirs_inputs, what)

    check()
