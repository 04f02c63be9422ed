"""The shared kernel of the mean/variance normalizers (BatchNorm, LayerNorm, GroupNorm,
InstanceNorm) and of the RMS-type ones (RMSNorm), as one fused graph node.

Every one of them is the same computation on a different *grouping* of the input:

    view x as `group_shape` (e.g. BN: (N, C, H*W) -> statistics over axes (0, 2))
    mu      = mean(x, axes)                   (0 when center=False: RMS norms)
    var     = mean((x - mu)^2, axes)          (biased)
    invstd  = 1 / sqrt(var + eps)
    x_hat   = (x - mu) * invstd
    y       = x_hat * w + b                   (w, b broadcast as `param_shape`)

Backward (shared by all four, checked against PyTorch), with g_hat = dy * w and means over `axes`:

    dx = invstd * (g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat))    (center=True)
    dx = invstd * (g_hat - x_hat * mean(g_hat * x_hat))                   (center=False)
    dw = sum(dy * x_hat) over every axis but the parameter's,   db = sum(dy)

With fixed statistics (BatchNorm eval, running buffers) mu and invstd are constants and
dx = dy * w * invstd.

Memory: forward saves x (the one full-size array) and the per-group mu and invstd; backward
recomputes x_hat from them in the same pass that uses it.

Double backward: the fused backward is its own node (`NormalizeBackward`). Its backward is the
vector-Jacobian product of `composed_backward`, the same formulas written with primitive Tensor
ops. That composed version is also the test oracle for the fused one.
"""
from tinygrad_bn.autograd.function import Function
from tinygrad_bn.autograd.grad_mode import enable_grad, is_grad_enabled
from tinygrad_bn.norms._kernels import (aligned_backward, aligned_forward, is_aligned, rows_backward,
                                       rows_forward)
from tinygrad_bn.ops._helpers import sum_to_shape
from tinygrad_bn.tensor import Tensor


def _stats(xp, xg, axes, center, eps):
    """Per-group mean (or None) and 1/sqrt(var + eps) of the grouped view, in x's dtype."""
    if center:
        mean = xg.mean(axis=axes, keepdims=True)
        centred = xg - mean
        var = (centred * centred).mean(axis=axes, keepdims=True)
    else:
        mean = None
        var = (xg * xg).mean(axis=axes, keepdims=True)
    invstd = 1.0 / xp.sqrt(var + eps)
    return mean, var, invstd.astype(xg.dtype, copy=False)


class Normalize(Function):
    """y = (x - mu) * invstd * w + b over a grouping of x; see the module docstring.

    Inputs: x, and optionally w and b (Tensors, shape broadcastable as `param_shape`).
    `param_group_shape`: the parameters' shape in the grouped view (BN: (1, C, 1); LN: (1, D);
    GN on (N, G, C/G, HW): (1, G, C/G, 1)). It selects a blocked kernel of norms/_kernels.py:
    "per group" when the parameters are constant along the spatial axis (BN, IN, GN), "rows" for
    the (rows, D) view of LN and RMSNorm (see _fast_kernel).
    With `mean`/`invstd` given (arrays shaped like the statistics) they are used as constants
    (BatchNorm eval); otherwise they are computed from x.
    Outputs: y, and - not differentiable, for running-statistics updates - the batch mean and
    biased variance in the grouped view with kept dims (empty arrays when the statistics were
    given, or the mean when center=False)."""

    def forward(self, x, *params, group_shape, axes, param_shape, eps, center=True, has_weight=True,
                has_bias=True, mean=None, invstd=None, node_name=None, param_group_shape=None,
                **shown_attrs):
        # shown_attrs (momentum, training, ...) are only recorded in self.attrs for graph drawings
        xp = self.xp
        xg = x.reshape(group_shape)
        batch_mean = batch_var = xp.empty(0, dtype=x.dtype)
        weight = params[0] if has_weight else None
        bias = params[-1] if has_bias else None
        kernel = _fast_kernel(group_shape, axes, center, param_group_shape, fixed=invstd is not None)
        if kernel is not None:
            if kernel == "per-group":  # BN, IN, GN: w and b constant along the spatial axis
                y, mean, invstd, var = aligned_forward(xp, xg, weight, bias, param_group_shape,
                                                       axes, eps, mean, invstd)
            else:                      # LN, RMSNorm on (rows, D): w and b vary along D
                y, mean, invstd, var = rows_forward(xp, xg, weight, bias, center, eps)
            if var is not None:
                batch_var = var
                batch_mean = mean if mean is not None else batch_mean
            self.save_for_backward(x=x, mean=mean, invstd=invstd, **({"weight": weight} if weight is not None else {}))
            self.mark_non_differentiable(batch_mean, batch_var)
            return y.reshape(x.shape), batch_mean, batch_var
        if invstd is None:
            mean, batch_var, invstd = _stats(xp, xg, axes, center, eps)
            batch_mean = mean if mean is not None else batch_mean
        # y = (x - mu) * invstd, then the affine, in place on one new buffer
        y = xg - mean if mean is not None else xg.copy()
        y *= invstd
        y = y.reshape(x.shape)
        if weight is not None:
            y *= weight.reshape(param_shape)
        if bias is not None:
            y += bias.reshape(param_shape)
        self.save_for_backward(x=x, mean=mean, invstd=invstd, **({"weight": weight} if weight is not None else {}))
        self.mark_non_differentiable(batch_mean, batch_var)
        return y, batch_mean, batch_var

    @property
    def name(self):
        return self.attrs.get("node_name") or "NormalizeBackward"

    def backward(self, dy, _d_mean, _d_var):
        x = self.saved("x")
        weight = self.saved("weight") if self.attrs["has_weight"] else None
        mean, invstd = self.saved_array("mean"), self.saved_array("invstd")
        fixed_stats = self.attrs["invstd"] is not None
        inputs = [dy, x] + ([weight] if weight is not None else [])
        grads = NormalizeBackward.apply(*inputs, mean=mean, invstd=invstd, fixed_stats=fixed_stats,
                                        **_geometry(self.attrs))
        return gradients_per_input(self, grads)


def _fast_kernel(group_shape, axes, center, param_group_shape, fixed):
    """Which blocked kernel of norms/_kernels.py computes this normalization, if any:
    "per-group" (BN, IN, GN), "rows" (LN, RMSNorm with batch statistics), or None (the general
    array expressions here)."""
    if param_group_shape is None:
        return None
    if is_aligned(param_group_shape, axes, center, len(group_shape)):
        return "per-group"
    if len(group_shape) == 2 and tuple(axes) == (1,) and param_group_shape[0] == 1 and not fixed:
        return "rows"
    return None


def _geometry(attrs):
    return {k: attrs.get(k) for k in ("group_shape", "axes", "param_shape", "eps", "center",
                                      "has_weight", "has_bias", "param_group_shape")}


class NormalizeBackward(Function):
    """(dx, dw, db) of Normalize as one fused array expression; see the module docstring.

    Inputs: dy, x and (if affine) w. Its own backward is the VJP of `composed_backward`."""

    node_name = "NormalizeBackwardBackward"

    def forward(self, dy, x, *maybe_weight, mean, invstd, fixed_stats, group_shape, axes,
                param_shape, eps, center, has_weight, has_bias, param_group_shape=None):
        weight = maybe_weight[0] if has_weight else None
        self.save_for_backward(dy=dy, x=x, **({"weight": weight} if weight is not None else {}))
        kernel = _fast_kernel(group_shape, axes, center, param_group_shape, fixed_stats)
        if kernel is not None:  # the blocked kernels of norms/_kernels.py, on the grouped view
            dyg, xg = dy.reshape(group_shape), x.reshape(group_shape)
            if kernel == "per-group":
                dx, dw, db = aligned_backward(self.xp, dyg, xg, weight, mean, invstd, fixed_stats,
                                              param_group_shape, axes)
            else:
                dx, dw, db = rows_backward(self.xp, dyg, xg, weight, mean, invstd, center, has_bias)
            grads = [dx.reshape(x.shape)] + ([dw.reshape(weight.shape)] if has_weight else [])
            if has_bias:  # db in the composed version's shape, which double backward relies on
                grads.append(db.reshape(_param_size_shape(param_shape, x.ndim)))
            return tuple(grads)
        xg = x.reshape(group_shape)
        x_hat = (xg - mean if mean is not None else xg) * invstd          # grouped view
        g_hat = dy * weight.reshape(param_shape) if weight is not None else dy
        g_hat = g_hat.reshape(group_shape)
        if fixed_stats:
            dx = g_hat * invstd
        else:
            projection = (g_hat * x_hat).mean(axis=axes, keepdims=True)
            dx = g_hat - x_hat * projection                                # new buffer
            if center:
                dx -= g_hat.mean(axis=axes, keepdims=True)
            dx *= invstd
        dx = dx.reshape(x.shape)
        grads = [dx]
        if has_weight or has_bias:
            reduce_axes = tuple(i for i, n in enumerate(_full_param_shape(param_shape, x.ndim)) if n == 1)
        if has_weight:
            grads.append((dy * x_hat.reshape(x.shape)).sum(axis=reduce_axes).reshape(weight.shape))
        if has_bias:
            grads.append(dy.sum(axis=reduce_axes).reshape(_param_size_shape(param_shape, x.ndim)))
        return tuple(grads)

    def backward(self, *gg):
        """VJP of the composed (primitive-op) backward: second derivatives to any order."""
        fixed = self.attrs["fixed_stats"]
        return vjp_of_composed(self, composed_backward, gg,
                               mean=self.attrs["mean"] if fixed else None,
                               invstd=self.attrs["invstd"] if fixed else None,
                               **{k: self.attrs[k] for k in ("group_shape", "axes", "param_shape",
                                                             "eps", "center", "has_bias")})


def vjp_of_composed(node, composed, grad_outputs, **attrs):
    """The backward of a fused-backward node: the vector-Jacobian product of
    `composed(dy, x[, weight], **attrs)` - the same formulas in primitive Tensor ops - at the
    node's saved dy, x and weight. With grad mode on (create_graph) the result is differentiable
    again, so derivatives of any order work.

    Fresh nodes stand in front of the inputs, so the VJP is a partial derivative in each argument
    and stops there, even when dy itself depends on x."""
    from tinygrad_bn.autograd import grad
    dy, x = node.saved("dy", "x")
    weight = node.saved("weight") if node.attrs["has_weight"] else None
    create_graph = is_grad_enabled()
    with enable_grad():
        args = [_fresh(t) for t in ([dy, x] + ([weight] if weight is not None else []))]
        outs = composed(*args, **attrs)
        pairs = [(o, g) for o, g in zip(outs, grad_outputs)
                 if o is not None and g is not None and o.requires_grad]
        return grad([o for o, _ in pairs], args, [g for _, g in pairs],
                    create_graph=create_graph, allow_unused=True)


def gradients_per_input(node, grads):
    """One gradient per input (x, [w], [b]) of a normalizer node, from its fused backward's
    (dx, [dw], [db]): None where that input needs none, each in its input's own shape (a bias
    may be (C,) or (1, C, 1, 1))."""
    out = []
    for g, needed, (shape, _) in zip(grads, node.needs_input_grad, node.input_meta):
        if not needed or g is None:
            out.append(None)
        else:
            out.append(g if tuple(g.shape) == tuple(shape) else g.reshape(shape))
    return tuple(out)


def _fresh(t):
    """A new node (or leaf) standing for t: gradients stop at it."""
    if t.requires_grad:
        return _Alias.apply(t)
    return t.detach().requires_grad_(True)


class _Alias(Function):
    """y = x (no copy). A graph node that marks where a partial derivative stops."""

    def forward(self, x):
        return x

    def backward(self, g):
        return g


def _full_param_shape(param_shape, ndim):
    return tuple(param_shape) if len(param_shape) == ndim else (1,) * (ndim - len(param_shape)) + tuple(param_shape)


def _param_size_shape(param_shape, ndim):
    """The parameter's own shape: param_shape without the leading broadcast ones (C for BN, LN's
    normalized_shape)."""
    full = _full_param_shape(param_shape, ndim)
    first = next((i for i, n in enumerate(full) if n != 1), len(full))
    last = max((i for i, n in enumerate(full) if n != 1), default=first - 1)
    return full[first:last + 1] if first <= last else ()


def composed_backward(dy, x, weight=None, *, group_shape, axes, param_shape, eps, center=True,
                      has_bias=True, mean=None, invstd=None):
    """(dx, dw, db) of Normalize written with primitive Tensor ops (differentiable to any order).

    This is the reference the fused NormalizeBackward is tested against."""
    xg = x.reshape(group_shape)
    if invstd is None:
        mu = xg.mean(axes, keepdim=True) if center else None
        centred = xg - mu if center else xg
        inv = ((centred * centred).mean(axes, keepdim=True) + eps).rsqrt()
        fixed = False
    else:
        mu = Tensor._make(mean) if mean is not None else None
        centred = xg - mu if mu is not None else xg
        inv = Tensor._make(invstd)
        fixed = True
    x_hat = centred * inv
    g_hat = (dy * weight.reshape(param_shape) if weight is not None else dy).reshape(group_shape)
    if fixed:
        dx = g_hat * inv
    else:
        dx = g_hat - x_hat * (g_hat * x_hat).mean(axes, keepdim=True)
        if center:
            dx = dx - g_hat.mean(axes, keepdim=True)
        dx = dx * inv
    dx = dx.reshape(x.shape)
    full = _full_param_shape(param_shape, x.ndim)
    dw = sum_to_shape(dy * x_hat.reshape(x.shape), full).reshape(weight.shape) if weight is not None else None
    db = sum_to_shape(dy, full).reshape(_param_size_shape(param_shape, x.ndim)) if has_bias else None
    return dx, dw, db


def normalize(x, weight=None, bias=None, *, group_shape, axes, param_shape, eps, center=True,
              mean=None, invstd=None, node_name=None, param_group_shape=None, **shown_attrs):
    """Apply Normalize. Returns (y, batch_mean, batch_var): the statistics as raw arrays (grouped
    view, kept dims; empty when mean/invstd were given) for running-statistics updates."""
    params = [p for p in (weight, bias) if p is not None]
    y, batch_mean, batch_var = Normalize.apply(
        x, *params, group_shape=tuple(group_shape), axes=tuple(axes), param_shape=tuple(param_shape),
        eps=eps, center=center, has_weight=weight is not None, has_bias=bias is not None,
        mean=mean, invstd=invstd, node_name=node_name,
        param_group_shape=None if param_group_shape is None else tuple(param_group_shape), **shown_attrs)
    return y, batch_mean.data, batch_var.data
