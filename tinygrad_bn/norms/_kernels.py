"""Array kernels of the shared normalizer node (norms/_meanvar.py), in blocks of samples.

Two kernels, chosen from the parameters' shape in the grouped view x_g:

per group (BatchNorm, InstanceNorm, GroupNorm): the last axis L of x_g (the spatial positions) is
reduced, and w and b are constant along it and along every other reduced axis but GroupNorm's
channels-in-a-group. With M values per statistics group:

    forward:   y  = (x - mu) * invstd * w + b
    backward:  S1 = sum(dy),  S2 = sum(dy (x - mu))          over the axes w is constant along
               A = sum_vary(w S1) / M = mean(g_hat),   B = invstd sum_vary(w S2) / M = mean(g_hat x_hat)
               dx = a dy + b (x - mu) + c,   a = w invstd,  b = -invstd^2 B,  c = -invstd A
               dw = sum(invstd S2),  db = sum(S1)
    (with fixed statistics, BatchNorm eval: dx = a dy)

rows (LayerNorm, RMSNorm): each row of the (rows, D) view normalized over its D values, w and b
along D (see rows_forward and rows_backward).

Why the code looks the way it does (all of it is about NumPy, which makes one pass over memory
per operation and uses one core):
  - It works in blocks of samples of about 4 MiB (`row_blocks`). Each full-size array is read
    once per pass; temporaries are one block long and stay in the cache.
  - The blocks are independent, so they run on worker threads (`_for_each_block`): NumPy releases
    the GIL inside its loops, and PyTorch, the reference, uses every core too. Results come back
    in block order, and sums over blocks are added in that order, so no result depends on the
    number of threads.
  - An operation that broadcasts a per-row value, x * scale with scale of shape (1, C, 1), runs
    NumPy's inner loop once per row of L values and costs about 2.5x a contiguous one. When a
    coefficient is the same for every sample (BatchNorm) it is expanded once to one sample's shape
    (1, C, L), and every per-element operation with it is contiguous (`_expand_shared`).
  - Sums run over rows in the array's dtype in pieces of 4096 values (einsum, vecdot), and the
    pieces are added in float64 (`_row_totals`).

On CuPy the per-group formulas run as fused elementwise and reduction kernels instead
(tinygrad_bn/cuda_kernels.py).
"""
import math
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy

from tinygrad_bn import cuda_kernels

CHUNK_ELEMENTS = 1 << 20  # ~4 MiB of float32 per block: it and its temporaries stay in the L3 cache
_EXPAND_MIN_SAMPLES = 8   # expand shared coefficients only when a copy costs <= 1/8 of x


def row_blocks(xg):
    """Slices of axis 0 of the grouped view holding about CHUNK_ELEMENTS values each."""
    per_sample = max(1, math.prod(xg.shape[1:]))
    step = max(1, CHUNK_ELEMENTS // per_sample)
    return [slice(start, start + step) for start in range(0, xg.shape[0], step)]


def is_aligned(param_group_shape, axes, center, ndim):
    """True when the fast path applies: centred statistics over axes that include the last one,
    with the parameters constant along it (BN, IN, GN; not LN or RMSNorm)."""
    return (param_group_shape is not None and center and (ndim - 1) in axes
            and param_group_shape[-1] == 1)


def _kept_shape(shape, axes):
    """The shape of a sum over `axes` with kept dims."""
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _times_weight(invstd, w):
    """a = w invstd (invstd alone without a weight)."""
    return invstd * w if w is not None else invstd


def _scratch(xp, xg, blocks):
    """One block's worth of temporary space."""
    rows = min(blocks[0].stop, xg.shape[0]) if blocks else 0
    return xp.empty((rows,) + tuple(xg.shape[1:]), dtype=xg.dtype)


def worker_threads():
    """How many threads the block loops use: OMP_NUM_THREADS when set (the variable NumPy's BLAS
    reads too), else the CPUs this process may run on, at most 4."""
    setting = os.environ.get("OMP_NUM_THREADS", "")
    if setting.strip().isdigit() and int(setting) > 0:
        return int(setting)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cpus))


_pools = {}                       # (process id, thread count) -> ThreadPoolExecutor
_pools_lock = threading.Lock()


def _pool(threads):
    """The worker threads for this process and thread count, started on first use. A forked
    child has a new process id, so it starts its own (it inherits none of the parent's threads).
    Pools are never shut down: another caller may be using one."""
    key = (os.getpid(), threads)
    with _pools_lock:
        if key not in _pools:
            _pools[key] = ThreadPoolExecutor(threads, thread_name_prefix="tinygrad_bn-blocks")
        return _pools[key]


def _for_each_block(xp, xg, blocks, work, scratch_arrays=0):
    """[work(rows, *scratch) for rows in blocks], in block order.

    On NumPy, with more than one block and worker thread, the calls run on the threads. Each call
    gets `scratch_arrays` block-sized temporaries of its own (taken from, and given back to, a
    queue holding one set per running call). `work` writes only its own rows of any output, and
    must not call _for_each_block itself: the pool's threads would wait on each other."""
    workers = worker_threads()
    threads = min(workers, len(blocks))
    if threads <= 1 or xp is not numpy:
        scratch = [_scratch(xp, xg, blocks) for _ in range(scratch_arrays)]
        return [work(rows, *scratch) for rows in blocks]
    spare = queue.SimpleQueue()
    for _ in range(threads):
        spare.put([_scratch(xp, xg, blocks) for _ in range(scratch_arrays)])

    def run(rows):
        scratch = spare.get()
        try:
            return work(rows, *scratch)
        finally:
            spare.put(scratch)
    return list(_pool(workers).map(run, blocks))


def _total(xp, partials, shape):
    """The sum (float64) of per-block partial sums of the given shape, added in block order."""
    total = xp.zeros(shape, dtype=xp.float64)
    for partial in partials:
        total += partial
    return total


def _sums(xp, block, axes, other=None):
    """sum(block) or sum(block * other) over `axes` (which include the last), kept dims, float64:
    each row of the last axis by _row_totals, then the rows in float64."""
    rows = _row_totals(xp, block, other)
    rest = tuple(a for a in axes if a != block.ndim - 1)
    total = rows.sum(axis=rest, keepdims=True) if rest else rows
    return total[..., None]


_PIECE = 4096


def _row_totals(xp, a, b=None):
    """sum(a) or sum(a * b) along the last axis, in float64: in pieces of _PIECE values (and one
    shorter remainder) summed in a's dtype - float32 for float16, which would overflow - with
    einsum and vecdot, the fastest NumPy reductions; then the pieces in float64. As precise as
    NumPy's pairwise sum, and about three times faster."""
    if a.dtype == xp.float16:
        a, b = a.astype(xp.float32), (None if b is None else b.astype(xp.float32))
    n = a.shape[-1]
    if n == 0:
        return xp.zeros(a.shape[:-1], dtype=xp.float64)
    whole = n - n % _PIECE if n > _PIECE else 0
    total = 0.0
    if whole:
        split = a.shape[:-1] + (whole // _PIECE, _PIECE)
        pieces = _piece_sums(xp, a[..., :whole].reshape(split),
                             None if b is None else b[..., :whole].reshape(split))
        total = pieces.sum(axis=-1, dtype=xp.float64)
    if whole < n:
        total = total + _piece_sums(xp, a[..., whole:], None if b is None else b[..., whole:]).astype(xp.float64)
    return total


def _piece_sums(xp, a, b=None):
    """sum(a) or sum(a * b) along the last axis, in a's dtype."""
    letters = "abcdefghijklmnop"[:a.ndim]
    if b is None:
        return xp.einsum(f"{letters}->{letters[:-1]}", a)
    if hasattr(xp, "vecdot"):  # NumPy >= 2.0; einsum does the same, a little slower
        return xp.vecdot(a, b)
    return xp.einsum(f"{letters},{letters}->{letters[:-1]}", a, b)


def _column_totals(xp, a, b=None):
    """sum(a) or sum(a * b) over the rows of a (rows, D) block, in float64: in groups of at most
    _PIECE rows summed in a's dtype (float32 for float16), the groups in float64."""
    if a.dtype == xp.float16:
        a, b = a.astype(xp.float32), (None if b is None else b.astype(xp.float32))
    total = xp.zeros(a.shape[1], dtype=xp.float64)
    for start in range(0, a.shape[0], _PIECE):
        rows = slice(start, start + _PIECE)
        part = xp.einsum("rd->d", a[rows]) if b is None else xp.einsum("rd,rd->d", a[rows], b[rows])
        total += part
    return total


def _expand_shared(xp, coefficient, shape):
    """A per-group coefficient that is the same for every sample (first axis 1; BatchNorm) expanded
    once to one sample's shape, so that operations with it run contiguously; others as they are."""
    if coefficient.shape[0] == 1 and shape[0] >= _EXPAND_MIN_SAMPLES:
        return xp.ascontiguousarray(xp.broadcast_to(coefficient, (1,) + tuple(shape[1:])))
    return coefficient


def _rows_of(coefficient, rows):
    """The block's rows of a per-sample coefficient; a shared one is used whole."""
    return coefficient if coefficient.shape[0] == 1 else coefficient[rows]


def _pooled_statistics(xp, xg, axes, blocks):
    """Mean and biased variance (float64, kept dims) pooled over the samples (BatchNorm), in one
    pass over x: sums of x - K and (x - K)^2 for a per-group shift K, the first block's mean.
    mean = K + mean(x - K) and var = mean((x - K)^2) - mean(x - K)^2 are exact algebra, and with K
    close to the mean nothing cancels ("shifted data" variance; Chan, Golub & LeVeque 1983)."""
    count = math.prod(xg.shape[a] for a in axes)
    if count == 0:  # no samples: NaN statistics, as the mean of nothing is
        nan = xp.full(_kept_shape(xg.shape, axes), xp.nan)
        return nan, nan
    first = xg[blocks[0]]
    shift = (_sums(xp, first, axes) / (count // xg.shape[0] * first.shape[0])).astype(xg.dtype)
    expanded_shift = _expand_shared(xp, shift, xg.shape)

    def shifted_sums(rows, scratch):
        block = xg[rows]
        centred = xp.subtract(block, expanded_shift, out=scratch[:len(block)])
        return _sums(xp, centred, axes), _sums(xp, centred, axes, centred)
    partials = _for_each_block(xp, xg, blocks, shifted_sums, scratch_arrays=1)
    mean_shifted = _total(xp, (p[0] for p in partials), shift.shape) / count
    mean_square = _total(xp, (p[1] for p in partials), shift.shape) / count
    return shift + mean_shifted, xp.maximum(mean_square - mean_shifted * mean_shifted, 0.0)


def _sample_statistics(xp, block, axes, scratch):
    """Mean and biased variance (float64, kept dims) of each sample of a block (InstanceNorm,
    GroupNorm), and the block minus its means (in scratch), all while the block is in the cache."""
    count = math.prod(block.shape[a] for a in axes)
    mean = _sums(xp, block, axes) / count
    centred = xp.subtract(block, mean.astype(block.dtype), out=scratch[:len(block)])
    return mean, _sums(xp, centred, axes, centred) / count, centred


def aligned_forward(xp, xg, weight, bias, param_group_shape, axes, eps, mean=None, invstd=None):
    """y, mean, invstd (x's dtype) and the batch variance (None when mean/invstd were given).

    BatchNorm: one pass for the statistics, one for y. Per-sample statistics (IN, GN): one pass,
    each block's statistics and then its y."""
    var = None
    w = weight.reshape(param_group_shape) if weight is not None else None
    if cuda_kernels.available_for(xp):
        if invstd is None:
            mean = xg.mean(axis=axes, keepdims=True)
            var = cuda_kernels.centred_square_sum(xg, mean, axes) / max(xg.size // mean.size, 1)
            invstd = (1.0 / xp.sqrt(var + eps)).astype(xg.dtype, copy=False)
            var = var.astype(xg.dtype, copy=False)
        # one dtype for every operand of the fused kernel (float16 x may come with float32 w, b)
        scale = _times_weight(invstd, w).astype(xg.dtype, copy=False)
        shift = (bias.reshape(param_group_shape).astype(xg.dtype, copy=False) if bias is not None
                 else xp.zeros_like(scale))
        return cuda_kernels.normalize_affine(xg, mean, scale, shift), mean, invstd, var
    blocks = row_blocks(xg)
    stats_per_block = invstd is None and 0 not in axes
    if invstd is None:
        stat_shape = _kept_shape(xg.shape, axes)
        if stats_per_block:
            mean, var, invstd = (xp.empty(stat_shape, dtype=xg.dtype) for _ in range(3))
        else:
            mean, var = _pooled_statistics(xp, xg, axes, blocks)
            invstd = (1.0 / xp.sqrt(var + eps)).astype(xg.dtype)
            mean, var = mean.astype(xg.dtype), var.astype(xg.dtype)
    y = xp.empty(xg.shape, dtype=xg.dtype)
    if not stats_per_block:
        # Statistics shared by the samples (BN training; given ones): y = x * alpha + beta with
        # alpha = invstd w and beta = b - mu alpha, as PyTorch's CPU kernel computes it: two
        # contiguous operations per block. (Its rounding error grows with |mu| / sigma, as
        # PyTorch's does; see _pooled_backward for the measured size of that.)
        alpha = _times_weight(invstd, w)
        beta = (bias.reshape(param_group_shape) - mean * alpha) if bias is not None else -mean * alpha
        alpha, beta = _expand_shared(xp, alpha, xg.shape), _expand_shared(xp, beta, xg.shape)

        def affine(rows):
            y_block = xp.multiply(xg[rows], _rows_of(alpha, rows), out=y[rows])
            y_block += _rows_of(beta, rows)
        _for_each_block(xp, xg, blocks, affine)
        return y, mean, invstd, var
    shift = _expand_shared(xp, bias.reshape(param_group_shape), xg.shape) if bias is not None else None

    def normalize_samples(rows, scratch):  # each block's statistics, then its y
        block_mean, block_var, centred = _sample_statistics(xp, xg[rows], axes, scratch)
        mean[rows], var[rows] = block_mean, block_var
        invstd[rows] = 1.0 / xp.sqrt(block_var + eps)
        y_block = xp.multiply(centred, _times_weight(invstd[rows], w), out=y[rows])
        if shift is not None:
            y_block += shift
    _for_each_block(xp, xg, blocks, normalize_samples, scratch_arrays=1)
    return y, mean, invstd, var


def _dx_coefficients(s1, s2, invstd, w, vary, count):
    """a, b, c of dx = a dy + b (x - mu) + c from S1 = sum dy and S2 = sum dy (x - mu) over the
    axes w is constant along, for the statistics groups they cover (in the sums' dtype: float64
    on NumPy)."""
    ws1, ws2 = (s1 * w, s2 * w) if w is not None else (s1, s2)
    mean_g_hat = (ws1.sum(axis=vary, keepdims=True) if vary else ws1) / count
    mean_g_hat_x_hat = invstd * (ws2.sum(axis=vary, keepdims=True) if vary else ws2) / count
    a = _times_weight(invstd, w)
    b = -invstd * invstd * mean_g_hat_x_hat
    c = -invstd * mean_g_hat
    return a, b, c


def aligned_backward(xp, dyg, xg, weight, mean, invstd, fixed_stats, param_group_shape, axes):
    """(dx, dw, db) in the grouped view (dw, db per parameter group, before reshaping; dw None
    without a weight); see the module docstring. dx is the one new full-size array."""
    const = tuple(ax for ax in axes if param_group_shape[ax] == 1)
    vary = tuple(ax for ax in axes if param_group_shape[ax] != 1)
    w = weight.reshape(param_group_shape) if weight is not None else None
    count = math.prod(xg.shape[a] for a in axes)  # values per statistics group
    if cuda_kernels.available_for(xp):
        s1 = dyg.sum(axis=const, keepdims=True)
        s2 = cuda_kernels.centred_product_sum(dyg, xg, mean, const)
        if fixed_stats:
            dx = dyg * _times_weight(invstd, w).astype(xg.dtype, copy=False)
        else:
            a, b, c = (k.astype(xg.dtype) for k in _dx_coefficients(s1, s2, invstd, w, vary, count))
            dx = cuda_kernels.affine3(dyg, xg, a, b, c - b * mean)
        return (dx,) + _parameter_gradients(s1, s2, invstd, weight, param_group_shape, xg.dtype)
    kernel = _pooled_backward if 0 in const else _per_sample_backward
    dx = xp.empty(xg.shape, dtype=xg.dtype)
    s1, s2 = kernel(xp, dyg, xg, w, mean, invstd, fixed_stats, const, vary, count, dx)
    return (dx,) + _parameter_gradients(s1, s2, invstd, weight, param_group_shape, xg.dtype)


def _fixed_statistics_scale(xp, invstd, w, xg):
    """a = w invstd in x's dtype, prepared for blocks: with fixed statistics dx = a dy."""
    return _expand_shared(xp, _times_weight(invstd, w).astype(xg.dtype, copy=False), xg.shape)


def _pooled_backward(xp, dyg, xg, w, mean, invstd, fixed_stats, const, vary, count, dx):
    """BatchNorm, whose sums run over the samples too: S1 = sum dy and S2 = sum dy (x - mu)
    (float64) in one pass, then dx = a dy + b x + (c - b mu) with per-channel coefficients in a
    second. In eval (fixed statistics) dx = a dy needs no sums and is written in the first pass.

    The second pass does not form x - mu, which saves one full-size operation. Like the forward
    (y = x alpha + beta, PyTorch's formulation) its rounding then grows with |mu| / sigma:
    measured, the float32 dx is as accurate as the centred form up to |mu| / sigma = 100, and 5x
    less accurate (1.4e-6 relative) at 1000. S2 keeps x - mu: it feeds dw directly, and dw lost
    3.8e-4 of its value at |mu| / sigma = 1000 without it."""
    blocks = row_blocks(xg)
    sum_shape = _kept_shape(xg.shape, const)
    centre = _expand_shared(xp, mean, xg.shape)
    fixed_a = _fixed_statistics_scale(xp, invstd, w, xg) if fixed_stats else None

    def sums(rows, scratch):
        dy_block = dyg[rows]
        if fixed_stats:
            xp.multiply(dy_block, fixed_a, out=dx[rows])
        centred = xp.subtract(xg[rows], centre, out=scratch[:len(dy_block)])
        return _sums(xp, dy_block, const), _sums(xp, dy_block, const, centred)
    partials = _for_each_block(xp, xg, blocks, sums, scratch_arrays=1)
    s1 = _total(xp, (p[0] for p in partials), sum_shape)
    s2 = _total(xp, (p[1] for p in partials), sum_shape)
    if fixed_stats:
        return s1, s2
    a, b, c = _dx_coefficients(s1, s2, invstd, w, vary, count)
    a, b, shift = (_expand_shared(xp, k.astype(xg.dtype), xg.shape) for k in (a, b, c - b * mean))

    def gradient(rows, scratch):
        dx_block = xp.multiply(dyg[rows], a, out=dx[rows])
        scaled = xp.multiply(xg[rows], b, out=scratch[:len(dx_block)])
        dx_block += scaled
        dx_block += shift
    _for_each_block(xp, xg, blocks, gradient, scratch_arrays=1)
    return s1, s2


def _per_sample_backward(xp, dyg, xg, w, mean, invstd, fixed_stats, const, vary, count, dx):
    """InstanceNorm and GroupNorm, whose statistics are per sample: one pass, each block's x - mu,
    its S1 = sum dy and S2 = sum dy (x - mu), then its dx = a dy + b (x - mu) + c (or a dy with
    fixed statistics) while the block is in the cache."""
    blocks = row_blocks(xg)
    centre = _expand_shared(xp, mean, xg.shape)
    fixed_a = _fixed_statistics_scale(xp, invstd, w, xg) if fixed_stats else None

    def one_pass(rows, scratch):
        dy_block = dyg[rows]
        centred = xp.subtract(xg[rows], _rows_of(centre, rows), out=scratch[:len(dy_block)])
        block_s1, block_s2 = _sums(xp, dy_block, const), _sums(xp, dy_block, const, centred)
        if fixed_stats:
            xp.multiply(dy_block, _rows_of(fixed_a, rows), out=dx[rows])
        else:
            a, b, c = (k.astype(xg.dtype) for k in
                       _dx_coefficients(block_s1, block_s2, invstd[rows], w, vary, count))
            dx_block = xp.multiply(dy_block, a, out=dx[rows])
            centred *= b
            dx_block += centred
            dx_block += c
        return block_s1, block_s2
    partials = _for_each_block(xp, xg, blocks, one_pass, scratch_arrays=1)
    if not partials:
        empty = xp.zeros(_kept_shape(xg.shape, const), dtype=xp.float64)
        return empty, empty
    return xp.concatenate([p[0] for p in partials]), xp.concatenate([p[1] for p in partials])


def _parameter_gradients(s1, s2, invstd, weight, param_group_shape, dtype):
    """dw = sum(invstd S2) and db = sum(S1) over the axes the parameters do not vary along
    (dw is None without a weight)."""
    dw = _reduce_to(invstd * s2, param_group_shape).astype(dtype) if weight is not None else None
    return dw, _reduce_to(s1, param_group_shape).astype(dtype)


def _reduce_to(stat, param_group_shape):
    """Sum a per-group statistic over the axes the parameter does not vary along."""
    axes = tuple(i for i, n in enumerate(param_group_shape) if n == 1 and stat.shape[i] != 1)
    return stat.sum(axis=axes, keepdims=True) if axes else stat


# ---- LayerNorm and RMSNorm: w and b vary along the normalized values ----------------------------

def rows_forward(xp, xg, weight, bias, center, eps):
    """LayerNorm (center=True) and RMSNorm (center=False) on the (rows, D) view: every row
    normalized over its D values, then y = x_hat * w + b with w, b along D. One pass: each
    block's statistics, then its y. Returns y, mean (None for RMSNorm), invstd (x's dtype) and
    the variance or mean square (float64)."""
    d = xg.shape[1]
    y = xp.empty(xg.shape, dtype=xg.dtype)
    stat_shape = (xg.shape[0], 1)
    mean = xp.empty(stat_shape, dtype=xg.dtype) if center else None
    invstd = xp.empty(stat_shape, dtype=xg.dtype)
    var = xp.empty(stat_shape, dtype=xp.float64)  # kept in float64: a float16 variance may overflow

    def normalize_rows(rows):
        block, y_block = xg[rows], y[rows]
        if center:
            mean[rows] = _sums(xp, block, (1,)) / d
            xp.subtract(block, mean[rows], out=y_block)
            block_var = _sums(xp, y_block, (1,), y_block) / d
        else:
            block_var = _sums(xp, block, (1,), block) / d   # the mean square
        var[rows] = block_var
        invstd[rows] = 1.0 / xp.sqrt(block_var + eps)
        xp.multiply(y_block if center else block, invstd[rows], out=y_block)
        if weight is not None:
            y_block *= weight.reshape(1, d)
        if bias is not None:
            y_block += bias.reshape(1, d)
    _for_each_block(xp, xg, row_blocks(xg), normalize_rows)
    return y, mean, invstd, var


def rows_backward(xp, dyg, xg, weight, mean, invstd, center, has_bias):
    """(dx, dw, db) of rows_forward, with g = dy * w and means over each row's D values:
        dx = invstd * (g - mean(g) - x_hat * mean(g * x_hat))      (no mean(g) for RMSNorm)
        dw = sum over rows of dy * x_hat,   db = sum over rows of dy
    One pass; dx is the one new full-size array, x_hat and g live in block-sized scratch."""
    d = xg.shape[1]
    w = weight.reshape(1, d) if weight is not None else None
    dx = xp.empty(xg.shape, dtype=xg.dtype)

    def gradient_rows(rows, x_hat_space, g_space):
        block, dy_block, dx_block, inv = xg[rows], dyg[rows], dx[rows], invstd[rows]
        x_hat = x_hat_space[:len(block)]
        if center:
            xp.subtract(block, mean[rows], out=x_hat)
            x_hat *= inv
        else:
            xp.multiply(block, inv, out=x_hat)
        g = xp.multiply(dy_block, w, out=g_space[:len(block)]) if w is not None else dy_block
        projection = (_sums(xp, g, (1,), x_hat) / d).astype(xg.dtype)   # mean(g x_hat) per row
        xp.multiply(x_hat, -projection, out=dx_block)
        dx_block += g
        if center:
            dx_block -= (_sums(xp, g, (1,)) / d).astype(xg.dtype)
        dx_block *= inv
        block_dw = _column_totals(xp, dy_block, x_hat) if w is not None else None
        block_db = _column_totals(xp, dy_block) if has_bias else None
        return block_dw, block_db
    partials = _for_each_block(xp, xg, row_blocks(xg), gradient_rows, scratch_arrays=2)
    dw = _total(xp, (p[0] for p in partials), (d,)).astype(xg.dtype) if w is not None else None
    db = _total(xp, (p[1] for p in partials), (d,)).astype(xg.dtype) if has_bias else None
    return dx, dw, db
