"""Test helpers: PyTorch parity in the style of tinygrad's helper_test_op, and gradient checks.

    check_torch(our_fn, torch_fn, [shape_a, shape_b], device=device)
        runs both on the same random inputs, compares the forward output and every input's
        gradient for the same random output gradient.
    check_grads(fn, [shape_a, shape_b], device=device)
        gradcheck and gradgradcheck in float64.
"""
import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn import backend
from tinygrad_bn.autograd import gradcheck, gradgradcheck

NO_ORACLE = "PyTorch (the 'oracle' extra) is not installed"


class MissingOracle:
    """What `torch` is in the tests when PyTorch is not installed.

    The oracle is optional, and the README promises that without it every parity test skips
    with a reason while the rest still runs. Rather than trusting every test file to check,
    the check lives here, once: any real use of this stand-in (a call, an index, iteration, a
    comparison of values) skips the test that made it. Attribute access only builds another
    stand-in, so module-level aliases such as `F = torch.nn.functional` still import.
    `bool(torch)` is False, so `if HAVE_TORCH:` (or `if torch:`) keeps an optional
    comparison optional instead of skipping the whole test.
    """

    def __init__(self, path="torch"):
        self._path = path

    def __getattr__(self, name):
        if name.startswith("__"):  # dunder lookups (copy, pickle, inspect) must not fake support
            raise AttributeError(name)
        return MissingOracle(f"{self._path}.{name}")

    def _skip(self, *args, **kwargs):
        pytest.skip(f"{NO_ORACLE}: the test uses {self._path}")

    __call__ = __getitem__ = __iter__ = __len__ = __eq__ = __lt__ = __le__ = __gt__ = __ge__ = _skip
    __hash__ = object.__hash__

    def __bool__(self):
        return False

    def __mro_entries__(self, bases):  # `class Net(torch.nn.Module)` imports; using it skips
        return (_MissingOracleBase,)

    def __repr__(self):
        return f"<{self._path}: {NO_ORACLE}>"


class _MissingOracleBase:
    def __init__(self, *args, **kwargs):
        pytest.skip(f"{NO_ORACLE}: the test subclasses a PyTorch class")


try:
    import torch
    torch.set_num_threads(1)
    HAVE_TORCH = True
except ImportError:  # PyTorch is an optional oracle; tests that use it skip with a reason
    torch = MissingOracle()
    HAVE_TORCH = False

needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason=NO_ORACLE)


def to_numpy(t):
    """A host copy of a tinygrad_bn Tensor, torch tensor or array."""
    if isinstance(t, tg.Tensor):
        return backend.to_numpy(t.data)
    if HAVE_TORCH and isinstance(t, torch.Tensor):
        return t.detach().cpu().numpy()
    return np.asarray(t)


def assert_close(ours, ref, atol=1e-6, rtol=1e-5, what="value"):
    a, b = to_numpy(ours), to_numpy(ref)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != reference {b.shape}"
    np.testing.assert_allclose(a, b, atol=atol, rtol=rtol, err_msg=what)


def random_arrays(shapes, seed=0, low=None, high=None, dtype=np.float64):
    rng = np.random.default_rng(seed)
    out = []
    for s in shapes:
        if isinstance(s, np.ndarray):
            out.append(s)
        elif low is not None:
            out.append(rng.uniform(low, high, size=s).astype(dtype))
        else:
            out.append(rng.standard_normal(s).astype(dtype))
    return out


def check_torch(our_fn, torch_fn, shapes, device="cpu", dtype=np.float64, atol=1e-6, rtol=1e-5,
                grad=True, seed=0, low=None, high=None, arrays=None):
    """Forward and all input gradients of our_fn against torch_fn on the same random inputs."""
    if not HAVE_TORCH:
        pytest.skip(NO_ORACLE)
    arrays = arrays if arrays is not None else random_arrays(shapes, seed, low, high, dtype)
    ours = [tg.tensor(a, device=device, requires_grad=grad and a.dtype.kind == "f") for a in arrays]
    theirs = [torch.tensor(a, requires_grad=grad and a.dtype.kind == "f") for a in arrays]
    out, ref = our_fn(*ours), torch_fn(*theirs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    refs = ref if isinstance(ref, (tuple, list)) else (ref,)
    for i, (o, r) in enumerate(zip(outs, refs)):
        assert_close(o, r, atol, rtol, what=f"forward output {i}")
        assert o.device == device, f"output {i} is on {o.device}, expected {device}"
    if not grad:
        return
    rng = np.random.default_rng(seed + 1)
    diff = [(o, r) for o, r in zip(outs, refs) if r.requires_grad]
    gs = [rng.standard_normal(r.shape).astype(dtype) for _, r in diff]
    tg.autograd.backward([o for o, _ in diff], [tg.tensor(g, device=device) for g in gs])
    torch.autograd.backward([r for _, r in diff], [torch.tensor(g) for g in gs])
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if b.grad is None:
            continue
        assert a.grad is not None, f"input {i} got no gradient"
        assert_close(a.grad, b.grad, atol, rtol, what=f"gradient of input {i}")


def check_grads(fn, shapes, device="cpu", seed=0, low=None, high=None, arrays=None,
                double=True, atol=1e-5, rtol=1e-3, requires_grad=None):
    """gradcheck and gradgradcheck of fn in float64 on random inputs of the given shapes."""
    arrays = arrays if arrays is not None else random_arrays(shapes, seed, low, high)
    flags = requires_grad or [a.dtype.kind == "f" for a in arrays]
    inputs = [tg.tensor(a, device=device, requires_grad=f) for a, f in zip(arrays, flags)]
    assert gradcheck(fn, inputs, atol=atol, rtol=rtol)
    if double:
        assert gradgradcheck(fn, inputs, atol=atol, rtol=rtol)


#: the non-CPU backends a parity test compares against NumPy: the CI stand-in, and a real GPU
DEVICES_WITH_ACCELERATOR = ["fakegpu"] + (["cuda"] if tg.cuda.is_available() else [])
