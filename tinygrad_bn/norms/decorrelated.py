"""Decorrelated Batch Normalization (Huang, Yang, Lang & Deng, CVPR 2018, arXiv 1804.08450):
DecorrelatedBatchNorm and F.decorrelated_batch_norm. ZCA whitening of channel groups.

The C channels are split into `groups` contiguous groups of d = C / groups channels (Chainer's
meaning of `groups`: the number of groups). Per group, with the m = N * prod(spatial) values of
each channel as the columns of a d x m matrix X:

    training:  mu      = mean of the columns of X                      (d x 1)
               X_c     = X - mu
               Sigma   = X_c X_c^T / m + eps I  = D diag(lambda) D^T    (eigh)
               U       = Sigma^(-1/2) = D diag(lambda^(-1/2)) D^T       (ZCA, not PCA: no axis swapping)
               X_hat   = U X_c                                          (X_hat X_hat^T / m = I - eps U^2)
               running_mean       = (1 - f) running_mean       + f mu
               running_projection = (1 - f) running_projection + f U     (f = momentum; EMAs)
    eval:      X_hat   = running_projection (X - running_mean)
    then       y = weight * x_hat + bias, per channel (the paper's gamma, beta; Chainer has none)

Backward in training, per group, with G = dL/dX_hat (= dy * weight, grouped), s = sqrt(lambda):

    dU     = G X_c^T
    dSigma = D ((D^T sym(dU) D) o P) D^T,   P_ij = -1 / (s_i s_j (s_i + s_j))
             (the Daleckii-Krein derivative of lambda^(-1/2): P_ij = (s_i^-1 - s_j^-1)/(lambda_i - lambda_j),
             which this form gives without dividing by lambda_i - lambda_j, so it is finite even for
             repeated eigenvalues; P_ii = -lambda_i^(-3/2) / 2)
    dX     = U (G - mean(G)) + (2/m) dSigma X_c          (mean over the m columns)
    dweight = sum(dy * x_hat),  dbias = sum(dy)

(Chainer's backward is the equivalent eigenvector-derivative form with K_ij = 1/(lambda_i -
lambda_j).) In eval dX = running_projection^T G.

Graph: one node (DecorrelatedBatchNormBackward); it saves x, the group means, eigenvalues and
eigenvectors (d x d per group) and the weight. Its backward is one fused node
(DecorrelatedBatchNormBackwardBackward) whose own backward is the VJP of `composed_backward`: the
same formulas in Tensor ops, with the eigendecomposition as a differentiable `Eigh` node (whose
backward is the standard eigenvector derivative, again in Tensor ops). So double backward works;
the second derivative does divide by lambda_i - lambda_j (inside Eigh's backward), so it is
ill-conditioned when two eigenvalues of a group's covariance (nearly) coincide.

Chainer quirk, not followed: Chainer scales the projection it adds to the running average by
m / (m - 1) ("unbiased estimation"). That makes eval outputs larger than training outputs on the
same statistics, and the unbiased covariance would call for sqrt((m - 1) / m), the other way, so
here the EMA uses U itself (as the authors' own PyTorch code does). momentum=0.1 is Chainer's
decay=0.9; momentum=None is a cumulative average, as in BatchNorm.
"""
import math

import numpy as np

from tinygrad_bn import dtypes
from tinygrad_bn.autograd.function import Function
from tinygrad_bn.autograd.grad_mode import no_grad
from tinygrad_bn.creation import zeros
from tinygrad_bn.nn.module import Module
from tinygrad_bn.norms._base import restores_count_on_error
from tinygrad_bn.norms._base import (NormSpec, check_more_than_one_value, reference_affine,
                                     register_affine, reset_affine)
from tinygrad_bn.norms._meanvar import gradients_per_input, vjp_of_composed
from tinygrad_bn.tensor import Tensor


# ---- layout helpers: (N, C, *spatial) <-> (groups, d, m) ----------------------------------------
def _to_groups_perm(ndim):
    return (1, 0) + tuple(range(2, ndim))


def _group_array(x, groups):
    """(N, C, *S) array -> (groups, C/groups, N*prod(S)) (a copy: channels first)."""
    c = x.shape[1]
    return x.transpose(_to_groups_perm(x.ndim)).reshape(groups, c // groups, -1)


def _ungroup_array(xg, shape):
    """Inverse of _group_array for an input of `shape`."""
    n, c = shape[:2]
    return xg.reshape((c, n) + tuple(shape[2:])).transpose(_to_groups_perm(len(shape)))


def _group(x, groups):
    """_group_array for Tensors (differentiable)."""
    c = x.shape[1]
    return x.permute(*_to_groups_perm(x.ndim)).reshape(groups, c // groups, -1)


def _ungroup(xg, shape):
    n, c = shape[:2]
    return xg.reshape((c, n) + tuple(shape[2:])).permute(*_to_groups_perm(len(shape)))


def _param_view(shape):
    return (1, shape[1]) + (1,) * (len(shape) - 2)


def _whitening(xp, xc, eps, dtype):
    """eigh of Sigma = X_c X_c^T / m + eps I (in float64: the matrices are small, and lambda^-1/2
    amplifies rounding), and U = D diag(lambda^-1/2) D^T; results in `dtype`."""
    m = xc.shape[2]
    xc64 = xc.astype(xp.float64)
    cov = xc64 @ xc64.transpose(0, 2, 1) / m
    cov += eps * xp.eye(xc.shape[1], dtype=xp.float64)
    # LAPACK on a NaN matrix may fail to converge or return NaNs, by chance: refuse it clearly
    finite = xp.isfinite(cov).all(axis=(1, 2))
    if not bool(finite.all()):
        bad = [int(g) for g in xp.nonzero(~finite)[0][:8]]
        raise RuntimeError(f"DecorrelatedBatchNorm: the batch covariance of channel group(s) {bad} "
                           f"(of {xc.shape[0]}) is not finite; the input holds NaN or inf (or values "
                           f"too large to square), and ZCA whitening needs a finite covariance")
    eigvals, eigvecs = xp.linalg.eigh(cov)
    proj = (eigvecs / xp.sqrt(eigvals)[:, None, :]) @ eigvecs.transpose(0, 2, 1)
    return (eigvals.astype(dtype), eigvecs.astype(dtype), proj.astype(dtype))


# ---- the differentiable eigendecomposition (used by the composed backward) ---------------------
class Eigh(Function):
    """(w, V) = eigh(A) for a batch of symmetric matrices (ascending w, A = V diag(w) V^T).

    Backward (symmetric A): dA = V (diag(dw) + F o skew(V^T dV)) V^T with F_ij = 1/(w_j - w_i)
    (0 on the diagonal) and skew(M) = (M - M^T)/2, which makes dA symmetric. Written in Tensor ops
    on the saved outputs, so it is itself differentiable. Unstable for repeated eigenvalues."""

    def forward(self, a):
        w, v = self.xp.linalg.eigh(a)
        self.save_for_backward(w=w, v=v)
        return w, v

    def backward(self, gw, gv):
        w, v = self.saved("w", "v")
        n = w.shape[-1]
        eye = Tensor._make(self.xp.eye(n, dtype=w.dtype))
        vt = v.transpose(-1, -2)
        inner = vt @ gv
        skew = (inner - inner.transpose(-1, -2)) * 0.5
        # F_ij = 1 / (w_j - w_i) off the diagonal; the eye keeps the diagonal from dividing by 0
        f = (1 - eye) / (w.unsqueeze(-2) - w.unsqueeze(-1) + eye)
        mid = skew * f + gw.unsqueeze(-1) * eye
        return v @ mid @ vt


def eigh(a):
    """Differentiable symmetric eigendecomposition of a batch of matrices: (eigenvalues, eigenvectors)."""
    return Eigh.apply(a)


# ---- the node -----------------------------------------------------------------------------------
class DecorrelatedBatchNormFunction(Function):
    """y = weight * U (x - mu) + bias per channel group; see the module docstring.

    Inputs: x, then weight and/or bias when present. With `mean` and `projection` given (arrays
    shaped (groups, d, 1) and (groups, d, d)) they are constants (eval); otherwise they come from
    the batch. Outputs: y, and - not differentiable, for the running averages - the batch mean
    (groups, d, 1) and whitening matrix (groups, d, d) (empty arrays in eval)."""

    node_name = "DecorrelatedBatchNormBackward"

    def forward(self, x, *params, groups, eps, has_weight, has_bias, mean=None, projection=None):
        xp = self.xp
        weight = params[0] if has_weight else None
        bias = params[-1] if has_bias else None
        xg = _group_array(x, groups)
        batch_mean = batch_proj = xp.empty(0, dtype=x.dtype)
        if projection is None:
            mean = xg.mean(axis=2, keepdims=True)
            xc = xg - mean
            eigvals, eigvecs, projection = _whitening(xp, xc, eps, x.dtype)
            batch_mean, batch_proj = mean, projection
            # U is rebuilt from these in backward; with given statistics the attrs hold them
            self.save_for_backward(mean=mean, eigvals=eigvals, eigvecs=eigvecs)
        else:
            xc = xg - mean
        y = _ungroup_array(projection @ xc, x.shape)
        if weight is not None:
            y *= weight.reshape(_param_view(x.shape))
        if bias is not None:
            y += bias.reshape(_param_view(x.shape))
        self.save_for_backward(x=x, **({"weight": weight} if weight is not None else {}))
        self.mark_non_differentiable(batch_mean, batch_proj)
        return y, batch_mean, batch_proj

    def backward(self, dy, _d_mean, _d_proj):
        x = self.saved("x")
        has_weight, has_bias = self.attrs["has_weight"], self.attrs["has_bias"]
        weight = self.saved("weight") if has_weight else None
        groups = self.attrs["groups"]
        if self.attrs.get("projection") is not None:
            grads = _fixed_backward(dy, x, weight, Tensor._make(self.attrs["mean"]),
                                    Tensor._make(self.attrs["projection"]), groups, has_bias)
        else:
            grads = DecorrelatedBatchNormGrad.apply(
                dy, x, *([weight] if weight is not None else []), groups=groups,
                eps=self.attrs["eps"], has_weight=has_weight, has_bias=has_bias,
                mean=self.saved_array("mean"), eigvals=self.saved_array("eigvals"),
                eigvecs=self.saved_array("eigvecs"))
        return gradients_per_input(self, grads)


def _fixed_backward(dy, x, weight, mean, projection, groups, has_bias):
    """Eval (constant mean and projection P): dx = P^T G, dweight = sum(dy * x_hat), dbias = sum(dy)
    in Tensor ops (linear in dy, x and weight, so double backward needs nothing more)."""
    dyg = _group(dy, groups)
    gh = _group(dy * weight.reshape(_param_view(x.shape)), groups) if weight is not None else dyg
    dx = _ungroup(projection.transpose(-1, -2) @ gh, x.shape)
    grads = [dx]
    if weight is not None:
        x_hat = projection @ (_group(x, groups) - mean)
        grads.append((dyg * x_hat).sum(2).reshape(weight.shape))
    if has_bias:
        grads.append(dyg.sum(2).reshape(x.shape[1]))
    return tuple(grads)


class DecorrelatedBatchNormGrad(Function):
    """(dx, dweight, dbias) of training-mode DBN as fused array expressions (module docstring).

    Inputs: dy, x and (if affine) weight; the batch mean, eigenvalues and eigenvectors come as
    constants. Its own backward is the VJP of `composed_backward`."""

    node_name = "DecorrelatedBatchNormBackwardBackward"

    def forward(self, dy, x, *maybe_weight, groups, eps, has_weight, has_bias, mean, eigvals, eigvecs):
        weight = maybe_weight[0] if has_weight else None
        self.save_for_backward(dy=dy, x=x, **({"weight": weight} if weight is not None else {}))
        dyg = _group_array(dy, groups)
        gh = _group_array(dy * weight.reshape(_param_view(x.shape)), groups) if has_weight else dyg
        xc = _group_array(x, groups) - mean
        m = xc.shape[2]
        s = self.xp.sqrt(eigvals)
        d, dt = eigvecs, eigvecs.transpose(0, 2, 1)
        proj = (d / s[:, None, :]) @ dt
        a = dt @ (gh @ xc.transpose(0, 2, 1)) @ d                  # D^T dU D
        a = (a + a.transpose(0, 2, 1)) * 0.5
        si, sj = s[:, :, None], s[:, None, :]
        d_sigma = d @ (a * (-1.0 / (si * sj * (si + sj)))) @ dt
        dxg = proj @ (gh - gh.mean(axis=2, keepdims=True))
        dxg += (2.0 / m) * (d_sigma @ xc)
        grads = [_ungroup_array(dxg, x.shape)]
        if has_weight:
            grads.append((dyg * (proj @ xc)).sum(axis=2).reshape(weight.shape))
        if has_bias:
            grads.append(dyg.sum(axis=2).reshape(x.shape[1]))
        return tuple(grads)

    def backward(self, *gg):
        """VJP of the composed (primitive-op) backward: second derivatives to any order."""
        return vjp_of_composed(self, composed_backward, gg, groups=self.attrs["groups"],
                               eps=self.attrs["eps"], has_bias=self.attrs["has_bias"])


def _composed_whitening(x, groups, eps):
    """(X_c, eigenvalues, eigenvectors, U) of x's channel groups, in Tensor ops (differentiable)."""
    xg = _group(x, groups)
    xc = xg - xg.mean(2, keepdim=True)
    d, m = xc.shape[1], xc.shape[2]
    eye = Tensor._make(x.xp.eye(d, dtype=x.dtype))
    cov = xc @ xc.transpose(-1, -2) * (1.0 / m) + eye * eps
    w, v = eigh(cov)
    proj = (v * w.rsqrt().unsqueeze(-2)) @ v.transpose(-1, -2)
    return xc, w, v, proj


def composed_forward(x, weight=None, bias=None, *, groups, eps=2e-5):
    """Training-mode DBN written with primitive Tensor ops (the reference for the fused node)."""
    xc, _, _, proj = _composed_whitening(x, groups, eps)
    y = _ungroup(proj @ xc, x.shape)
    if weight is not None:
        y = y * weight.reshape(_param_view(x.shape))
    if bias is not None:
        y = y + bias.reshape(_param_view(x.shape))
    return y


def composed_backward(dy, x, weight=None, *, groups, eps=2e-5, has_bias=True):
    """(dx, dweight, dbias) of training-mode DBN written with primitive Tensor ops (differentiable
    to any order); the reference the fused DecorrelatedBatchNormGrad is tested against."""
    xc, w, v, proj = _composed_whitening(x, groups, eps)
    m = xc.shape[2]
    dyg = _group(dy, groups)
    gh = _group(dy * weight.reshape(_param_view(x.shape)), groups) if weight is not None else dyg
    vt = v.transpose(-1, -2)
    a = vt @ (gh @ xc.transpose(-1, -2)) @ v
    a = (a + a.transpose(-1, -2)) * 0.5
    s = w.sqrt()
    si, sj = s.unsqueeze(-1), s.unsqueeze(-2)
    d_sigma = v @ (a * (-1.0 / (si * sj * (si + sj)))) @ vt
    dxg = proj @ (gh - gh.mean(2, keepdim=True)) + (d_sigma @ xc) * (2.0 / m)
    dx = _ungroup(dxg, x.shape)
    dw = (dyg * (proj @ xc)).sum(2).reshape(weight.shape) if weight is not None else None
    db = dyg.sum(2).reshape(x.shape[1]) if has_bias else None
    return dx, dw, db


# ---- functional ---------------------------------------------------------------------------------
def _check_groups(num_features, groups, who):
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups <= 0:
        raise ValueError(f"{who}: groups must be a positive int (the number of channel groups), got {groups!r}")
    if num_features % groups:
        raise ValueError(f"{who}: num_features ({num_features}) must be divisible by groups ({groups}); "
                         f"groups is the number of groups, each of num_features / groups channels")


def decorrelated_batch_norm(input, running_mean=None, running_projection=None, weight=None, bias=None,
                            training=False, momentum=0.1, eps=2e-5, groups=16):
    """ZCA-whitening batch norm over channel groups (see the module docstring), the functional form.

    training=True whitens with the batch statistics and, when the buffers are given, updates them
    in place (running_mean (C,), running_projection (groups, C/groups, C/groups)); otherwise the
    running buffers are used. momentum=None uses factor 1 (the caller passes 1/count for a
    cumulative average, as the module does)."""
    name = "decorrelated_batch_norm"
    if not isinstance(input, Tensor):
        raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
    if input.ndim < 2:
        raise ValueError(f"{name}: expected at least 2D input (got {input.ndim}D input)")
    if not dtypes.is_floating(input.dtype):
        raise TypeError(f"{name}: expected a floating-point input, got {input.dtype}")
    channels = input.shape[1]
    _check_groups(channels, groups, name)
    d = channels // groups
    for what, t, numel in (("running_mean", running_mean, channels), ("weight", weight, channels),
                           ("bias", bias, channels)):
        if t is not None and t.numel() != numel:
            raise RuntimeError(f"{name}: {what} should contain {numel} elements not {t.numel()}")
    if running_projection is not None and tuple(running_projection.shape) != (groups, d, d):
        raise RuntimeError(f"{name}: running_projection should have shape {[groups, d, d]} (groups, "
                           f"C/groups, C/groups), got {list(running_projection.shape)}")
    if not eps >= 0 or (training and eps == 0):
        raise ValueError(f"{name}: eps must be positive during training and non-negative otherwise, "
                         f"but got {eps}")
    attrs = dict(groups=int(groups), eps=float(eps), has_weight=weight is not None,
                 has_bias=bias is not None)
    params = [p for p in (weight, bias) if p is not None]
    if training:
        check_more_than_one_value(input.shape, who=name)
        y, mean, proj = DecorrelatedBatchNormFunction.apply(input, *params, **attrs)
        factor = 1.0 if momentum is None else momentum
        with no_grad():
            for buffer, batch in ((running_mean, mean.data), (running_projection, proj.data)):
                if buffer is not None:
                    data = buffer.data
                    data *= (1 - factor)
                    data += factor * batch.reshape(data.shape).astype(data.dtype, copy=False)
                    buffer._version[0] += 1
        return y
    if running_mean is None or running_projection is None:
        raise ValueError(f"{name}: eval (training=False) needs running_mean and running_projection")
    mean = running_mean.data.astype(input.dtype).reshape(groups, d, 1)
    proj = running_projection.data.astype(input.dtype)
    y, _, _ = DecorrelatedBatchNormFunction.apply(input, *params, mean=mean, projection=proj, **attrs)
    return y


# ---- module -------------------------------------------------------------------------------------
class DecorrelatedBatchNorm(Module):
    """Decorrelated (ZCA-whitening) batch normalization over `groups` groups of channels, for
    (N, C) and (N, C, *spatial) inputs; per-channel weight and bias after the whitening.

    state_dict: weight (C), bias (C), running_mean (C), running_projection (groups, C/groups,
    C/groups, init identity), num_batches_tracked. Eval uses the running averages (or the batch
    statistics when track_running_stats=False)."""

    def __init__(self, num_features, groups=16, eps=2e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None):
        super().__init__()
        if not isinstance(num_features, (int, np.integer)) or num_features <= 0:
            raise ValueError(f"DecorrelatedBatchNorm: num_features must be a positive int, got {num_features!r}")
        _check_groups(num_features, groups, "DecorrelatedBatchNorm")
        if not eps > 0:
            raise ValueError(f"DecorrelatedBatchNorm: eps must be positive, but got {eps}")
        self.num_features = int(num_features)
        self.groups = int(groups)
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        factory = {"device": device, "dtype": dtype}
        d = self.num_features // self.groups
        register_affine(self, num_features, affine, **factory)
        if track_running_stats:
            self.register_buffer("running_mean", zeros(num_features, **factory))
            proj = zeros(self.groups, d, d, **factory)
            proj.data[...] = proj.xp.eye(d, dtype=proj.dtype)
            self.register_buffer("running_projection", proj)
            self.register_buffer("num_batches_tracked", zeros((), dtype=dtypes.int64, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_projection", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self):
        if self.track_running_stats:
            d = self.num_features // self.groups
            self.running_mean.data[...] = 0
            self.running_projection.data[...] = self.running_projection.xp.eye(d, dtype=self.running_projection.dtype)
            self.num_batches_tracked.data[...] = 0

    def reset_parameters(self):
        self.reset_running_stats()
        reset_affine(self)

    @restores_count_on_error
    def forward(self, input):
        if input.ndim < 2:
            raise ValueError(f"DecorrelatedBatchNorm: expected at least 2D input (got {input.ndim}D input)")
        if input.shape[1] != self.num_features:
            raise ValueError(f"DecorrelatedBatchNorm: expected input's size at dim=1 to match "
                             f"num_features ({self.num_features}), but got: {input.shape[1]}.")
        use_batch_stats = self.training or self.running_mean is None
        if use_batch_stats:  # name the layer, as BatchNorm does, not the functional form
            check_more_than_one_value(input.shape, who="DecorrelatedBatchNorm")
        factor = self.momentum if self.momentum is not None else 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data += 1
            self.num_batches_tracked._version[0] += 1
            if self.momentum is None:
                factor = 1.0 / int(self.num_batches_tracked.item())
        updates = self.training and self.track_running_stats
        return decorrelated_batch_norm(
            input, self.running_mean if (updates or not use_batch_stats) else None,
            self.running_projection if (updates or not use_batch_stats) else None,
            self.weight, self.bias, use_batch_stats, factor, self.eps, self.groups)

    def extra_repr(self):
        return (f"{self.num_features}, groups={self.groups}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


def _conv_groups(channels):
    """Groups of (up to) 16 channels, the paper's default group size: C // gcd(C, 16) groups."""
    return channels // math.gcd(channels, 16)


def reference(layer, x, params, buffers, training):
    """The module docstring's equations (Huang et al. 2018, Algorithm 1, ZCA) in plain NumPy:
    (y, buffers after the call)."""
    buffers = dict(buffers)
    n, c = x.shape[:2]
    g, d = layer.groups, c // layer.groups
    columns = np.moveaxis(x, 1, 0).reshape(g, d, -1)          # per group: d channels x m values
    if training:
        mu = columns.mean(axis=2, keepdims=True)
        centred = columns - mu
        sigma = centred @ centred.transpose(0, 2, 1) / centred.shape[2] + layer.eps * np.eye(d)
        lam, vectors = np.linalg.eigh(sigma)
        u = (vectors / np.sqrt(lam)[:, None, :]) @ vectors.transpose(0, 2, 1)   # Sigma^(-1/2)
        if layer.track_running_stats:
            buffers["num_batches_tracked"] = buffers["num_batches_tracked"] + 1
            f = layer.momentum if layer.momentum is not None else 1.0 / float(buffers["num_batches_tracked"])
            buffers["running_mean"] = (1 - f) * buffers["running_mean"] + f * mu.reshape(c)
            buffers["running_projection"] = (1 - f) * buffers["running_projection"] + f * u
    else:
        mu, u = buffers["running_mean"].reshape(g, d, 1), buffers["running_projection"]
        centred = columns - mu
    whitened = np.moveaxis((u @ centred).reshape((c, n) + x.shape[2:]), 0, 1)
    return reference_affine(layer, whitened, params), buffers


SPECS = [
    NormSpec(name="DecorrelatedBatchNorm", make=lambda c: DecorrelatedBatchNorm(c, groups=2),
             input_shape=lambda c: (6, c),
             make_for_conv=lambda c, hw: DecorrelatedBatchNorm(c, groups=_conv_groups(c)),
             batch_independent_eval=True, reference=reference,
             description="ZCA whitening of channel groups with batch statistics; running mean and "
                         "whitening matrix in eval"),
    NormSpec(name="DecorrelatedBatchNorm-conv", make=lambda c: DecorrelatedBatchNorm(c, groups=1, momentum=None),
             input_shape=lambda c: (2, c, 2, 2),
             batch_independent_eval=True, reference=reference,
             description="one group of all channels over (N, C, H, W), cumulative running averages"),
]
