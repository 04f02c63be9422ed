"""Interpolation with PyTorch's index and weight rules: interpolate in mode 'nearest' (3-D, 4-D and
5-D input: 1, 2 or 3 spatial dims), 'linear' (3-D) and 'bilinear' (4-D, align_corners both ways).

Separable: along each spatial dim, output position o reads input positions lo[o] and hi[o] with
weights w0[o] = 1 - lam[o] and lam[o] (nearest: hi = lo, lam = 0). Per dim, with n_in -> n_out:
  nearest  lo = min(floor(o * scale), n_in - 1),  scale = 1/scale_factor when the kernel is given
           one (recompute_scale_factor not True), else n_in / n_out; rounded as PyTorch's CPU
           kernels do (float32 arithmetic, except float64 1-D/3-D with a size: exact integers; 2-D
           copies when n_out = n_in and halves o when n_out = 2 n_in).
  linear   src = scale * o (align_corners, scale = (n_in-1)/(n_out-1)) or
           max(scale * (o + 1/2) - 1/2, 0); lo = min(floor(src), n_in - 1), lam = src - lo,
           hi = lo + 1 if lo < n_in - 1 else lo.
The map is linear in x: backward spreads g back to lo and hi (scatter-add, the transpose), and the
transpose's backward is the forward map again, so double backward works.
"""
import math

import numpy as np

from tinygrad_bn import backend, dtypes
from tinygrad_bn.autograd.function import Function
from tinygrad_bn.tensor import Tensor

MODES = {"nearest": (3, 4, 5), "linear": (3,), "bilinear": (4,)}


def source_positions(mode, n_in, n_out, align_corners, scale, dtype, spatial_dims):
    """(lo, hi, w0, w1) host arrays of one spatial dim (the module docstring's rules)."""
    o = np.arange(n_out)
    if mode == "nearest":
        if spatial_dims == 2 and n_out == n_in:
            lo = o
        elif spatial_dims == 2 and n_out == 2 * n_in:
            lo = o >> 1
        elif dtype == np.float64 and spatial_dims != 2 and not (scale and scale > 0):
            lo = (o * n_in) // n_out
        else:
            s = np.float32(1.0 / scale) if scale and scale > 0 else np.float32(n_in) / np.float32(n_out)
            lo = np.floor(o.astype(np.float32) * s).astype(np.int64)
        lo = np.minimum(lo, n_in - 1)
        return lo, lo, None, None
    real = np.float64 if dtype == np.float64 else np.float32
    if align_corners:
        s = real(n_in - 1) / real(n_out - 1) if n_out > 1 else real(0)
        src = o.astype(real) * s
    else:
        s = real(1.0 / scale) if scale and scale > 0 else real(n_in) / real(n_out)
        src = np.maximum(s * (o.astype(real) + real(0.5)) - real(0.5), real(0))
    lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    lam = np.clip(src - lo, 0, 1).astype(real)
    hi = lo + (lo < n_in - 1)
    return lo, hi, (real(1) - lam).astype(dtype), lam.astype(dtype)


def _plans(attrs, in_spatial, dtype):
    k = len(in_spatial)
    return [source_positions(attrs["mode"], n, q, attrs["align_corners"], s, np.dtype(dtype), k)
            for n, q, s in zip(in_spatial, attrs["output_size"], attrs["scales"])]


def _along(xp, w, ndim, axis):
    shape = [1] * ndim
    shape[axis] = -1
    return xp.asarray(w).reshape(shape)


class Interpolate(Function):
    """y = x resampled along each spatial dim d: y[.., o, ..] = w0[o] x[.., lo[o], ..] + w1[o] x[.., hi[o], ..].
    Linear in x: dx = InterpolateBackward(g), the transpose (scatter-add to lo and hi)."""

    def forward(self, x, *, mode, output_size, align_corners, scales):
        xp, k = self.xp, len(output_size)
        for d, (lo, hi, w0, w1) in enumerate(_plans(self.attrs, x.shape[-k:], x.dtype)):
            axis = x.ndim - k + d
            near = xp.take(x, xp.asarray(lo), axis=axis)
            x = near if w0 is None else (near * _along(xp, w0, x.ndim, axis)
                                         + xp.take(x, xp.asarray(hi), axis=axis) * _along(xp, w1, x.ndim, axis))
        return x

    def backward(self, g):
        return InterpolateBackward.apply(g, input_size=self.input_meta[0][0], **self.attrs)


class InterpolateBackward(Function):
    """dx[.., lo[o], ..] += w0[o] g[.., o, ..];  dx[.., hi[o], ..] += w1[o] g[.., o, ..]  (per dim,
    last dim first). Backward: Interpolate(gg), the transpose."""

    def forward(self, g, *, input_size, mode, output_size, align_corners, scales):
        xp, k = self.xp, len(output_size)
        plans = _plans(self.attrs, input_size[-k:], g.dtype)
        for d in reversed(range(k)):
            lo, hi, w0, w1 = plans[d]
            axis = g.ndim - k + d
            shape = list(g.shape)
            shape[axis] = input_size[axis]
            out = xp.zeros(shape, dtype=g.dtype)
            moved = xp.moveaxis(out, axis, 0)  # a view: scattering along its first axis writes into out
            for idx, w in ((lo, w0), (hi, w1)) if w0 is not None else ((lo, None),):
                share = g if w is None else g * _along(xp, w, g.ndim, axis)
                backend.scatter_add(moved, xp.asarray(idx.astype(np.intp)), xp.moveaxis(share, axis, 0))
            g = out
        return g

    def backward(self, gg):
        return Interpolate.apply(gg, **{k: v for k, v in self.attrs.items() if k != "input_size"})


# ---- argument checks and the functional form ----------------------------------------------------
def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """torch.nn.functional.interpolate for modes 'nearest', 'linear' and 'bilinear'."""
    if not isinstance(input, Tensor):
        raise TypeError(f"interpolate: expected input to be a Tensor, got {type(input).__name__}")
    if mode not in MODES:
        raise NotImplementedError(f"interpolate: mode {mode!r} is not supported; supported modes are "
                                  f"'nearest' (3-D, 4-D or 5-D input), 'linear' (3-D) and 'bilinear' (4-D)")
    if mode == "nearest" and align_corners is not None:
        raise ValueError(f"interpolate: align_corners option can only be set with the interpolating modes "
                         f"linear | bilinear, but got mode='nearest' and align_corners={align_corners!r}")
    align_corners = bool(align_corners)
    dim = input.ndim - 2
    spatial = list(input.shape[2:])
    if size is not None and scale_factor is not None:
        raise ValueError(f"interpolate: only one of size or scale_factor should be defined, got size={size!r} "
                         f"and scale_factor={scale_factor!r}")
    if size is not None:
        sizes = list(size) if isinstance(size, (tuple, list)) else [size] * dim
        if isinstance(size, (tuple, list)) and len(size) != dim:
            raise ValueError(f"interpolate: input and output must have the same number of spatial dimensions, "
                             f"but got input of size {list(input.shape)} (spatial {spatial}) and output size "
                             f"{size!r}; expected input (N, C, d1, ..., dK) and size (o1, ..., oK)")
        if not all(_is_int(s) for s in sizes):
            raise TypeError(f"interpolate: expected size to be an int or a tuple of ints, but got size={size!r}")
        scales = None
    elif scale_factor is not None:
        scales = list(scale_factor) if isinstance(scale_factor, (tuple, list)) else [scale_factor] * dim
        if isinstance(scale_factor, (tuple, list)) and len(scale_factor) != dim:
            raise ValueError(f"interpolate: input and scale_factor must have the same number of spatial "
                             f"dimensions, but got input of size {list(input.shape)} (spatial {spatial}) and "
                             f"scale_factor {scale_factor!r}")
        scales = [float(s) for s in scales]
        sizes = [math.floor(float(n) * s) for n, s in zip(spatial, scales)]
        if recompute_scale_factor:
            scales = None
    else:
        raise ValueError("interpolate: either size or scale_factor should be defined (both are None)")
    if recompute_scale_factor and size is not None:
        raise ValueError("interpolate: recompute_scale_factor is not meaningful with an explicit size")
    if antialias:
        if mode == "bilinear" and input.ndim == 4:
            raise NotImplementedError("interpolate: antialias=True is not supported (mode 'bilinear' without "
                                      "antialias is)")
        raise ValueError(f"interpolate: anti-alias option is restricted to bilinear and bicubic modes and "
                         f"requires a 4-D tensor as input, but got mode={mode!r} and input of size "
                         f"{list(input.shape)}")
    if input.ndim not in MODES[mode]:
        want = " or ".join(f"{n}-D" for n in MODES[mode])
        raise NotImplementedError(f"interpolate: mode {mode!r} expects a {want} input (N, C, spatial...), but "
                                  f"got input of size {list(input.shape)} ({input.ndim}-D)")
    if any(n <= 0 for n in spatial) or any(q <= 0 for q in sizes):
        raise RuntimeError(f"interpolate: input and output sizes should be greater than 0, but got input "
                           f"of size {list(input.shape)} (spatial {spatial}) and output spatial size {sizes}")
    if not (dtypes.is_floating(input.dtype) or (mode == "nearest" and input.dtype == np.uint8)):
        raise NotImplementedError(f"interpolate: mode {mode!r} is not implemented for dtype {input.dtype} "
                                  f"(expected a floating-point input{' or uint8' if mode == 'nearest' else ''})")
    return Interpolate.apply(input, mode=mode, output_size=tuple(int(q) for q in sizes),
                             align_corners=align_corners and mode != "nearest",
                             scales=tuple(scales) if scales is not None else (None,) * dim)
