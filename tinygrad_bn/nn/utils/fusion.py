"""Fold an eval-mode BatchNorm into the convolution or Linear before it (inference only).

In eval, BN is a fixed per-channel affine map of the conv output y = W*x + b:

    BN(y) = (y - rm) * s + beta,     s = gamma / sqrt(rv + eps)   (gamma = 1, beta = 0 without affine)
          = (W * s) * x + ((b - rm) * s + beta)

so one conv with W' = W * s (s broadcast along the output-channel axis: axis 0 of a conv weight,
axis 1 of a transposed conv's (in, out/groups, ...) weight) and b' = (b - rm) * s + beta (b = 0
when the conv has no bias) computes both layers: one pass over the activations instead of two.

    fuse_conv_bn_eval(conv, bn, transpose=False)  ->  a deep copy of conv, with W' and b'
    fuse_linear_bn_eval(linear, bn)               ->  the same for Linear (weight (out, in))
    fuse_bn(model, example_input=None)            ->  a copy of a whole model, BNs folded away

These are PyTorch's torch.nn.utils.fusion functions (same checks, messages and dtype rules:
the result is cast back to the conv's dtypes; a missing conv bias becomes a bias Parameter with
requires_grad=False, as in PyTorch). One extension: a conv with a parametrized weight
(weight_norm, spectral_norm) is fused too, its weight first frozen to its current value.
"""
import copy

from tinygrad_bn import backend
from tinygrad_bn.autograd.grad_mode import enable_grad, no_grad
from tinygrad_bn.nn.containers import Sequential
from tinygrad_bn.nn.layers import Conv1d, Conv2d, Identity, Linear
from tinygrad_bn.nn.module import Module
from tinygrad_bn.nn.parameter import Parameter
from tinygrad_bn.nn.utils import parametrize
from tinygrad_bn.norms.batchnorm import BatchNorm1d, BatchNorm2d
from tinygrad_bn.tensor import Tensor

__all__ = ["fuse_conv_bn_eval", "fuse_conv_bn_weights", "fuse_linear_bn_eval",
           "fuse_linear_bn_weights", "fuse_bn"]


def _bn_arrays(bn_rm, bn_w, bn_b):
    xp = backend.xp_of(bn_rm.data)
    gamma = bn_w.data if bn_w is not None else xp.ones_like(bn_rm.data)
    beta = bn_b.data if bn_b is not None else xp.zeros_like(bn_rm.data)
    return xp, gamma, beta


def fuse_conv_bn_weights(conv_w, conv_b, bn_rm, bn_rv, bn_eps, bn_w, bn_b, transpose=False):
    """(W', b') as Parameters: W' = W * s (per output channel), b' = (b - rm) * s + beta,
    s = gamma / sqrt(rv + eps). transpose=True: the weight is (in, out/groups, ...)."""
    xp, gamma, beta = _bn_arrays(bn_rm, bn_w, bn_b)
    weight_dtype = conv_w.dtype
    bias_dtype = conv_b.dtype if conv_b is not None else weight_dtype
    bias = conv_b.data if conv_b is not None else xp.zeros_like(bn_rm.data)
    invstd = 1.0 / xp.sqrt(bn_rv.data + bn_eps)  # eps inside the square root, as BN uses it
    shape = ((1, -1) if transpose else (-1, 1)) + (1,) * (conv_w.ndim - 2)
    fused_w = (conv_w.data * (gamma * invstd).reshape(shape)).astype(weight_dtype)
    fused_b = ((bias - bn_rm.data) * invstd * gamma + beta).astype(bias_dtype)
    return (Parameter(Tensor._make(fused_w), conv_w.requires_grad),
            Parameter(Tensor._make(fused_b), conv_b.requires_grad if conv_b is not None else False))


def fuse_linear_bn_weights(linear_w, linear_b, bn_rm, bn_rv, bn_eps, bn_w, bn_b):
    """(W', b') as Parameters for a Linear (weight (out, in)) followed by BatchNorm1d(out)."""
    xp, gamma, beta = _bn_arrays(bn_rm, bn_w, bn_b)
    weight_dtype = linear_w.dtype
    bias_dtype = linear_b.dtype if linear_b is not None else weight_dtype
    bias = linear_b.data if linear_b is not None else xp.zeros_like(bn_rm.data)
    scale = gamma / xp.sqrt(bn_rv.data + bn_eps)
    fused_w = (linear_w.data * scale[:, None].astype(weight_dtype)).astype(weight_dtype)
    fused_b = ((bias - bn_rm.data) * scale + beta).astype(bias_dtype)
    return (Parameter(Tensor._make(fused_w), linear_w.requires_grad),
            Parameter(Tensor._make(fused_b), linear_b.requires_grad if linear_b is not None else False))


def _frozen_copy(module):
    """A deep copy with a plain weight Parameter (a parametrized weight is frozen to its value)."""
    fused = copy.deepcopy(module)
    if parametrize.is_parametrized(fused, "weight"):
        parametrize.remove_parametrizations(fused, "weight", leave_parametrized=True)
    return fused


def _check_bn(bn, what):
    if bn.running_mean is None or bn.running_var is None:
        raise AssertionError("bn.running_mean and bn.running_var must not be None")
    if bn.running_mean.shape[0] != what[1]:
        raise AssertionError(f"To fuse, {what[0]} == bn.num_features, got {what[0]}={what[1]} and "
                             f"bn.num_features={bn.running_mean.shape[0]}")


def fuse_conv_bn_eval(conv, bn, transpose=False):
    """A copy of `conv` computing bn(conv(x)) in one convolution. Both must be in eval mode."""
    if conv.training or bn.training:
        raise AssertionError("Fusion only for eval!")
    fused = _frozen_copy(conv)
    weight_shape = fused.weight.shape
    out_channels = weight_shape[1] * getattr(conv, "groups", 1) if transpose else weight_shape[0]
    _check_bn(bn, ("conv out_channels", out_channels))
    fused.weight, fused.bias = fuse_conv_bn_weights(fused.weight, fused.bias, bn.running_mean,
                                                    bn.running_var, bn.eps, bn.weight, bn.bias,
                                                    transpose)
    return fused


def fuse_linear_bn_eval(linear, bn):
    """A copy of `linear` computing bn(linear(x)) for (N, features) inputs. Both in eval mode."""
    if linear.training or bn.training:
        raise AssertionError("Fusion only for eval!")
    fused = _frozen_copy(linear)
    if linear.out_features != bn.num_features and bn.num_features != 1:
        raise AssertionError(f"To fuse, linear.out_features == bn.num_features or bn.num_features == 1, "
                             f"got linear.out_features={linear.out_features} and "
                             f"bn.num_features={bn.num_features}")
    if bn.running_mean is None or bn.running_var is None:
        raise AssertionError("bn.running_mean and bn.running_var must not be None")
    fused.weight, fused.bias = fuse_linear_bn_weights(fused.weight, fused.bias, bn.running_mean,
                                                      bn.running_var, bn.eps, bn.weight, bn.bias)
    return fused


# ---- whole models ------------------------------------------------------------------------------
#: which BN may follow which layer (the BN's channel axis 1 is the layer's output channels)
_PAIRS = ((Conv2d, BatchNorm2d), (Conv1d, BatchNorm1d), (Linear, BatchNorm1d))


def _fusable(layer, bn):
    if not any(isinstance(layer, a) and isinstance(bn, b) for a, b in _PAIRS):
        return False
    if bn.running_mean is None or bn.running_var is None:
        return False  # BN without running statistics normalizes with batch statistics even in eval
    channels = layer.out_features if isinstance(layer, Linear) else layer.out_channels
    return channels == bn.num_features


def _static_pairs(model):
    """(layer, bn) pairs known without running the model: consecutive children of a Sequential
    (conv -> BN only: for Linear -> BatchNorm1d the BN axis depends on the input rank), and the
    pairs a module declares in a `fuse_pairs` attribute, e.g. ("conv1", "bn1")."""
    pairs = []
    for _, module in model.named_modules():
        if isinstance(module, Sequential) and type(module).forward is Sequential.forward:
            children = list(module._modules.values())
            i = 0
            while i + 1 < len(children):
                a, b = children[i], children[i + 1]
                if not isinstance(a, Linear) and _fusable(a, b):
                    pairs.append((a, b))
                    i += 2
                else:
                    i += 1
        for layer_name, bn_name in getattr(module, "fuse_pairs", ()) or ():
            layer, bn = module._modules.get(layer_name), module._modules.get(bn_name)
            if layer is None or bn is None:
                raise ValueError(f"fuse_bn: {type(module).__name__}.fuse_pairs names "
                                 f"({layer_name!r}, {bn_name!r}), but it has no such children")
            if bn.running_mean is not None and bn.running_var is not None:
                if not _fusable(layer, bn):
                    raise ValueError(f"fuse_bn: {type(module).__name__}.fuse_pairs pairs a "
                                     f"{type(layer).__name__} with a {type(bn).__name__} that cannot "
                                     f"follow it (layer types or channel counts differ)")
                pairs.append((layer, bn))
    # a module registered under two names may run elsewhere without its BN: leave it alone
    registrations = {}
    for _, module in model.named_modules(remove_duplicate=False):
        registrations[id(module)] = registrations.get(id(module), 0) + 1
    return [(a, b) for a, b in pairs if registrations[id(a)] == 1 and registrations[id(b)] == 1]


def _traced_pairs(model, example_input):
    """(layer, bn) pairs found by running the model once: every call of the BN takes an output of
    the same layer, and every output of that layer goes to the BN and nowhere else (counted on
    the recorded graph, so a conv output that also feeds a skip connection is left alone)."""
    inputs = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    inputs = [Tensor._make(x.data).requires_grad_(True)
              if isinstance(x, Tensor) and x.dtype.kind == "f" else x for x in inputs]
    layer_outputs, bn_inputs, handles = {}, {}, []  # module -> [(node, index), ...]

    def record_output(module, args, output):
        layer_outputs.setdefault(module, []).append((output.grad_fn, output._output_index, output.ndim))

    def record_input(module, args):
        x = args[0]
        bn_inputs.setdefault(module, []).append((x.grad_fn, x._output_index))

    for module in model.modules():
        if isinstance(module, (Conv1d, Conv2d, Linear)):
            handles.append(module.register_forward_hook(record_output))
        elif isinstance(module, (BatchNorm1d, BatchNorm2d)):
            handles.append(module.register_forward_pre_hook(record_input))
    try:
        with enable_grad():
            outputs = model(*inputs)
    finally:
        for handle in handles:
            handle.remove()

    # how many times each (node, output index) is consumed: by later nodes or as a model output
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    uses, seen = {}, set()
    stack = []
    for out in outputs:
        if isinstance(out, Tensor) and out.grad_fn is not None:
            key = (out.grad_fn, out._output_index)
            uses[key] = uses.get(key, 0) + 1
            stack.append(out.grad_fn)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for edge in node.next_edges:
            if edge is not None and edge[0] is not None:
                uses[edge] = uses.get(edge, 0) + 1
                stack.append(edge[0])

    producer = {}  # (node, index) -> layer
    for layer, outs in layer_outputs.items():
        for node, index, _ in outs:
            producer[(node, index)] = layer
    pairs = []
    for bn, ins in bn_inputs.items():
        layers = {producer.get(key) for key in ins}
        if len(layers) != 1 or None in layers:
            continue
        layer = layers.pop()
        outs = layer_outputs[layer]
        only_to_bn = all(node is not None and uses.get((node, i)) == 1 for node, i, _ in outs)
        rank_ok = not isinstance(layer, Linear) or all(ndim == 2 for *_, ndim in outs)
        if len(outs) == len(ins) and only_to_bn and rank_ok and _fusable(layer, bn):
            pairs.append((layer, bn))
    return pairs


def fuse_bn(model, example_input=None):
    """A copy of an eval-mode model with every BatchNorm that directly follows a convolution (or
    Linear) folded into it, the BN replaced by Identity. The model itself is not changed.

    Which pairs are folded:
    - without example_input: conv -> BN children next to each other in a Sequential, and the
      pairs a module lists in a `fuse_pairs` attribute (child names, e.g. a ResNet block's
      `fuse_pairs = (("conv1", "bn1"), ("conv2", "bn2"))`: its forward is code we cannot read);
      a module registered under two names is skipped (it may also run without its BN);
    - with example_input (a Tensor or a tuple of them): the model is run once on it and the pairs
      are read off the recorded graph: a BN is folded into the layer whose output it takes when
      that output goes nowhere else (this finds ResNet-block pairs, and skips a pre-activation
      block's bn1, which normalizes the block's input, not a conv output). Linear -> BatchNorm1d
      pairs are only folded this way, where the (N, features) input rank can be checked.
    BNs without running statistics (they use batch statistics in eval) are never folded."""
    if not isinstance(model, Module):
        raise TypeError(f"fuse_bn: expected a Module, got {type(model).__name__}")
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if training:
        raise AssertionError(f"Fusion only for eval! fuse_bn: call model.eval() first; modules in "
                             f"training mode: {', '.join(training[:5])}"
                             f"{' ...' if len(training) > 5 else ''}")
    fused = copy.deepcopy(model)
    if example_input is not None:
        pairs = _traced_pairs(fused, example_input)
    else:
        pairs = _static_pairs(fused)
    if not pairs:
        return fused
    replacement = {}
    with no_grad():
        for layer, bn in pairs:
            if isinstance(layer, Linear):
                replacement[id(layer)] = fuse_linear_bn_eval(layer, bn)
            else:
                replacement[id(layer)] = fuse_conv_bn_eval(layer, bn)
            replacement[id(bn)] = Identity()
    # every place a fused module is registered (a module may be registered under several names)
    for _, parent in list(fused.named_modules(remove_duplicate=False)):
        for child_name, child in list(parent._modules.items()):
            if child is not None and id(child) in replacement:
                setattr(parent, child_name, replacement[id(child)])
    return fused
