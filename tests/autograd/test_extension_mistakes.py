"""The mistakes students make when extending the framework (issue 19's table), one test each: the
framework raises where the mistake is made, naming the Function and the argument or saved name,
or it gives the correct result. docs/extending.md ("Common mistakes and what you will see") quotes
these messages; tests/test_docs.py checks that the page and the framework agree.
"""
import re
import warnings

import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn.autograd import Function, engine
from tinygrad_bn.autograd.gradcheck import GradcheckError
from tinygrad_bn.nn import Module
from tinygrad_bn.nn.parameter import Parameter


# ---- self.saved(...) of something forward did not save --------------------------------------------
class ForgotToSave(Function):
    def forward(self, x, w):
        self.save_for_backward(x=x)          # w is missing
        return x * w

    def backward(self, g):
        x, w = self.saved("x", "w")
        return g * w, g * x


class SavedNothing(Function):
    def forward(self, x, w):
        return x * w

    def backward(self, g):
        x, w = self.saved("x", "w")
        return g * w, g * x


@pytest.mark.parametrize("cls, message", [
    (ForgotToSave, "ForgotToSave.backward: 'w' was not saved for backward (forward saved 'x'). "
                   "Call self.save_for_backward(w=...) in forward."),
    (SavedNothing, "SavedNothing.backward: 'x', 'w' were not saved for backward (forward saved "
                   "nothing). Call self.save_for_backward(x=..., w=...) in forward.")])
def test_saved_name_that_was_never_saved(cls, message):
    x, w = tg.randn(3, requires_grad=True), tg.randn(3, requires_grad=True)
    y = cls.apply(x, w).sum()
    with pytest.raises(RuntimeError, match=re.escape(message)):
        y.backward()


# ---- backward returns None for an input that needs a gradient ------------------------------------
class ForgotAGradient(Function):
    def forward(self, x, w):
        self.save_for_backward(x=x, w=w)
        return x * w

    def backward(self, g):
        x, w = self.saved("x", "w")
        return g * w, None                   # the gradient of w is missing


def test_none_gradient_for_an_input_that_requires_grad_warns():
    x, w = tg.randn(3, requires_grad=True), tg.randn(3, requires_grad=True)
    with pytest.warns(UserWarning, match=r"function ForgotAGradientBackward returned None as the "
                                         r"gradient of input 1 \('w'\), which requires grad"):
        ForgotAGradient.apply(x, w).sum().backward()
    assert w.grad is None and x.grad is not None


def test_none_gradient_autograd_grad_says_what_happened():
    """It used to say "input 0 was not used in the graph", which is false."""
    x, w = tg.randn(3, requires_grad=True), tg.randn(3, requires_grad=True)
    loss = ForgotAGradient.apply(x, w).sum()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match=r"autograd\.grad: input 0 \(shape \[3\]\) got no gradient: "
                                               r"it is used in the graph, but ForgotAGradient\.backward "
                                               r"returned None as the gradient of its input 1 \('w'\)"):
            tg.autograd.grad(loss, [w])


def test_none_gradient_for_an_input_without_grad_is_silent():
    x, w = tg.randn(3, requires_grad=True), tg.randn(3)   # w needs no gradient: None is right
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ForgotAGradient.apply(x, w).sum().backward()


def test_under_anomaly_mode_none_gradient_raises(monkeypatch):
    monkeypatch.setattr(engine, "anomaly_mode_enabled", lambda: True)
    x, w = tg.randn(3, requires_grad=True), tg.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"ForgotAGradientBackward returned None as the gradient "
                                           r"of input 1 \('w'\)"):
        ForgotAGradient.apply(x, w).sum().backward()


# ---- backward returns float64 gradients in a float32 graph ---------------------------------------
class Float64Gradient(Function):
    def forward(self, x):
        self.save_for_backward(x=x)
        return x * 2

    def backward(self, g):
        return tg.Tensor._make(np.full(g.shape, 2.0))   # float64, whatever the graph's dtype


def test_gradient_of_another_dtype_is_cast_to_the_input_dtype():
    x = tg.randn(3, requires_grad=True)
    Float64Gradient.apply(x).sum().backward()
    assert x.grad.dtype == tg.float32
    np.testing.assert_array_equal(x.grad.numpy(), np.full(3, 2, np.float32))
    opt = tg.optim.SGD([x], lr=0.1)
    opt.step()
    assert x.dtype == tg.float32 and x.grad.dtype == tg.float32


def test_gradient_of_another_dtype_under_create_graph_stays_differentiable():
    x = tg.randn(3, requires_grad=True)
    (gx,) = tg.autograd.grad((tg.exp(x)).sum(), [x], create_graph=True)
    assert gx.dtype == tg.float32 and gx.requires_grad


def test_under_anomaly_mode_a_dtype_mismatch_raises(monkeypatch):
    monkeypatch.setattr(engine, "anomaly_mode_enabled", lambda: True)
    x = tg.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"function Float64GradientBackward returned an invalid "
                                           r"gradient at index 0 \('x'\) - expected dtype float32 "
                                           r"but got float64"):
        Float64Gradient.apply(x).sum().backward()


class ReturnsAnArray(Function):
    def forward(self, x):
        return x * 2

    def backward(self, g):
        return g.data * 2                    # a raw array, not a Tensor


def test_backward_returning_a_raw_array():
    x = tg.randn(3, requires_grad=True)
    with pytest.raises(TypeError, match=r"function ReturnsAnArrayBackward returned a ndarray as the "
                                        r"gradient of input 0 \('x'\); backward must return Tensors"):
        ReturnsAnArray.apply(x).sum().backward()


# ---- forward writes into its own input -------------------------------------------------------------
class HalveInPlace(Function):
    def forward(self, x):
        x *= 0.5
        return x

    def backward(self, g):
        return g * 0.5


class HalveBySetitem(Function):
    def forward(self, x):
        x[...] = x * 0.5
        return x

    def backward(self, g):
        return g * 0.5


@pytest.mark.parametrize("cls, line", [(HalveInPlace, "x *= 0.5"), (HalveBySetitem, "x[...] = x * 0.5")])
def test_forward_writing_into_its_input(cls, line, device):
    x = tg.tensor([1.0, 2.0], device=device, requires_grad=True)
    with pytest.raises(RuntimeError, match=rf"{cls.__name__}\.forward wrote into its input 'x' in "
                                           rf"place \(line \d+: `{re.escape(line)}`\)"):
        cls.apply(x)
    np.testing.assert_array_equal(x.detach().cpu().numpy(), [1.0, 2.0])  # the caller's tensor is intact
    with tg.no_grad(), pytest.raises(RuntimeError, match=rf"{cls.__name__}\.forward wrote into"):
        cls.apply(x)


class ViewOfInput(Function):
    def forward(self, x):
        return x.reshape(-1)                 # a view of the input: fine, and writable afterwards

    def backward(self, g):
        return g.reshape(self.input_meta[0][0])


def test_an_output_that_is_a_view_of_the_input_is_writable(device):
    x = tg.randn(2, 2, device=device, requires_grad=True)
    y = ViewOfInput.apply(x)
    with tg.no_grad():
        y.data[0] = 5.0                      # in-place on the output, as an op like add_ would do
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.cpu().numpy(), np.ones((2, 2)))


def test_builtin_ops_never_write_into_their_inputs(monkeypatch, device):
    """The package's own Functions skip the read-only views (two per call, on the fast path); this
    runs every op of the op table and every normalizer of the registry with them on instead."""
    from tests.helpers import random_arrays
    from tests.ops.op_table import ALL
    from tinygrad_bn.norms import REGISTRY
    monkeypatch.setattr(Function, "_read_only_inputs", True)
    for name, ours, _, shapes, opts in ALL:
        arrays = random_arrays(shapes, low=opts.get("low"), high=opts.get("high"))
        inputs = [tg.tensor(a, device=device, requires_grad=True) for a in arrays]
        out = ours(*inputs)
        for o in out if isinstance(out, (tuple, list)) else (out,):
            if o.requires_grad:
                o.sum().backward(create_graph=True)
    for spec in REGISTRY.values():
        layer = spec.make(spec.test_options.get("channels", 4)).to(tg.float64).to(device)
        x = tg.tensor(np.random.default_rng(0).standard_normal(spec.input_shape(
            spec.test_options.get("channels", 4))), device=device, requires_grad=True)
        for training in (True, False):
            layer.train(training)
            layer(x).sum().backward()


# ---- a view of a running buffer saved for an eval backward, then a training step -----------------
class ScaleByRunningVar(Function):
    """y = x / sqrt(rv) with rv a running buffer (an attribute, updated in place in training)."""

    def forward(self, x, running_var, training):
        if training:
            running_var *= 0.5
            running_var += 0.5 * x.var(axis=0)
        # the mistake: in eval, a view of the buffer itself is saved, not its values
        self.save_for_backward(rv=running_var.reshape(1, -1))
        return x / np.sqrt(running_var)

    def backward(self, g):
        rv = self.saved_array("rv")
        return g / tg.Tensor._make(np.sqrt(rv))


def test_saved_view_of_a_running_buffer_keeps_its_values():
    running_var = np.array([4.0, 1.0, 0.25])
    x = tg.tensor(np.ones((2, 3)), requires_grad=True)
    y = ScaleByRunningVar.apply(x, running_var=running_var, training=False)   # eval: saves the buffer
    other = tg.tensor(np.random.default_rng(0).standard_normal((8, 3)), requires_grad=True)
    ScaleByRunningVar.apply(other, running_var=running_var, training=True)   # a training step
    assert not np.allclose(running_var, [4.0, 1.0, 0.25])                     # the buffer moved
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.tile([0.5, 1.0, 2.0], (2, 1)))  # the eval-time values


# ---- a non-tensor argument passed positionally ------------------------------------------------------
class Scale(Function):
    def forward(self, x, factor):
        return x * factor

    def backward(self, g):
        return g * self.attrs["factor"]


def test_non_tensor_argument_passed_positionally():
    x = tg.randn(3, requires_grad=True)
    with pytest.raises(TypeError, match=r"Scale\.apply: argument 1 \('factor'\) is a float, not a "
                                        r"Tensor\. Tensors are passed positionally; pass other values "
                                        r"by keyword, Scale\.apply\(\.\.\., factor=2\.0\)"):
        Scale.apply(x, 2.0)
    np.testing.assert_allclose(Scale.apply(x, factor=2.0).detach().numpy(), x.detach().numpy() * 2)


def test_numpy_array_passed_as_a_tensor_input():
    with pytest.raises(TypeError, match=r"Scale\.apply: argument 0 \('x'\) is a numpy\.ndarray, not a Tensor"):
        Scale.apply(np.ones(3), factor=2.0)


# ---- a buffer kept as a plain attribute instead of register_buffer -----------------------------------
class ShiftFunction(Function):
    def forward(self, x, running_mean):
        return x - running_mean

    def backward(self, g):
        return g


class PlainAttributeBuffer(Module):
    def __init__(self, c):
        super().__init__()
        self.running_mean = tg.zeros(c)     # should be self.register_buffer("running_mean", ...)

    def forward(self, x):
        return ShiftFunction.apply(x, running_mean=self.running_mean.data)


def test_plain_attribute_buffer_on_another_device():
    layer = PlainAttributeBuffer(3).to("fakegpu")
    with pytest.raises(RuntimeError, match=r"ShiftFunction: attribute 'running_mean' is on cpu but the "
                                           r"inputs are on fakegpu\. A Tensor kept as a plain Module "
                                           r"attribute is not moved by Module\.to\(\): register it with "
                                           r"self\.register_buffer\('running_mean', \.\.\.\)"):
        layer(tg.randn(2, 3, device="fakegpu"))


def test_plain_attribute_tensor_passed_as_an_input_on_another_device():
    with pytest.raises(RuntimeError, match=r"Mul: expected all tensors to be on the same device.*"
                                           r"register it with register_buffer"):
        tg.randn(3, device="fakegpu") * tg.randn(3)


# ---- the matrix's and the registry's rows live beside them, and are checked from here too ----------
def test_matrix_catches_running_statistics_that_never_move():
    from tests.norms.test_matrix import check_running_buffers
    from tinygrad_bn.norms.meanonly import MeanOnlyBatchNorm2d, MeanOnlyBatchNormFunction

    class Rebinding(MeanOnlyBatchNormFunction):
        def forward(self, x, bias, running_mean, training, momentum):
            axes = (0,) + tuple(range(2, x.ndim))
            mean = x.mean(axis=axes) if training else running_mean
            if training:
                running_mean = (1 - momentum) * running_mean + momentum * mean   # rebinding: lost
            shape = (1, -1) + (1,) * (x.ndim - 2)
            return x - mean.reshape(shape) + bias.reshape(shape)

    class Broken(MeanOnlyBatchNorm2d):
        def forward(self, x):
            return Rebinding.apply(x, self.bias, running_mean=self.running_mean.data,
                                   training=self.training, momentum=self.momentum)

    from tinygrad_bn.norms import NormSpec
    from tinygrad_bn.norms.meanonly import reference
    spec = NormSpec(name="Broken", make=Broken, input_shape=lambda c: (3, c, 2, 2), reference=reference)
    with pytest.raises(AssertionError, match=r"Broken: buffer 'running_mean' did not change in a "
                                             r"training step"):
        check_running_buffers(spec)
    ok = NormSpec(name="MeanOnly", make=MeanOnlyBatchNorm2d, input_shape=lambda c: (3, c, 2, 2),
                  reference=reference)
    check_running_buffers(ok)


def test_matrix_catches_a_buffer_kept_as_a_plain_attribute():
    from tests.norms.test_matrix import check_tensors_are_registered
    with pytest.raises(AssertionError, match=r"PlainAttributeBuffer\.running_mean is a Tensor but "
                                             r"neither a parameter nor a buffer"):
        check_tensors_are_registered(PlainAttributeBuffer(3))


class SoftplusKinkedBackward(Function):
    """softplus(x) = log(1 + e^x), whose backward sigmoid(x) is written from abs and sign:
    sigmoid(x) = (1 + sign(x) (1 - t) / (1 + t)) / 2 with t = e^-|x|. Right everywhere, also at 0;
    but its own derivative at exactly 0 is 0 (sign and abs have zero slope there), not 1/4."""

    def forward(self, x):
        self.save_for_backward(x=x)
        return np.logaddexp(0, x)

    def backward(self, g):
        x = self.saved("x")
        t = (-tg.abs(x)).exp()
        return g * (1 + tg.sign(x) * (1 - t) / (1 + t)) / 2


def test_op_table_special_values_catch_a_kinked_backward():
    """Random inputs never hit 0; the op table's special values (0, +-1, large) do."""
    from tests.ops.test_op_table import check_special_values
    entry = ("softplus_student", lambda a: SoftplusKinkedBackward.apply(a),
             lambda a: __import__("torch").nn.functional.softplus(a), [(2, 3)], {})
    with pytest.raises(GradcheckError, match="second"):
        check_special_values(entry, "cpu", oracle=False)


# ---- registering a normalizer under an existing name -------------------------------------------------
def test_duplicate_and_case_variant_names_name_both_files():
    """A broken file's import, and the registry built from a real package directory, are tested in
    tests/norms/test_registry.py; here the message a student sees."""
    from tinygrad_bn.norms import NormalizerRegistryError, NormSpec, Registry
    from tinygrad_bn.norms.meanonly import reference
    registry = Registry()
    for where, name in (("tinygrad_bn/norms/batchnorm.py", "BatchNorm2d"),
                        ("tinygrad_bn/norms/mybatchnorm.py", "BatchNorm2d"),
                        ("tinygrad_bn/norms/switchnorm.py", "batchnorm2d")):
        registry.add(NormSpec(name=name, make=None, input_shape=None, reference=reference), where)
    with pytest.raises(NormalizerRegistryError) as info:
        registry["BatchNorm2d"]
    message = str(info.value)
    assert "'BatchNorm2d' is registered twice: in tinygrad_bn/norms/batchnorm.py and in " \
           "tinygrad_bn/norms/mybatchnorm.py" in message
    assert "'batchnorm2d' (in tinygrad_bn/norms/switchnorm.py) differs from 'BatchNorm2d' (in " \
           "tinygrad_bn/norms/batchnorm.py) only in case" in message


# ---- the messages, as docs/extending.md quotes them ("Common mistakes and what you will see") -------
def _raised(fn, error=Exception):
    try:
        fn()
    except error as e:
        return str(e)
    raise AssertionError("no error was raised")


def _warned(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return str(caught[0].message)


def _not_saved():
    x, w = tg.randn(3, requires_grad=True), tg.randn(3, requires_grad=True)
    return _raised(lambda: ForgotToSave.apply(x, w).sum().backward())


def _none_gradient():
    x, w = tg.randn(3, requires_grad=True), tg.randn(3, requires_grad=True)
    return _warned(lambda: ForgotAGradient.apply(x, w).sum().backward())


def _none_gradient_grad():
    x, w = tg.randn(3, requires_grad=True), tg.randn(3, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _raised(lambda: tg.autograd.grad(ForgotAGradient.apply(x, w).sum(), [w]))


def _wrote_into_input():
    return _raised(lambda: HalveInPlace.apply(tg.tensor([1.0, 2.0], requires_grad=True)))


def _positional_attribute():
    return _raised(lambda: Scale.apply(tg.randn(3, requires_grad=True), 2.0))


def _plain_attribute_buffer():
    layer = PlainAttributeBuffer(3).to("fakegpu")
    return _raised(lambda: layer(tg.randn(2, 3, device="fakegpu")))


def _plain_attribute_in_matrix():
    from tests.norms.test_matrix import check_tensors_are_registered
    return _raised(lambda: check_tensors_are_registered(PlainAttributeBuffer(3)), AssertionError)


def _duplicate_name():
    from tinygrad_bn.norms import Registry, NormSpec
    from tinygrad_bn.norms.meanonly import reference
    registry = Registry()
    for where, name in (("tinygrad_bn/norms/batchnorm.py", "BatchNorm2d"),
                        ("tinygrad_bn/norms/mybatchnorm.py", "BatchNorm2d"),
                        ("tinygrad_bn/norms/switchnorm.py", "batchnorm2d")):
        registry.add(NormSpec(name=name, make=None, input_shape=None, reference=reference), where)
    return _raised(lambda: registry["BatchNorm2d"])


def _never_updated():
    from tests.norms.test_matrix import check_running_buffers
    from tinygrad_bn.norms import NormSpec
    from tinygrad_bn.norms.meanonly import MeanOnlyBatchNorm2d, reference

    class Frozen(MeanOnlyBatchNorm2d):
        def forward(self, x):
            saved = self.running_mean.data.copy()
            try:
                return super().forward(x)
            finally:
                self.running_mean.data[...] = saved
    spec = NormSpec(name="MeanOnlyBatchNorm2d", make=Frozen, input_shape=lambda c: (3, c, 2, 2),
                    reference=reference)
    return _raised(lambda: check_running_buffers(spec), AssertionError).split("\nassert")[0]


def _kinked_backward():
    from tests.ops.test_op_table import check_special_values
    entry = ("softplus", lambda a: SoftplusKinkedBackward.apply(a), None, [(2, 3)], {})
    return _raised(lambda: check_special_values(entry, "cpu", oracle=False), GradcheckError)


def _dtype_under_anomaly():
    x = tg.randn(3, requires_grad=True)
    original = engine.anomaly_mode_enabled
    engine.anomaly_mode_enabled = lambda: True
    try:
        return _raised(lambda: Float64Gradient.apply(x).sum().backward())
    finally:
        engine.anomaly_mode_enabled = original


MESSAGES = {
    "not-saved": _not_saved,
    "none-gradient": _none_gradient,
    "none-gradient-grad": _none_gradient_grad,
    "dtype-anomaly": _dtype_under_anomaly,
    "wrote-into-input": _wrote_into_input,
    "positional-attribute": _positional_attribute,
    "duplicate-name": _duplicate_name,
    "never-updated": _never_updated,
    "plain-attribute": _plain_attribute_buffer,
    "plain-attribute-matrix": _plain_attribute_in_matrix,
    "kinked-backward": _kinked_backward,
}


if __name__ == "__main__":
    for key, produce in MESSAGES.items():
        print(f"<!-- message: {key} -->\n```text\n{produce()}\n```\n")
