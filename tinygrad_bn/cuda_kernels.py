"""Optional fused CuPy kernels: the GPU fast path of BatchNorm-type normalization.

The blocked kernels in norms/_kernels.py are written for NumPy. When `xp` is CuPy, the per-group
normalizers (BatchNorm, InstanceNorm, GroupNorm) use these fused kernels instead, one pass each:

    centred_square_sum:   sum((x - mean)^2) over axes                  one reduction kernel
    centred_product_sum:  sum(dy (x - mean)) over axes                  one reduction kernel
    normalize_affine:     y  = (x - mean) * scale + shift              one elementwise kernel
    affine3:              dx = a * dy + b * x + c                       one elementwise kernel

Each is compiled once, on first use (CuPy caches the compiled kernel). The reductions take
float16 inputs in float32 (a float16 sum of 65,536 values overflows). Every operand of one
kernel must have the same dtype ("T").

tests/norms/test_cuda_kernels.py compares each kernel with the array expression above, and
BatchNorm on CUDA with BatchNorm on NumPy. It needs a GPU. On CPU, tests/norms/test_kernels.py
runs the CuPy branch of norms/_kernels.py with NumPy stand-ins for these four functions.
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
        "centred_product_sum": cp.ReductionKernel(
            "T dy, T x, T mean", "T out",
            "dy * (x - mean)", "a + b", "out = a", "0",
            "tinygrad_bn_centred_product_sum"),
    }


def normalize_affine(x, mean, scale, shift):
    """(x - mean) * scale + shift, broadcasting the per-group arrays, in one kernel."""
    return _kernels()["normalize_affine"](x, mean, scale, shift)


def affine3(dy, x, a, b, c):
    """a * dy + b * x + c, broadcasting the per-group arrays, in one kernel."""
    return _kernels()["affine3"](dy, x, a, b, c)


def _at_least_float32(*arrays):
    """float16 arrays as float32 (for sums), others as they are."""
    import cupy as cp
    return [a.astype(cp.float32) if a.dtype == cp.float16 else a for a in arrays]


def centred_product_sum(dy, x, mean, axes):
    """sum(dy * (x - mean)) over axes with kept dims, in one reduction kernel."""
    return _kernels()["centred_product_sum"](*_at_least_float32(dy, x, mean), axis=tuple(axes), keepdims=True)


def centred_square_sum(x, mean, axes):
    """sum((x - mean)^2) over axes with kept dims, without materialising x - mean."""
    return _kernels()["centred_square_sum"](*_at_least_float32(x, mean), axis=tuple(axes), keepdims=True)
