"""Reverse-mode automatic differentiation: Function (a graph node), grad mode, the graph walk,
and numerical gradient checking."""
from tinygrad_bn.autograd.function import Function
from tinygrad_bn.autograd.grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from tinygrad_bn.autograd.grad_mode import inference_mode


def _as_list(x):
    return [x] if not isinstance(x, (list, tuple)) else list(x)


def _root_grads(outputs, grad_outputs, opname):
    from tinygrad_bn.tensor import Tensor
    grads = []
    for i, (out, g) in enumerate(zip(outputs, grad_outputs)):
        if not isinstance(out, Tensor):
            raise TypeError(f"{opname}: output {i} is not a Tensor but {type(out).__name__}")
        if not out.requires_grad:
            raise RuntimeError(f"{opname}: element {i} of tensors does not require grad and does not "
                               f"have a grad_fn")
        if g is None:
            if out.data.size != 1:
                raise RuntimeError(f"{opname}: grad can be implicitly created only for scalar "
                                   f"outputs, but output {i} has shape {list(out.shape)}; pass a "
                                   f"gradient of that shape")
            g = Tensor._make(out.xp.ones(out.data.shape, dtype=out.dtype))
        elif not isinstance(g, Tensor):
            g = Tensor(g, dtype=out.dtype, device=out.device)
        if tuple(g.shape) != tuple(out.shape):
            raise RuntimeError(f"{opname}: Mismatch in shape: grad_output[{i}] has a shape of "
                               f"{list(g.shape)} and output[{i}] has a shape of {list(out.shape)}.")
        if g.device != out.device:
            raise RuntimeError(f"{opname}: grad_output[{i}] is on {g.device} but output[{i}] is on "
                               f"{out.device}")
        grads.append(g)
    return grads


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None):
    """Accumulate the gradients of `tensors` into the `.grad` of every leaf that requires grad."""
    from tinygrad_bn.autograd.engine import run_backward
    tensors = _as_list(tensors)
    grad_tensors = _as_list(grad_tensors) if grad_tensors is not None else [None] * len(tensors)
    if retain_graph is None:
        retain_graph = create_graph
    roots = _root_grads(tensors, grad_tensors, "backward")
    if inputs is not None:  # only these leaves: compute with grad(), then accumulate
        inputs = _as_list(inputs)
        grads = run_backward(tensors, roots, retain_graph, create_graph, inputs=inputs, allow_unused=True)
        for t, g in zip(inputs, grads):
            if g is not None:
                t.grad = g if t.grad is None else t.grad + g
        return
    run_backward(tensors, roots, retain_graph, create_graph)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False):
    """Return d(outputs)/d(inputs) (weighted by grad_outputs) without touching any `.grad`.

    With create_graph=True the returned gradients are themselves differentiable."""
    from tinygrad_bn.autograd.engine import run_backward
    outputs, inputs = _as_list(outputs), _as_list(inputs)
    grad_outputs = _as_list(grad_outputs) if grad_outputs is not None else [None] * len(outputs)
    if len(grad_outputs) != len(outputs):
        raise RuntimeError(f"grad: grad_outputs has {len(grad_outputs)} entries for {len(outputs)} outputs")
    for i, t in enumerate(inputs):
        if not t.requires_grad:
            raise RuntimeError(f"grad: input {i} (shape {list(t.shape)}, dtype {t.dtype}) does not "
                               f"require grad")
    if retain_graph is None:
        retain_graph = create_graph
    roots = _root_grads(outputs, grad_outputs, "grad")
    return run_backward(outputs, roots, retain_graph, create_graph, inputs=inputs,
                        allow_unused=allow_unused)


from tinygrad_bn.autograd.gradcheck import gradcheck, gradgradcheck  # noqa: E402
from tinygrad_bn.autograd.engine import (detect_anomaly, is_anomaly_enabled,  # noqa: E402
                                         set_detect_anomaly)

__all__ = ["Function", "backward", "grad", "no_grad", "enable_grad", "set_grad_enabled",
           "is_grad_enabled", "gradcheck", "gradgradcheck", "detect_anomaly", "set_detect_anomaly",
           "is_anomaly_enabled", "inference_mode"]
