"""Numerical gradient checking: analytic Jacobians (from backward) against central differences.

    gradcheck(fn, inputs)      checks d fn / d inputs for every input that requires grad
    gradgradcheck(fn, inputs)  checks the gradient of the gradient (double backward)

Inputs must be float64. An entry passes when |analytic - numeric| <= atol + rtol * |numeric|.
A failure names the input, the output and the worst element.
"""
import numpy as np

from tinygrad_bn import backend


class GradcheckError(RuntimeError):
    pass


def _outputs_tuple(out):
    return out if isinstance(out, (tuple, list)) else (out,)


def _float_outputs(outs):
    return [o for o in outs if o.dtype.kind == "f"]


def _numeric_jacobian(fn, inputs, i, eps):
    """Columns d outputs / d inputs[i][j] by central differences: (f(x+eps) - f(x-eps)) / 2eps."""
    from tinygrad_bn.tensor import Tensor
    x = inputs[i]
    base = x.data.copy()
    columns = []
    # grad mode stays on: in gradgradcheck, fn itself differentiates
    for j in range(base.size):
        values = []
        for step in (eps, -eps):
            perturbed = base.copy()
            flat = perturbed.reshape(-1)
            flat[j] += step
            args = list(inputs)
            args[i] = Tensor._make(perturbed).requires_grad_(True)
            outs = _float_outputs(_outputs_tuple(fn(*args)))
            values.append(np.concatenate([backend.to_numpy(o.data).reshape(-1).astype(np.float64)
                                          for o in outs]) if outs else np.zeros(0))
        columns.append((values[0] - values[1]) / (2 * eps))
    return np.stack(columns, axis=1) if columns else np.zeros((0, 0))


def _analytic_jacobian(fn, inputs, checked):
    """Rows d outputs[k] / d inputs, one backward per output element (one-hot grad_outputs)."""
    from tinygrad_bn import autograd
    from tinygrad_bn.tensor import Tensor
    outs = _float_outputs(_outputs_tuple(fn(*inputs)))
    total = sum(o.data.size for o in outs)
    jac = {i: np.zeros((total, inputs[i].data.size)) for i in checked}
    row = 0
    for o in outs:
        xp = o.xp
        for k in range(o.data.size):
            if o.requires_grad:
                onehot = xp.zeros(o.data.size, dtype=o.dtype)
                onehot[k] = 1
                grads = autograd.grad([o], [inputs[i] for i in checked],
                                      [Tensor._make(onehot.reshape(o.data.shape))],
                                      retain_graph=True, allow_unused=True)
                for i, g in zip(checked, grads):
                    if g is not None:
                        jac[i][row] = backend.to_numpy(g.data).reshape(-1)
            row += 1
    return jac, [(o.shape, o.data.size) for o in outs]


def _locate(row, output_shapes):
    for n, (shape, size) in enumerate(output_shapes):
        if row < size:
            return n, tuple(int(v) for v in np.unravel_index(row, shape)) if shape else ()
        row -= size
    return None, ()


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True):
    """True when every analytic gradient of fn matches central differences; see module docstring."""
    from tinygrad_bn.tensor import Tensor
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    checked = []
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor) and x.requires_grad:
            if x.dtype != np.float64:
                raise GradcheckError(f"gradcheck: input {i} (shape {list(x.shape)}) is {x.dtype}; "
                                     f"gradcheck needs float64 inputs to be meaningful")
            checked.append(i)
    if not checked:
        raise GradcheckError("gradcheck: no input requires grad, nothing to check")
    analytic, output_shapes = _analytic_jacobian(fn, inputs, checked)
    for i in checked:
        numeric = _numeric_jacobian(fn, inputs, i, eps)
        a = analytic[i]
        if numeric.shape != a.shape:
            numeric = numeric.reshape(a.shape) if numeric.size == a.size else np.zeros_like(a)
        err = np.abs(a - numeric) - (atol + rtol * np.abs(numeric))
        bad = ~(err <= 0)
        if bad.any():
            if not raise_exception:
                return False
            worst = np.unravel_index(np.nanargmax(np.where(np.isnan(err), np.inf, err)), err.shape)
            out_n, out_idx = _locate(worst[0], output_shapes)
            in_idx = tuple(int(v) for v in np.unravel_index(worst[1], inputs[i].shape)) if inputs[i].shape else ()
            raise GradcheckError(
                f"gradcheck: Jacobian mismatch for output {out_n} with respect to input {i} "
                f"(shape {list(inputs[i].shape)}): {int(bad.sum())} of {bad.size} entries differ; "
                f"worst at output element {list(out_idx)}, input element {list(in_idx)}: "
                f"analytic {a[worst]:.8g} vs numerical {numeric[worst]:.8g} "
                f"(atol={atol}, rtol={rtol})")
    return True


def gradgradcheck(fn, inputs, grad_outputs=None, eps=1e-6, atol=1e-5, rtol=1e-3,
                  raise_exception=True, seed=0):
    """Check second derivatives: gradcheck of (inputs, v) -> grad(fn(inputs), inputs, v, create_graph)."""
    from tinygrad_bn import autograd
    from tinygrad_bn.tensor import Tensor
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    diff = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    outs = _float_outputs(_outputs_tuple(fn(*inputs)))
    if grad_outputs is None:
        rng = np.random.default_rng(seed)
        grad_outputs = []
        for o in outs:
            v = rng.standard_normal(o.shape)
            grad_outputs.append(Tensor(v, dtype=np.float64, device=o.device, requires_grad=True))
    grad_outputs = list(grad_outputs)
    n = len(inputs)

    def first_derivatives(*args):
        ins, vs = args[:n], args[n:]
        outputs = [o for o in _float_outputs(_outputs_tuple(fn(*ins)))]
        pairs = [(o, v) for o, v in zip(outputs, vs) if o.requires_grad]
        grads = autograd.grad([o for o, _ in pairs], [ins[i] for i in diff], [v for _, v in pairs],
                              create_graph=True, allow_unused=True)
        return tuple(g for g in grads if g is not None)

    return gradcheck(first_derivatives, tuple(inputs) + tuple(grad_outputs), eps=eps, atol=atol,
                     rtol=rtol, raise_exception=raise_exception)
