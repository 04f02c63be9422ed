"""The shared test matrix: every normalizer in tinygrad_bn.norms.REGISTRY goes through all of
these, with no test code of its own:

- gradcheck and gradgradcheck in float64 (input and every parameter), in train and eval mode;
- NumPy vs device-backend (fakegpu, and cuda when present) parity of outputs and gradients;
- eval output of a sample independent of the other samples (where the spec promises it);
- state_dict round-trip into a fresh layer;
- repr (equal to PyTorch's where PyTorch has the layer);
- for layers PyTorch has: 10 training steps side by side (outputs, input and parameter gradients,
  running statistics), then eval, in float64 and float32;
- for layers it lacks: the same 10 steps and eval against the spec's `reference=`, a plain-NumPy
  forward written from the paper's equations (outputs and running statistics);
- running buffers move in a training step and stay put in eval;
- every Tensor attribute of the layer is a registered parameter or buffer;
- a float32 pass beside the float64 one (dtypes kept, values close);
- one training step at the smallest batch the layer takes (test option min_batch).

Every float parameter and buffer starts from random values, so nothing passes by accident.
"""
import copy

import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn.autograd import gradcheck, gradgradcheck
from tinygrad_bn.norms import REGISTRY
from tests.helpers import DEVICES_WITH_ACCELERATOR, assert_close, needs_torch, torch
from tests.helpers import HAVE_TORCH

SPECS = list(REGISTRY.values())
IDS = [s.name for s in SPECS]
TORCH_SPECS = [s for s in SPECS if s.torch_make is not None]
REFERENCE_SPECS = [s for s in SPECS if s.reference is not None]
CHANNELS = 4


def channels(spec):
    return spec.test_options.get("channels", CHANNELS)


def make_layer(spec, seed=0, dtype=tg.float64):
    """A layer with non-trivial parameters and running statistics, so nothing passes by accident."""
    tg.manual_seed(seed)
    layer = spec.make(channels(spec)).to(dtype)
    rng = np.random.default_rng(seed + 100)
    with tg.no_grad():
        for name, p in layer.named_parameters():
            p.data[...] = rng.uniform(0.5, 1.5, p.shape) * rng.choice([-1, 1], p.shape) \
                if spec.test_options.get("signed_params", True) else rng.uniform(0.5, 1.5, p.shape)
        for name, b in layer.named_buffers():
            if b is not None and b.dtype.kind == "f":
                b.data[...] = rng.uniform(0.5, 1.5, b.shape)
    return layer


def random_input(spec, seed=0, batch=None, dtype=np.float64):
    shape = list(spec.input_shape(channels(spec)))
    if batch is not None:
        shape[0] = batch
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 1.5 + 0.3).astype(dtype)


def functional(layer):
    """fn(x, *params) running `layer` with the given tensors in place of its parameters, and with
    its buffers restored before every call (gradcheck calls it hundreds of times)."""
    names = [name for name, _ in layer.named_parameters()]
    buffers = {name: b.data.copy() for name, b in layer.named_buffers() if b is not None}
    owners = []
    for name in names:
        module_path, _, leaf = name.rpartition(".")
        owners.append((layer.get_submodule(module_path) if module_path else layer, leaf))

    def fn(x, *params):
        for name, b in layer.named_buffers():
            if b is not None:
                b.data[...] = buffers[name]
        saved = [owner._parameters[leaf] for owner, leaf in owners]
        for (owner, leaf), p in zip(owners, params):
            owner._parameters[leaf] = p
        try:
            return layer(x)
        finally:
            for (owner, leaf), p in zip(owners, saved):
                owner._parameters[leaf] = p
    return fn, [p for _, p in layer.named_parameters()]


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_gradcheck_and_gradgradcheck(spec, mode, device):
    layer = make_layer(spec).to(device)
    layer.train(mode == "train")
    fn, params = functional(layer)
    x = tg.tensor(random_input(spec, batch=spec.test_options.get("gradcheck_batch")), device=device,
                  requires_grad=True)
    inputs = [x] + [tg.tensor(p.data.copy(), requires_grad=True) for p in params]
    tol = dict(spec.test_options.get("gradcheck_tol", {}))
    tol.setdefault("eps", spec.test_options.get("gradcheck_eps", 1e-6))
    assert gradcheck(fn, inputs, **tol)
    if spec.test_options.get("double_backward", True):
        assert gradgradcheck(fn, inputs, **tol)


@pytest.mark.parametrize("accelerator", DEVICES_WITH_ACCELERATOR)
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_numpy_vs_device_backend_parity(spec, mode, accelerator):
    outputs = {}
    for device in ("cpu", accelerator):
        layer = make_layer(spec).to(device)
        layer.train(mode == "train")
        x = tg.tensor(random_input(spec), device=device, requires_grad=True)
        y = layer(x)
        y.backward(tg.tensor(np.random.default_rng(5).standard_normal(y.shape), device=device))
        assert y.device == device
        outputs[device] = (y, x.grad, [p.grad for _, p in layer.named_parameters()],
                           [b for _, b in layer.named_buffers() if b is not None])
    (y0, gx0, gp0, b0), (y1, gx1, gp1, b1) = outputs["cpu"], outputs[accelerator]
    assert_close(y1, y0, atol=1e-10, what="output")
    assert_close(gx1, gx0, atol=1e-10, what="input gradient")
    for a, b in zip(gp1, gp0):
        assert_close(a, b, atol=1e-10, what="parameter gradient")
    for a, b in zip(b1, b0):
        assert_close(a, b, atol=1e-10, what="buffer after the step")


@pytest.mark.parametrize("spec", [s for s in SPECS if s.batch_independent_eval],
                         ids=[s.name for s in SPECS if s.batch_independent_eval])
def test_eval_output_is_independent_of_other_samples(spec):
    layer = make_layer(spec)
    for step in range(2):  # let running statistics move away from their initial values
        layer(tg.tensor(random_input(spec, seed=step)))
    layer.eval()
    x = random_input(spec, seed=9)
    full = layer(tg.tensor(x)).detach().numpy()
    alone = layer(tg.tensor(x[:1])).detach().numpy()
    changed = x.copy()
    changed[1:] = changed[1:] * 3 - 1
    with_others_changed = layer(tg.tensor(changed)).detach().numpy()
    assert_close(alone, full[:1], atol=1e-12, what="sample 0 alone vs in its batch")
    assert_close(with_others_changed[:1], full[:1], atol=1e-12, what="sample 0 with other samples changed")


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_state_dict_round_trip(spec):
    trained = make_layer(spec, seed=1)
    for step in range(3):
        y = trained(tg.tensor(random_input(spec, seed=step), requires_grad=True))
        y.sum().backward()
    fresh = make_layer(spec, seed=2)
    fresh.load_state_dict(trained.state_dict())
    assert list(fresh.state_dict()) == list(trained.state_dict())
    for (name, a), b in zip(trained.state_dict().items(), fresh.state_dict().values()):
        assert_close(b, a, atol=0, rtol=0, what=name)
    trained.eval(), fresh.eval()
    x = tg.tensor(random_input(spec, seed=7))
    assert_close(fresh(x), trained(x), atol=1e-12, what="eval output after loading")
    clone = copy.deepcopy(trained)
    assert_close(clone(x), trained(x), atol=1e-12, what="eval output of a deepcopy")


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_repr(spec):
    layer = spec.make(channels(spec))
    text = repr(layer)
    assert text.startswith(type(layer).__name__ + "("), text
    assert "object at 0x" not in text
    if spec.torch_make is not None and HAVE_TORCH:
        assert text == repr(spec.torch_make(torch, channels(spec)))


def _copy_into_torch(ours, theirs):
    their_state = theirs.state_dict()
    for name, value in ours.state_dict().items():
        their_state[name].copy_(torch.tensor(value.numpy()))


@needs_torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("spec", TORCH_SPECS, ids=[s.name for s in TORCH_SPECS])
def test_ten_training_steps_then_eval_match_pytorch(spec, dtype):
    ours = make_layer(spec, dtype=dtype)
    theirs = spec.torch_make(torch, channels(spec)).to(torch.float64 if dtype == np.float64 else torch.float32)
    _copy_into_torch(ours, theirs)
    tol = {"atol": 1e-10, "rtol": 1e-8} if dtype == np.float64 else {"atol": 2e-5, "rtol": 1e-4}
    rng = np.random.default_rng(3)
    for step in range(10):
        x_np = random_input(spec, seed=step, dtype=dtype)
        x, tx = tg.tensor(x_np, requires_grad=True), torch.tensor(x_np, requires_grad=True)
        y, ty = ours(x), theirs(tx)
        assert_close(y, ty, **tol, what=f"output at step {step}")
        g = rng.standard_normal(y.shape).astype(dtype)
        y.backward(tg.tensor(g))
        ty.backward(torch.tensor(g))
        assert_close(x.grad, tx.grad, **tol, what=f"input gradient at step {step}")
        for (name, p), tp in zip(ours.named_parameters(), theirs.parameters()):
            assert_close(p.grad, tp.grad, **tol, what=f"gradient of {name} at step {step}")
            p.grad, tp.grad = None, None
    for (name, b), tb in zip(ours.named_buffers(), theirs.buffers()):
        assert_close(b, tb, **tol, what=f"buffer {name} after 10 steps")
    ours.eval(), theirs.eval()
    x_np = random_input(spec, seed=99, dtype=dtype)
    assert_close(ours(tg.tensor(x_np)), theirs(torch.tensor(x_np)), **tol, what="eval output")


# ---- against the plain-NumPy reference (layers PyTorch lacks) ------------------------------------
def _arrays(named):
    return {name: backend_numpy(t) for name, t in named if t is not None}


def backend_numpy(t):
    return np.array(tg.backend.to_numpy(t.data), dtype=np.float64 if t.dtype.kind == "f" else t.dtype)


@pytest.mark.parametrize("spec", REFERENCE_SPECS, ids=[s.name for s in REFERENCE_SPECS])
def test_ten_training_steps_then_eval_match_the_reference(spec):
    layer = make_layer(spec)
    params = _arrays(layer.named_parameters())
    buffers = _arrays(layer.named_buffers())
    for step in range(10):
        x = random_input(spec, seed=step)
        y = layer(tg.tensor(x))
        ref_y, buffers = spec.reference(layer, x, params, buffers, True)
        assert_close(y, ref_y, atol=1e-10, rtol=1e-8, what=f"{spec.name}: output at step {step}")
        for name, b in layer.named_buffers():
            if b is not None:
                assert_close(b, np.asarray(buffers[name]), atol=1e-10, rtol=1e-8,
                             what=f"{spec.name}: buffer {name} after step {step}")
    layer.eval()
    x = random_input(spec, seed=99)
    ref_y, after = spec.reference(layer, x, params, buffers, False)
    assert_close(layer(tg.tensor(x)), ref_y, atol=1e-10, rtol=1e-8, what=f"{spec.name}: eval output")


# ---- running buffers, registration, float32, the smallest batch ----------------------------------
def check_running_buffers(spec):
    """Float buffers move in a training step (unless listed in test_options["still_buffers"]) and
    no buffer moves in eval."""
    layer = make_layer(spec)
    still = set(spec.test_options.get("still_buffers", ()))
    before = {name: backend_numpy(b) for name, b in layer.named_buffers() if b is not None}
    layer(tg.tensor(random_input(spec), requires_grad=True)).sum().backward()
    for name, b in layer.named_buffers():
        if b is None or b.dtype.kind != "f" or name in still:
            continue
        assert not np.array_equal(backend_numpy(b), before[name]), (
            f"{spec.name}: buffer '{name}' did not change in a training step. A running statistic "
            f"must be updated in place (running_mean *= 1 - m; running_mean += m * mean); "
            f"`running_mean = ...` rebinds a local name and the update is lost")
    layer.eval()
    before = {name: backend_numpy(b) for name, b in layer.named_buffers() if b is not None}
    layer(tg.tensor(random_input(spec, seed=4), requires_grad=True)).sum().backward()
    for name, b in layer.named_buffers():
        if b is not None:
            assert np.array_equal(backend_numpy(b), before[name]), (
                f"{spec.name}: buffer '{name}' changed in eval mode; running statistics may only "
                f"move in training (check self.training)")


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_running_buffers_move_in_training_and_stay_put_in_eval(spec):
    check_running_buffers(spec)


def check_tensors_are_registered(layer):
    """A Tensor kept as a plain attribute is not moved by .to(), not saved by state_dict()."""
    for path, module in [("", layer)] + list(layer.named_modules())[1:]:
        for attr, value in vars(module).items():
            if isinstance(value, tg.Tensor) and attr not in module._parameters \
                    and attr not in module._buffers:
                raise AssertionError(
                    f"{type(module).__name__}.{attr} is a Tensor but neither a parameter nor a "
                    f"buffer: .to(device) will not move it and state_dict() will not save it. Use "
                    f"self.register_buffer('{attr}', tensor) (or nn.Parameter for a trained one)")


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_every_tensor_attribute_is_registered(spec):
    check_tensors_are_registered(spec.make(channels(spec)))


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_float32_pass_beside_float64(spec):
    """One training step and one eval step in float32: dtypes stay float32 everywhere, and values
    agree with the float64 layer (the float32 tolerance, not the float64 one)."""
    tol = spec.test_options.get("float32_tol", {"atol": 2e-4, "rtol": 2e-3})
    results = {}
    for dtype in (np.float64, np.float32):
        layer = make_layer(spec, dtype=dtype)
        x = tg.tensor(random_input(spec, dtype=dtype), requires_grad=True)
        y = layer(x)
        g = np.random.default_rng(5).standard_normal(y.shape).astype(dtype)
        y.backward(tg.tensor(g))
        layer.eval()
        y_eval = layer(tg.tensor(random_input(spec, seed=9, dtype=dtype)))
        results[dtype] = (y, x.grad, y_eval, list(layer.named_parameters()),
                          [(n, b) for n, b in layer.named_buffers() if b is not None])
    y64, gx64, e64, p64, b64 = results[np.float64]
    y32, gx32, e32, p32, b32 = results[np.float32]
    for what, t in [("output", y32), ("input gradient", gx32), ("eval output", e32)] + \
            [(f"gradient of {n}", p.grad) for n, p in p32] + [(f"buffer {n}", b) for n, b in b32
                                                              if b.dtype.kind == "f"]:
        assert t.dtype == tg.float32, f"{spec.name}: float32 pass: {what} is {t.dtype}"
    assert_close(y32, y64, **tol, what=f"{spec.name}: float32 output")
    assert_close(gx32, gx64, **tol, what=f"{spec.name}: float32 input gradient")
    assert_close(e32, e64, **tol, what=f"{spec.name}: float32 eval output")
    for (name, p), (_, q) in zip(p32, p64):
        assert_close(p.grad, q.grad, **tol, what=f"{spec.name}: float32 gradient of {name}")
    for (name, b), (_, c) in zip(b32, b64):
        assert_close(b, c, **tol, what=f"{spec.name}: float32 buffer {name}")


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_one_training_step_at_the_smallest_batch(spec):
    batch = spec.test_options.get("min_batch", 2)
    layer = make_layer(spec)
    x = tg.tensor(random_input(spec, batch=batch), requires_grad=True)
    y = layer(x)
    y.backward(tg.tensor(np.random.default_rng(1).standard_normal(y.shape)))
    assert np.isfinite(y.detach().numpy()).all(), f"{spec.name}: non-finite output at batch {batch}"
    assert np.isfinite(x.grad.numpy()).all(), f"{spec.name}: non-finite input gradient at batch {batch}"


def test_every_advertised_test_option_is_read_here():
    import inspect
    import sys
    from tinygrad_bn.norms._base import TEST_OPTIONS
    source = inspect.getsource(sys.modules[__name__])
    for option in TEST_OPTIONS:
        assert f'test_options.get("{option}"' in source, f"test option {option!r} is advertised but not read"


def test_an_unknown_test_option_is_refused():
    from tinygrad_bn.norms import NormSpec
    from tinygrad_bn.norms.meanonly import reference
    with pytest.raises(TypeError, match=r"NormSpec 'X': unknown test option\(s\) 'min_batchs'; the "
                                        r"matrix reads channels, "):
        NormSpec(name="X", make=None, input_shape=None, reference=reference,
                 test_options={"min_batchs": 2})
