"""Parameters as one flat vector and back (torch.nn.utils.parameters_to_vector /
vector_to_parameters): the layout is each parameter flattened in order, concatenated."""
from tinygrad_bn.autograd.grad_mode import no_grad
from tinygrad_bn.ops.shape import cat
from tinygrad_bn.tensor import Tensor


def _parameter_list(parameters, name):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    parameters = list(parameters)
    for i, p in enumerate(parameters):
        if not isinstance(p, Tensor):
            raise TypeError(f"{name}: expected parameters to be Tensors, got {type(p).__name__} at position {i}")
    devices = [p.device for p in parameters]
    if len(set(devices)) > 1:
        raise TypeError(f"{name}: found two parameters on different devices, this is currently not supported "
                        f"(got {devices[0]} and {next(d for d in devices if d != devices[0])})")
    return parameters


def parameters_to_vector(parameters):
    """vec = cat(p_1.reshape(-1), ..., p_k.reshape(-1)): differentiable, like any cat."""
    parameters = _parameter_list(parameters, "parameters_to_vector")
    if not parameters:
        raise ValueError("parameters_to_vector: expected a non-empty list of parameters")
    return cat([p.reshape(-1) for p in parameters])


def vector_to_parameters(vec, parameters):
    """p_i.data = vec[offset_i : offset_i + p_i.numel()] reshaped to p_i's shape (a copy, vec's dtype)."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"vector_to_parameters: expected vec to be a Tensor, but got: {type(vec).__name__}")
    parameters = _parameter_list(parameters, "vector_to_parameters")
    if vec.ndim != 1:
        raise RuntimeError(f"vector_to_parameters: expected a 1-D vec, got shape {list(vec.shape)}")
    total = sum(p.numel() for p in parameters)
    if vec.numel() < total:  # a longer vec is accepted, as in PyTorch: its tail is unused
        raise RuntimeError(f"vector_to_parameters: vec has {vec.numel()} elements, but the parameters hold "
                           f"{total}")
    if parameters and vec.device != parameters[0].device:
        raise TypeError(f"vector_to_parameters: vec is on {vec.device} but the parameters are on "
                        f"{parameters[0].device}")
    offset = 0
    with no_grad():
        for p in parameters:
            n = p.numel()
            p.data = vec.data[offset:offset + n].reshape(p.shape).copy()
            p._version[0] += 1  # a saved copy of the old value must fail its version check
            offset += n
