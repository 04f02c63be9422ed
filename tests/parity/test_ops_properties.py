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
    **{n: ("added by the API work (issue 15), op-specific arguments: PyTorch parity, gradcheck and "
           "gradgradcheck in tests/ops/test_{pointwise,indexing,layout,cumulative,sorting,linalg}.py and "
           "tests/test_tensor_methods.py; not yet drawn by this sweep") for n in (
        "allclose", "as_tensor", "bmm", "cumprod", "cumsum", "diag", "div", "einsum", "flip", "from_numpy",
        "gather", "index_select", "is_tensor", "log_softmax", "masked_fill", "masked_fill_", "mm", "new_full",
        "new_ones", "new_tensor", "new_zeros", "norm", "normal_", "outer", "prod", "repeat", "roll", "round",
        "scatter", "scatter_add", "softmax", "sort", "topk", "tril", "triu", "unbind", "unflatten", "uniform_")},
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


_DUNDERS = {"add", "sub", "mul", "truediv", "pow", "neg", "lt", "le", "gt", "ge", "eq", "ne", "abs", "radd",
            "rsub", "rmul", "rtruediv", "and", "or", "xor", "invert", "floordiv", "mod", "matmul", "rpow"}
OPS = _public_ops()
SWEPT = [(k, n, fam) for k, n, fam in OPS if fam and n not in NOT_SWEPT]


def test_every_public_op_is_classified():
    unclassified = sorted({n for _, n, fam in OPS if fam is None and n not in NOT_SWEPT})
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
        out, ref = (out[0], ref[0]) if isinstance(ref, tuple) else (out, ref)
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
