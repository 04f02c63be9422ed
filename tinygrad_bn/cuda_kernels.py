"""Optional fused CuPy kernels: the GPU fast path of BatchNorm-type normalization.

The generic code (norms/_kernels.py) is written once against `xp` and runs on CuPy as it is;
each array expression there launches its own kernel and allocates its own temporary. When `xp`
is CuPy, these fused kernels replace the hot full-size expressions of the per-group path:

    centred_square_sum: sum((x - mean)^2) over axes                      one reduction kernel
    normalize_affine:  y  = (x - mean) * scale + shift                 one pass, one output
    affine3:           dx = a * dy + b * x + c                          one pass, one output
    sum_of_products:   sum(a * b) over axes, without materialising a*b  one reduction kernel

Each is compiled once, on first use (CuPy caches the compiled kernel), and has a generic twin in
norms/_kernels.py that tests/norms/test_cuda_kernels.py compares it with on a GPU.
"""
import functools

from tinygrad_bn import backend


def available_for(xp):
    """True when xp is CuPy (the fused kernels exist only there)."""
    cp = backend._cupy or None
    return cp is not None and xp is cp


@functools.lru_cache(maxsize=None)
def _kernels():
    import cupy as cp
    return {
        "normalize_affine": cp.ElementwiseKernel(
            "T x, T mean, T scale, T shift", "T y",
            "y = (x - mean) * scale + shift",
            "tinygrad_bn_normalize_affine"),
        "affine3": cp.ElementwiseKernel(
            "T dy, T x, T a, T b, T c", "T dx",
            "dx = a * dy + b * x + c",
            "tinygrad_bn_affine3"),
        "centred_square_sum": cp.ReductionKernel(
            "T x, T mean", "T out",
            "(x - mean) * (x - mean)", "a + b", "out = a", "0",
            "tinygrad_bn_centred_square_sum"),
        "sum_of_products": cp.ReductionKernel(
            "T a, T b", "T out",
            "a * b", "a + b", "out = a", "0",
            "tinygrad_bn_sum_of_products"),
    }


def normalize_affine(x, mean, scale, shift):
    """(x - mean) * scale + shift, broadcasting the per-group arrays, in one kernel."""
    return _kernels()["normalize_affine"](x, mean, scale, shift)


def affine3(dy, x, a, b, c):
    """a * dy + b * x + c, broadcasting the per-group arrays, in one kernel."""
    return _kernels()["affine3"](dy, x, a, b, c)


def sum_of_products(a, b, axes):
    """sum(a * b) over axes with kept dims, in one reduction kernel."""
    return _kernels()["sum_of_products"](a, b, axis=tuple(axes), keepdims=True)


def centred_square_sum(x, mean, axes):
    """sum((x - mean)^2) over axes with kept dims, without materialising x - mean."""
    return _kernels()["centred_square_sum"](x, mean, axis=tuple(axes), keepdims=True)
