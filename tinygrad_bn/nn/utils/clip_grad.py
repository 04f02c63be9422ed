"""Gradient clipping (torch.nn.utils.clip_grad_norm_ / clip_grad_value_), in place on `.grad`.

    total = || ( ||g_1||_p, ..., ||g_k||_p ) ||_p     (the p-norm of all gradients as one vector)
    g_i  *= min(1, max_norm / (total + 1e-6))          (always applied, as in PyTorch)
    g_i   = clamp(g_i, -clip_value, clip_value)
"""
import math

from tinygrad_bn import backend, dtypes
from tinygrad_bn.autograd.grad_mode import no_grad
from tinygrad_bn.tensor import Tensor


def _grads(parameters, name):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    parameters = list(parameters)
    for i, p in enumerate(parameters):
        if not isinstance(p, Tensor):
            raise TypeError(f"{name}: expected parameters to be Tensors, got {type(p).__name__} at position {i}")
    return [p.grad for p in parameters if p.grad is not None]


def _vector_norm(xp, a, p):
    """||a||_p of a flat array: p = inf the max |a|, -inf the min |a|, 0 the number of nonzeros."""
    a = xp.abs(a.reshape(-1))
    if abs(p) == math.inf and a.size == 0:
        raise RuntimeError(f"clip_grad_norm_: cannot compute the {p} norm of an empty gradient, because the "
                           f"operation does not have an identity")
    if p == math.inf:
        norm = a.max()
    elif p == -math.inf:
        norm = a.min()
    elif p == 0:
        norm = (a != 0).sum()
    else:
        norm = (a ** p).sum() ** (1.0 / p)
    return xp.asarray(norm, dtype=a.dtype)  # a 0-d array, never a NumPy scalar


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Scale the gradients of `parameters` in place so that their joint `norm_type`-norm is at most
    `max_norm`; return that norm (before clipping) as a 0-d Tensor, as PyTorch does."""
    grads = _grads(parameters, "clip_grad_norm_")
    max_norm, norm_type = float(max_norm), float(norm_type)
    if not grads:
        return Tensor(0.0)
    devices = {g.device for g in grads}
    if len(devices) > 1:
        raise RuntimeError(f"clip_grad_norm_: expected all gradients on one device, got {sorted(devices)}")
    if not all(dtypes.is_floating(g.dtype) for g in grads):
        raise RuntimeError("clip_grad_norm_: expected floating-point gradients, got "
                           f"{sorted({str(g.dtype) for g in grads})}")
    xp = grads[0].xp
    dtype = grads[0].dtype
    for g in grads[1:]:
        dtype = xp.result_type(dtype, g.dtype)
    norms = xp.stack([_vector_norm(xp, g.data, norm_type).astype(dtype) for g in grads])
    total = _vector_norm(xp, norms, norm_type)
    total_host = float(backend.to_numpy(total))
    if error_if_nonfinite and not math.isfinite(total_host):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} for gradients from "
                           f"`parameters` is non-finite ({total_host}), so it cannot be clipped. To disable "
                           f"this error and scale the gradients by the non-finite norm anyway, set "
                           f"`error_if_nonfinite=False`")
    coef = xp.asarray(xp.minimum(max_norm / (total + 1e-6), 1.0))
    with no_grad():  # the in-place ops bump each gradient's version counter
        for g in grads:
            g.mul_(Tensor(coef.astype(g.dtype)))
    return Tensor(total)


def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamp every gradient of `parameters` in place to [-clip_value, clip_value]."""
    clip_value = float(clip_value)
    with no_grad():
        for g in _grads(parameters, "clip_grad_value_"):
            g.clamp_(-clip_value, clip_value)
