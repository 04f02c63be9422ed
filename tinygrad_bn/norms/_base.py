"""What every normalizer file provides to the rest of the project: a NormSpec per layer, and the
small checks and running-statistics rules that several normalizers share.

A NormSpec tells the shared test matrix (tests/norms/test_matrix.py) and the examples' `--norm`
flag how to build and exercise a layer:

    SPECS = [NormSpec(
        name="BatchNorm2d",
        make=lambda C: BatchNorm2d(C),                 # a layer for inputs shaped input_shape(C)
        input_shape=lambda C: (4, C, 3, 3),
        make_for_conv=lambda C, hw: BatchNorm2d(C),    # a layer for (N, C, hw, hw) feature maps
        torch_make=lambda torch, C: torch.nn.BatchNorm2d(C),  # None when PyTorch lacks the layer
        batch_independent_eval=True,                   # eval output of a sample ignores the others
    )]

`tinygrad_bn.norms.REGISTRY` collects the SPECS of every file in this package.
"""
import dataclasses
import functools
from typing import Any, Callable, Optional

from tinygrad_bn import backend, dtypes
from tinygrad_bn.autograd.grad_mode import no_grad
from tinygrad_bn.creation import ones, zeros
from tinygrad_bn.nn.parameter import Parameter
from tinygrad_bn.tensor import Tensor


#: the test_options the matrix reads (see NormSpec.test_options); any other key is a typo
TEST_OPTIONS = ("channels", "gradcheck_batch", "gradcheck_tol", "gradcheck_eps", "double_backward",
                "signed_params", "min_batch", "still_buffers", "float32_tol")


@dataclasses.dataclass
class NormSpec:
    name: str
    make: Callable[[int], Any]
    input_shape: Callable[[int], tuple]
    make_for_conv: Optional[Callable[[int, int], Any]] = None
    torch_make: Optional[Callable[[Any, int], Any]] = None
    batch_independent_eval: bool = True
    #: keyword options for the test matrix (tests/norms/test_matrix.py reads each of these):
    #:   channels (4), gradcheck_batch (input_shape's), gradcheck_tol ({}), gradcheck_eps (1e-6),
    #:   double_backward (True), signed_params (True), min_batch (2: the matrix trains one step at
    #:   that batch size), still_buffers ((): float buffers that legitimately stay put in training),
    #:   float32_tol ({"atol": 2e-4, "rtol": 2e-3}: the float32 pass against the float64 one)
    test_options: dict = dataclasses.field(default_factory=dict)
    description: str = ""
    #: the layer's forward in plain NumPy, written from the paper's equations; required where
    #: torch_make is None. reference(layer, x, params, buffers, training) -> (y, buffers_after):
    #: x and the values of params / buffers (named_parameters / named_buffers names) are float64
    #: arrays; `layer` supplies the hyperparameters (eps, momentum, ...). The matrix compares ten
    #: training steps and an eval step, outputs and running statistics, against it.
    reference: Optional[Callable] = None

    def __post_init__(self):
        unknown = sorted(set(self.test_options) - set(TEST_OPTIONS))
        if unknown:
            raise TypeError(f"NormSpec {self.name!r}: unknown test option(s) {', '.join(map(repr, unknown))}; "
                            f"the matrix reads {', '.join(TEST_OPTIONS)}")
        if self.torch_make is None and self.reference is None:
            raise TypeError(f"NormSpec {self.name!r}: a layer without a PyTorch twin (torch_make=None) "
                            f"needs reference=, its forward in plain NumPy written from the paper's "
                            f"equations, so that the test matrix can check its output and running "
                            f"statistics")


def reference_batch_norm_train(x, eps):
    """Plain-NumPy batch statistics per channel: (x_hat, mean, biased var, values per channel)."""
    axes, shape = (0,) + tuple(range(2, x.ndim)), (1, -1) + (1,) * (x.ndim - 2)
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    x_hat = (x - mean.reshape(shape)) / (var.reshape(shape) + eps) ** 0.5
    return x_hat, mean, var, x.size // x.shape[1]


def reference_affine(layer, x_hat, params):
    """w * x_hat + b per channel (each left out when the layer has none)."""
    shape = (1, -1) + (1,) * (x_hat.ndim - 2)
    if params.get("weight") is not None:
        x_hat = x_hat * params["weight"].reshape(shape)
    if params.get("bias") is not None:
        x_hat = x_hat + params["bias"].reshape(shape)
    return x_hat


def reference_ema(buffers, mean, var, count, momentum):
    """One BatchNorm update of copied buffers: num_batches_tracked += 1, then the EMA (factor
    momentum, or 1/num_batches_tracked for None) with the unbiased variance."""
    buffers["num_batches_tracked"] = buffers["num_batches_tracked"] + 1
    f = momentum if momentum is not None else 1.0 / float(buffers["num_batches_tracked"])
    buffers["running_mean"] = (1 - f) * buffers["running_mean"] + f * mean
    buffers["running_var"] = (1 - f) * buffers["running_var"] + f * var * count / max(count - 1, 1)


def register_affine(module, shape, affine=True, bias=True, device=None, dtype=None):
    """module.weight = 1 and module.bias = 0, both of `shape`, as Parameters; bias=False leaves
    out the bias and affine=False both (registered as None, so state_dict keys follow PyTorch)."""
    if affine:
        module.weight = Parameter(ones(shape, device=device, dtype=dtype))
        if bias:
            module.bias = Parameter(zeros(shape, device=device, dtype=dtype))
        else:
            module.register_parameter("bias", None)
    else:
        module.register_parameter("weight", None)
        module.register_parameter("bias", None)


def reset_affine(module):
    """Back to weight = 1, bias = 0 (where present), in place."""
    with no_grad():
        if getattr(module, "weight", None) is not None:
            module.weight.fill_(1)
        if getattr(module, "bias", None) is not None:
            module.bias.zero_()


def tensor_attribute(module, name):
    """module.<name>, which must be a tensor (parameter, buffer or parametrized): the weight that
    weight_norm or spectral_norm is asked to reparametrize. PyTorch's ValueError otherwise."""
    value = getattr(module, name, None)
    if not isinstance(value, Tensor):
        raise ValueError(f"Module '{module}' has no parameter or buffer with name '{name}'")
    return value


def remove_reparametrization_hook(module, name, hook_class, api):
    """Undo an old-API reparametrization (weight_norm, spectral_norm): find the module's forward
    pre-hook of `hook_class` for `name`, let it restore the plain Parameter, and drop it."""
    for key, hook in module._forward_pre_hooks.items():
        if isinstance(hook, hook_class) and hook.name == name:
            hook.remove(module)
            del module._forward_pre_hooks[key]
            return module
    raise ValueError(f"{api} of '{name}' not found in {module}")


def format_float(value):
    """A float the way PyTorch's C++ messages print it (0, 1e-05, -0.1)."""
    return f"{value:g}"


def torch_size(shape):
    """An input size in messages, as a tuple: `(1, 3)` (PyTorch prints `torch.Size([1, 3])`;
    our messages name no other framework)."""
    return str(tuple(int(n) for n in shape))


def check_channel_count(layer, channels, input, channel_dim=1):
    """A wrong channel count is the caller's mistake: name the layer (as `BatchNorm2d(4)`), the
    count it expects and the input's shape, before any kernel's more technical message."""
    if input.ndim > channel_dim and input.shape[channel_dim] != channels:
        raise RuntimeError(f"{layer}: expected input with {channels} channels (dim {channel_dim}), got "
                           f"input of shape {list(input.shape)}")


def check_more_than_one_value(shape, channel_axis=1, what="per channel", who="batch_norm"):
    """BatchNorm's check: batch statistics need more than one value per channel (M > 1)."""
    count = 1
    for i, n in enumerate(shape):
        if i != channel_axis:
            count *= n
    if count == 1:
        raise ValueError(f"{who}: Expected more than 1 value {what} when training, got input size "
                         f"{torch_size(shape)}")


def update_running_stats(running_mean, running_var, batch_mean, batch_var, count, factor):
    """In place, outside the graph: rm = (1-f) rm + f mean,  rv = (1-f) rv + f var * M/(M-1).

    batch_var is the biased variance over `count` values; the stored one is unbiased."""
    unbiased = batch_var * (count / (count - 1)) if count > 1 else batch_var
    for buffer, batch in ((running_mean, batch_mean), (running_var, unbiased)):
        if buffer is None:
            continue
        data = buffer.data
        data *= (1 - factor)
        data += factor * batch.reshape(data.shape).astype(data.dtype, copy=False)
        buffer._version[0] += 1


def stats_as_constants(running_mean, running_var, eps, stat_shape, dtype):
    """(mean, invstd) arrays from running buffers, copied and shaped for the kernel."""
    xp = backend.xp_of(running_var.data)
    mean = running_mean.data.astype(dtype).reshape(stat_shape)
    invstd = (1.0 / xp.sqrt(running_var.data.astype(dtype) + eps)).reshape(stat_shape)
    return mean, invstd


def check_batch_norm_args(opname, input, running_mean, running_var, weight, bias, training, eps):
    """F.batch_norm's argument checks (same messages), for the BatchNorm-family layers here."""
    if input.ndim < 2:
        raise ValueError(f"{opname}: expected at least 2D input (got {input.ndim}D input)")
    channels = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if t is not None and t.numel() != channels:
            raise RuntimeError(f"{opname}: {name} should contain {channels} elements not {t.numel()} "
                               f"(expected an input with {t.numel()} channels in dim 1, got input of "
                               f"shape {tuple(input.shape)})")
    if training and eps <= 0:
        raise ValueError(f"batch_norm eps must be positive during training, but got {format_float(eps)}")
    if not training and eps < 0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {format_float(eps)}")
    if not dtypes.is_floating(input.dtype):
        raise TypeError(f"{opname}: expected a floating-point input, got {input.dtype}")


def restores_count_on_error(forward):
    """For a BatchNorm-type layer's forward: a batch that fails its input checks (or whose
    normalization raises) is not counted, so num_batches_tracked is put back as it was.
    (PyTorch counts before F.batch_norm checks the input; counting a refused batch skews the
    momentum=None average and any schedule of the step.)"""
    @functools.wraps(forward)
    def counted_once(self, *args, **kwargs):
        counter = getattr(self, "num_batches_tracked", None)
        saved = None if counter is None else counter.data.copy()
        try:
            return forward(self, *args, **kwargs)
        except BaseException:
            if saved is not None and not bool((counter.data == saved).all()):
                counter.data[...] = saved
                counter._version[0] += 1
            raise
    return counted_once
