"""The blocked per-group kernels (tinygrad_bn/norms/_kernels.py) behind BatchNorm, InstanceNorm and
GroupNorm, on inputs large enough to span several blocks (with a short last block), with and
without the expanded shared coefficients (8 samples or more), against a float64 NumPy reference
written from the formulas. The shared matrix uses small inputs that fit in one block."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn.norms import _kernels
from tests.helpers import assert_close


def reference(x, dy, w, b, group_shape, axes, param_view, fixed=None, eps=1e-5):
    """y, dx, dw, db in float64 from the textbook formulas; `fixed` = (mean, var) for eval."""
    x, dy = x.astype(np.float64).reshape(group_shape), dy.astype(np.float64).reshape(group_shape)
    w = np.ones(param_view) if w is None else w.astype(np.float64).reshape(param_view)
    mean, var = fixed if fixed is not None else (x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True))
    invstd = 1 / np.sqrt(var + eps)
    x_hat = (x - mean) * invstd
    y = x_hat * w + (0 if b is None else b.astype(np.float64).reshape(param_view))
    g = dy * w
    if fixed is not None:
        dx = g * invstd
    else:
        dx = invstd * (g - g.mean(axis=axes, keepdims=True) - x_hat * (g * x_hat).mean(axis=axes, keepdims=True))
    summed = tuple(i for i, n in enumerate(param_view) if n == 1)
    return y, dx, (dy * x_hat).sum(axis=summed), dy.sum(axis=summed)


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Blocks of 8192 values, so that small inputs span several blocks and end in a short one."""
    monkeypatch.setattr(_kernels, "CHUNK_ELEMENTS", 1 << 13)


def blocks_of(shape):
    return len(_kernels.row_blocks(np.empty(shape[:1] + (int(np.prod(shape[1:])),))))


CASES = {  # name: (layer, input shape, grouped view, reduced axes, parameters' grouped view)
    "BatchNorm2d, expanded coefficients": (lambda: tg.nn.BatchNorm2d(3), (20, 3, 30, 30),
                                           (20, 3, 900), (0, 2), (1, 3, 1)),
    "BatchNorm2d, few samples": (lambda: tg.nn.BatchNorm2d(2), (5, 2, 60, 60),
                                 (5, 2, 3600), (0, 2), (1, 2, 1)),
    "GroupNorm(3, 6)": (lambda: tg.nn.GroupNorm(3, 6), (20, 6, 25, 30),
                        (20, 3, 2, 750), (2, 3), (1, 3, 2, 1)),
    "InstanceNorm2d(affine)": (lambda: tg.nn.InstanceNorm2d(4, affine=True), (12, 4, 40, 40),
                               (12, 4, 1600), (2,), (1, 4, 1)),
}


@pytest.mark.parametrize("dtype,atol", [(np.float64, 1e-10), (np.float32, 2e-4)])
@pytest.mark.parametrize("name", list(CASES))
def test_training_matches_the_formulas_across_blocks(name, dtype, atol):
    make, shape, group_shape, axes, param_view = CASES[name]
    assert blocks_of(shape) >= 2, "the case must span several blocks"
    rng = np.random.default_rng(0)
    layer = make().to(tg.float64 if dtype == np.float64 else tg.float32)
    with tg.no_grad():
        layer.weight.copy_(tg.tensor(rng.uniform(0.5, 1.5, layer.weight.shape).astype(dtype)))
        layer.bias.copy_(tg.tensor(rng.standard_normal(layer.bias.shape).astype(dtype)))
    x_np = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    dy_np = rng.standard_normal(shape).astype(dtype)
    x = tg.tensor(x_np, requires_grad=True)
    y = layer(x)
    y.backward(tg.tensor(dy_np))
    y_ref, dx_ref, dw_ref, db_ref = reference(x_np, dy_np, layer.weight.detach().numpy(), layer.bias.detach().numpy(),
                                              group_shape, axes, param_view)
    assert_close(y, y_ref.reshape(shape), atol=atol, what=f"{name}: y")
    assert_close(x.grad, dx_ref.reshape(shape), atol=atol, what=f"{name}: dx")
    assert_close(layer.weight.grad, dw_ref.reshape(-1), atol=atol * 300, what=f"{name}: dw")
    assert_close(layer.bias.grad, db_ref.reshape(-1), atol=atol * 300, what=f"{name}: db")


@pytest.mark.parametrize("make,shape", [(lambda: tg.nn.BatchNorm2d(3), (20, 3, 30, 30)),
                                        (lambda: tg.nn.BatchNorm2d(2), (5, 2, 60, 60)),
                                        (lambda: tg.nn.InstanceNorm2d(4, affine=True, track_running_stats=True),
                                         (12, 4, 40, 40))])
def test_eval_with_running_statistics_across_blocks(make, shape):
    assert blocks_of(shape) >= 2, "the case must span several blocks"
    rng = np.random.default_rng(1)
    layer = make().double()
    c = shape[1]
    with tg.no_grad():
        layer.running_mean.copy_(tg.tensor(rng.standard_normal(c)))
        layer.running_var.copy_(tg.tensor(rng.uniform(0.5, 2.0, c)))
        layer.weight.copy_(tg.tensor(rng.uniform(0.5, 1.5, c)))
    layer.eval()
    x_np, dy_np = rng.standard_normal(shape), rng.standard_normal(shape)
    x = tg.tensor(x_np, requires_grad=True)
    layer(x).backward(tg.tensor(dy_np))
    fixed = (layer.running_mean.numpy().reshape(1, c, 1), layer.running_var.numpy().reshape(1, c, 1))
    y_ref, dx_ref, dw_ref, db_ref = reference(x_np, dy_np, layer.weight.detach().numpy(), layer.bias.detach().numpy(),
                                              (shape[0], c, -1), (0, 2), (1, c, 1), fixed=fixed)
    assert_close(layer(tg.tensor(x_np)), y_ref.reshape(shape), atol=1e-10, what="eval y")
    assert_close(x.grad, dx_ref.reshape(shape), atol=1e-10, what="eval dx")
    assert_close(layer.weight.grad, dw_ref.reshape(-1), atol=1e-8, what="eval dw")
    assert_close(layer.bias.grad, db_ref.reshape(-1), atol=1e-8, what="eval db")


def test_float32_statistics_keep_precision_with_a_large_mean():
    """The pooled statistics sum x - K for a shift K near the mean, so a mean of 1e4 and a
    standard deviation of 1 leave the float32 variance accurate (a plain E[x^2] - E[x]^2 in
    float32 would lose every digit)."""
    rng = np.random.default_rng(2)
    x_np = (rng.standard_normal((16, 3, 64, 64)) + 1e4).astype(np.float32)
    bn = tg.nn.BatchNorm2d(3, momentum=1.0)
    bn(tg.tensor(x_np))
    x64 = x_np.astype(np.float64)
    n = x64.size // 3
    assert_close(bn.running_mean, x64.mean(axis=(0, 2, 3)), atol=1e-3, rtol=0, what="running mean")
    assert_close(bn.running_var, x64.var(axis=(0, 2, 3)) * n / (n - 1), atol=1e-4, rtol=1e-4,
                 what="running (unbiased) variance")


def test_float32_batchnorm_gradient_stays_accurate_with_a_large_mean():
    """BatchNorm's backward forms dx = a dy + b x + (c - b mu) without x - mu, but sums
    S2 = sum dy (x - mu) centred. With |mu| / sigma = 1000 the float32 dx must still agree with a
    float64 evaluation of the formulas to 2e-5 of its size, and dw to 1e-4 (it was 3.8e-4 off with
    S2 = sum dy x - mu sum dy)."""
    rng = np.random.default_rng(4)
    shape = (16, 3, 32, 32)
    x_np = (rng.standard_normal(shape) + 1000).astype(np.float32)
    dy_np = rng.standard_normal(shape).astype(np.float32)
    bn = tg.nn.BatchNorm2d(3)
    x = tg.tensor(x_np, requires_grad=True)
    bn(x).backward(tg.tensor(dy_np))
    _, dx_ref, dw_ref, db_ref = reference(x_np.astype(np.float64), dy_np, np.ones(3), np.zeros(3),
                                          (16, 3, 1024), (0, 2), (1, 3, 1))
    scale = np.abs(dx_ref).max()
    assert_close(x.grad, dx_ref.reshape(shape), atol=2e-5 * scale, rtol=0, what="dx at mean 1000")
    assert_close(bn.weight.grad, dw_ref.reshape(-1), atol=2e-3, rtol=1e-4, what="dw at mean 1000")


def test_float16_input_sums_in_float32():
    """Rows of float16 are summed in float32: 4096 values of 60 would overflow float16."""
    x_np = np.full((2, 2, 64, 64), 60.0, dtype=np.float16)
    x_np[:, :, 0, 0] = 58.0
    y = tg.nn.functional.batch_norm(tg.tensor(x_np), None, None, training=True)
    assert np.isfinite(y.numpy()).all()
    assert y.dtype == tg.float16


@pytest.mark.parametrize("group_shape,axes,param_view,given_statistics", [
    ((0, 3, 16), (0, 2), (1, 3, 1), True),          # BatchNorm eval (training returns earlier)
    ((0, 3, 16), (2,), (1, 3, 1), False),           # InstanceNorm
    ((0, 3, 16), (2,), (1, 3, 1), True),            # InstanceNorm with running statistics
    ((0, 2, 3, 16), (2, 3), (1, 2, 3, 1), False)],  # GroupNorm
    ids=["BatchNorm-eval", "InstanceNorm", "InstanceNorm-running", "GroupNorm"])
def test_an_empty_batch_has_no_blocks_and_gives_empty_results(group_shape, axes, param_view, given_statistics):
    """No samples at all (a SyncBN rank with none normalizes with the global statistics)."""
    x = np.zeros(group_shape, np.float32)
    w = np.ones(int(np.prod(param_view)), np.float32)
    stat_shape = tuple(1 if i in axes else n for i, n in enumerate(group_shape))
    given = (np.zeros(stat_shape, np.float32), np.ones(stat_shape, np.float32)) if given_statistics else (None, None)
    y, mean, invstd, _ = _kernels.aligned_forward(np, x, w, w, param_view, axes, 1e-5, *given)
    dx, dw, db = _kernels.aligned_backward(np, x, x, w, mean, invstd, given_statistics, param_view, axes)
    assert y.shape == dx.shape == group_shape
    assert_close(dw.reshape(-1), np.zeros(w.size), atol=0, what="dw of nothing")
    assert_close(db.reshape(-1), np.zeros(w.size), atol=0, what="db of nothing")


@pytest.mark.parametrize("name", list(CASES))
def _one_dtype(*arrays):
    """The fused CuPy kernels take every operand in one dtype ("T"); so must their stand-ins."""
    dtypes = {a.dtype for a in arrays}
    assert len(dtypes) == 1, f"a fused kernel would get mixed dtypes {dtypes}"
    return arrays


@pytest.fixture
def numpy_stand_ins_for_the_fused_kernels(monkeypatch):
    """The CuPy branch of the kernels, run on NumPy: each fused kernel replaced by the array
    expression it stands for (the ones tests/norms/test_cuda_kernels.py compares the real kernels
    with, on a GPU), refusing mixed dtypes as the real ones do."""
    from tinygrad_bn import cuda_kernels

    def normalize_affine(x, mean, scale, shift):
        x, mean, scale, shift = _one_dtype(x, mean, scale, shift)
        return (x - mean) * scale + shift

    def affine3(dy, x, a, b, c):
        dy, x, a, b, c = _one_dtype(dy, x, a, b, c)
        return a * dy + b * x + c

    def wide(a):  # the real reductions sum float16 in float32
        return a.astype(np.float32) if a.dtype == np.float16 else a
    monkeypatch.setattr(cuda_kernels, "available_for", lambda xp: True)
    monkeypatch.setattr(cuda_kernels, "normalize_affine", normalize_affine)
    monkeypatch.setattr(cuda_kernels, "affine3", affine3)
    monkeypatch.setattr(cuda_kernels, "centred_product_sum", lambda dy, x, mean, axes: (
        wide(dy) * (wide(x) - wide(mean))).sum(axis=tuple(axes), keepdims=True))
    monkeypatch.setattr(cuda_kernels, "centred_square_sum", lambda x, mean, axes: (
        (wide(x) - wide(mean)) ** 2).sum(axis=tuple(axes), keepdims=True))


@pytest.mark.parametrize("name", list(CASES))
def test_the_cupy_branch_with_numpy_stand_ins_for_the_fused_kernels(name, numpy_stand_ins_for_the_fused_kernels):
    test_training_matches_the_formulas_across_blocks(name, np.float64, 1e-10)
    if name.startswith("BatchNorm"):
        test_eval_with_running_statistics_across_blocks(CASES[name][0], CASES[name][1])


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("make", [lambda: tg.nn.BatchNorm2d(3), lambda: tg.nn.GroupNorm(3, 6),
                                  lambda: tg.nn.InstanceNorm2d(6, affine=True, track_running_stats=True)],
                         ids=["BatchNorm2d", "GroupNorm", "InstanceNorm2d"])
def test_the_cupy_branch_with_float16_input_and_float32_parameters(make, training,
                                                                    numpy_stand_ins_for_the_fused_kernels):
    """float16 x with float32 w, b (which NumPy allows) reaches every fused kernel in one dtype."""
    layer = make().train(training)
    c = 3 if isinstance(layer, tg.nn.BatchNorm2d) else 6
    x = tg.tensor(np.random.default_rng(6).standard_normal((4, c, 5, 5)).astype(np.float16), requires_grad=True)
    y = layer(x)
    y.backward(tg.tensor(np.ones(y.shape, np.float16)))
    assert y.dtype == tg.float16 and x.grad.dtype == tg.float16
    assert np.isfinite(y.detach().numpy()).all() and np.isfinite(x.grad.numpy()).all()


def _run_layer(make, shape, seed=3):
    rng = np.random.default_rng(seed)
    tg.manual_seed(0)
    layer = make()
    x = tg.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)
    y = layer(x)
    y.backward(tg.tensor(rng.standard_normal(shape).astype(np.float32)))
    grads = [p.grad.numpy() for p in layer.parameters()]
    return [y.detach().numpy(), x.grad.numpy()] + grads


@pytest.mark.parametrize("make,shape", [(lambda: tg.nn.GroupNorm(3, 6), (20, 6, 25, 30)),
                                        (lambda: tg.nn.InstanceNorm2d(4, affine=True), (12, 4, 40, 40)),
                                        (lambda: tg.nn.LayerNorm([4, 40, 40]), (12, 4, 40, 40)),
                                        (lambda: tg.nn.RMSNorm([4, 40, 40]), (12, 4, 40, 40)),
                                        (lambda: tg.nn.BatchNorm2d(3), (20, 3, 30, 30))],
                         ids=["GroupNorm", "InstanceNorm2d", "LayerNorm", "RMSNorm", "BatchNorm2d"])
def test_results_do_not_depend_on_the_number_of_threads(make, shape, monkeypatch):
    """Blocks run on worker threads, but every sum over blocks is added in block order: one
    thread and three give bit-identical outputs and gradients."""
    assert blocks_of(shape) >= 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    serial = _run_layer(make, shape)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert _kernels.worker_threads() == 3
    threaded = _run_layer(make, shape)
    for a, b in zip(serial, threaded):
        np.testing.assert_array_equal(a, b)


def _normalize_in_child(queue):
    y = tg.nn.GroupNorm(3, 6)(tg.tensor(np.ones((20, 6, 25, 30), np.float32)))
    queue.put(float(np.abs(y.detach().numpy()).max()))


def test_the_worker_threads_are_restarted_in_a_forked_child(monkeypatch):
    """A forked child (a user's worker process, say) inherits the pool object but not its threads;
    the kernels start new ones there instead of waiting forever."""
    import multiprocessing
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    _run_layer(lambda: tg.nn.GroupNorm(3, 6), (20, 6, 25, 30))   # the parent's pool exists
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_normalize_in_child, args=(results,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung in the threaded kernel")
    assert child.exitcode == 0 and results.get(timeout=5) == 0.0


def test_sums_without_vecdot_use_einsum():
    """Array modules without vecdot (older CuPy) take the einsum route to the same sums."""
    import types
    no_vecdot = types.SimpleNamespace(**{name: getattr(np, name) for name in
                                         ("einsum", "float16", "float32", "float64")})
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((3, 4, 5000)), rng.standard_normal((3, 4, 5000))
    expected = (a * b).sum(axis=(0, 2), keepdims=True)
    assert_close(_kernels._sums(no_vecdot, a, (0, 2), b), expected, atol=1e-10)
    assert_close(_kernels._sums(np, a, (0, 2), b), expected, atol=1e-10)


def test_concurrent_callers_share_the_worker_threads(monkeypatch):
    """Several Python threads (the fake multi-rank world runs its ranks as threads) normalizing
    at once, with different block counts, all finish and get the serial results."""
    from concurrent.futures import ThreadPoolExecutor
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    shapes = [(20, 6, 25, 30), (4, 6, 25, 30), (40, 6, 25, 30), (9, 6, 25, 30)] * 3
    make = lambda: tg.nn.GroupNorm(3, 6)
    expected = [_run_layer(make, shape) for shape in shapes]
    with ThreadPoolExecutor(4) as callers:
        results = list(callers.map(lambda shape: _run_layer(make, shape), shapes))
    for got, want in zip(results, expected):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make", [lambda: tg.nn.LayerNorm(64), lambda: tg.nn.RMSNorm(64)], ids=["LayerNorm", "RMSNorm"])
def test_float16_rows_with_a_variance_beyond_float16_range(make):
    """std 400 puts the variance (160,000) beyond float16's 65,504. invstd comes from the float64
    sum, so y is still the normalized input (it used to be all zeros)."""
    x_np = (np.random.default_rng(7).standard_normal((4, 64)) * 400).astype(np.float16)
    layer = make().half()
    y = layer(tg.tensor(x_np)).detach().numpy().astype(np.float64)
    x64 = x_np.astype(np.float64)
    centred = x64 - x64.mean(axis=1, keepdims=True) if isinstance(layer, tg.nn.LayerNorm) else x64
    scale = np.sqrt((centred ** 2).mean(axis=1, keepdims=True))
    assert_close(y, centred / scale, atol=1e-2, rtol=1e-2, what="float16 y")


def test_float16_layernorm_parameter_gradients_sum_many_rows_in_float32():
    """db sums 120,000 rows of 0.5: 60,000 (float16 can hold it), not a float16 running sum."""
    rows, d = 120_000, 8
    x_np = np.random.default_rng(8).standard_normal((rows, d)).astype(np.float16)
    layer = tg.nn.LayerNorm(d).half()
    layer(tg.tensor(x_np)).backward(tg.tensor(np.full((rows, d), 0.5, np.float16)))
    assert_close(layer.bias.grad.numpy().astype(np.float64), np.full(d, 60000.0), atol=0, rtol=1e-3, what="db")
    x64 = x_np.astype(np.float64)
    x_hat = (x64 - x64.mean(axis=1, keepdims=True)) / np.sqrt(x64.var(axis=1, keepdims=True) + 1e-5)
    assert_close(layer.weight.grad.numpy().astype(np.float64), 0.5 * x_hat.sum(axis=0), atol=2.0, rtol=2e-2,
                 what="dw")


def test_rows_that_do_not_split_into_4096_value_pieces_keep_their_precision():
    """A prime row length is summed as 4096-value pieces plus a remainder, not as one long
    float32 sum: LayerNorm's float32 output stays within 3e-6 of float64."""
    d = 1_048_573  # prime
    x_np = (np.random.default_rng(9).standard_normal((2, d)) + 3).astype(np.float32)
    y = tg.nn.functional.layer_norm(tg.tensor(x_np), [d]).numpy().astype(np.float64)
    x64 = x_np.astype(np.float64)
    y_ref = (x64 - x64.mean(axis=1, keepdims=True)) / np.sqrt(x64.var(axis=1, keepdims=True) + 1e-5)
    assert np.abs(y - y_ref).max() < 3e-6
