"""GhostBatchNorm1d/2d against a plain-NumPy float64 reference of the paper's algorithm (BatchNorm
per contiguous ghost batch, one EMA step per ghost batch) and against torch.nn.BatchNorm run on
each `x.split(vbs)` chunk in sequence. The shared matrix adds gradcheck/gradgradcheck (with a
kept and a merged remainder), backend parity, eval independence, state_dict and repr."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn.autograd import gradcheck, gradgradcheck
from tinygrad_bn.norms.batchnorm import BatchNorm1d, BatchNorm2d
from tinygrad_bn.norms.ghostbn import (GhostBatchNorm1d, GhostBatchNorm2d, GhostNormalizeBackward,
                                       _blocks, composed_ghost_backward, ghost_batch_norm,
                                       ghost_batch_sizes)
from tests.helpers import assert_close, needs_torch, to_numpy, torch

C = 3
TOL = {"atol": 1e-10, "rtol": 1e-10}


def reference_step(x, g, w, b, sizes, eps, running, momentum):
    """Plain NumPy float64: y, dx, dw, db of BatchNorm on each ghost batch, and the running
    statistics after one EMA step per ghost batch. running = [mean, var, num_batches_tracked]."""
    axes = (0,) + tuple(range(2, x.ndim))
    pshape = (1, -1) + (1,) * (x.ndim - 2)
    w_, b_ = (w if w is not None else np.ones(C)).reshape(pshape), (b if b is not None else np.zeros(C)).reshape(pshape)
    y, dx = np.empty_like(x), np.empty_like(x)
    dw, db = np.zeros(C), np.zeros(C)
    start = 0
    for size in sizes:
        xb, gb = x[start:start + size], g[start:start + size]
        m = xb.size // C
        mu, var = xb.mean(axes, keepdims=True), xb.var(axes, keepdims=True)
        inv = 1 / np.sqrt(var + eps)
        x_hat = (xb - mu) * inv
        y[start:start + size] = x_hat * w_ + b_
        g_hat = gb * w_
        dx[start:start + size] = inv * (g_hat - g_hat.mean(axes, keepdims=True)
                                        - x_hat * (g_hat * x_hat).mean(axes, keepdims=True))
        dw += (gb * x_hat).sum(axes)
        db += gb.sum(axes)
        if running is not None:
            running[2] += 1
            f = momentum if momentum is not None else 1 / running[2]
            running[0] = (1 - f) * running[0] + f * mu.ravel()
            running[1] = (1 - f) * running[1] + f * var.ravel() * m / (m - 1)
        start += size
    return y, dx, dw, db


def _layer_class(ndim):
    return GhostBatchNorm2d if ndim == 4 else GhostBatchNorm1d


CASES = [  # (input shape, layer options, expected ghost batch sizes)
    pytest.param((8, C, 2, 2), {"virtual_batch_size": 2}, [2, 2, 2, 2], id="2d-divisible"),
    pytest.param((10, C, 2, 1), {"virtual_batch_size": 4}, [4, 4, 2], id="2d-remainder-kept"),
    pytest.param((9, C), {"virtual_batch_size": 4}, [4, 5], id="1d-single-value-remainder-merged"),
    pytest.param((9, C, 2), {"virtual_batch_size": 4}, [4, 4, 1], id="3d-one-sample-remainder-kept"),
    pytest.param((9, C, 2), {"virtual_batch_size": 4, "remainder": "merge"}, [4, 5], id="3d-merge"),
    pytest.param((11, C), {"virtual_batch_size": 3, "remainder": "separate", "affine": False},
                 [3, 3, 3, 2], id="1d-separate-no-affine"),
    pytest.param((7, C, 2, 2), {"virtual_batch_size": 3, "momentum": None}, [3, 3, 1], id="2d-cumulative"),
    pytest.param((5, C, 3), {"virtual_batch_size": 32}, [5], id="batch-smaller-than-vbs"),
]


@pytest.mark.parametrize("shape, options, sizes", CASES)
def test_matches_the_numpy_reference_over_several_steps(shape, options, sizes):
    layer = _layer_class(len(shape))(C, **options).double()
    assert layer.ghost_batch_sizes(shape[0], int(np.prod(shape[2:]))) == sizes
    rng = np.random.default_rng(0)
    w = rng.uniform(0.5, 1.5, C) * rng.choice([-1, 1], C) if layer.affine else None
    b = rng.uniform(-1, 1, C) if layer.affine else None
    if layer.affine:
        with tg.no_grad():
            layer.weight.data[...], layer.bias.data[...] = w, b
    running = [np.zeros(C), np.ones(C), 0]
    for step in range(4):
        x = rng.standard_normal(shape) * (1 + step) + step
        g = rng.standard_normal(shape)
        xt = tg.tensor(x, requires_grad=True)
        y = layer(xt)
        y.backward(tg.tensor(g))
        ry, rdx, rdw, rdb = reference_step(x, g, w, b, sizes, layer.eps, running, layer.momentum)
        assert_close(y, ry, **TOL, what=f"output, step {step}")
        assert_close(xt.grad, rdx, **TOL, what=f"dx, step {step}")
        if layer.affine:
            assert_close(layer.weight.grad, rdw, **TOL, what=f"dw, step {step}")
            assert_close(layer.bias.grad, rdb, **TOL, what=f"db, step {step}")
            layer.zero_grad()
        assert_close(layer.running_mean, running[0], **TOL, what=f"running_mean, step {step}")
        assert_close(layer.running_var, running[1], **TOL, what=f"running_var, step {step}")
        assert int(layer.num_batches_tracked.item()) == running[2] == len(sizes) * (step + 1)
    # eval: plain BatchNorm eval with the running statistics
    layer.eval()
    x = rng.standard_normal(shape)
    pshape = (1, -1) + (1,) * (len(shape) - 2)
    expected = (x - running[0].reshape(pshape)) / np.sqrt(running[1].reshape(pshape) + layer.eps)
    if layer.affine:
        expected = expected * w.reshape(pshape) + b.reshape(pshape)
    assert_close(layer(tg.tensor(x)), expected, **TOL, what="eval output")


@needs_torch
@pytest.mark.parametrize("shape, vbs", [((10, C, 2, 2), 4), ((12, C), 3), ((7, C, 5), 2)])
def test_matches_torch_batchnorm_run_on_each_split_chunk_in_sequence(shape, vbs):
    """remainder="separate" is exactly `for chunk in x.split(vbs): torch_bn(chunk)`."""
    ours = _layer_class(len(shape))(C, virtual_batch_size=vbs, remainder="separate", momentum=0.2).double()
    theirs = (torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d)(C, momentum=0.2).double()
    rng = np.random.default_rng(1)
    w, b = rng.uniform(0.5, 1.5, C), rng.uniform(-1, 1, C)
    with tg.no_grad():
        ours.weight.data[...], ours.bias.data[...] = w, b
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(w))
        theirs.bias.copy_(torch.tensor(b))
    for step in range(3):
        x, g = rng.standard_normal(shape) * 2 + step, rng.standard_normal(shape)
        xt, tx = tg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        y = ours(xt)
        ty = torch.cat([theirs(chunk) for chunk in tx.split(vbs)])
        y.backward(tg.tensor(g))
        ty.backward(torch.tensor(g))
        assert_close(y, ty, **TOL, what=f"output, step {step}")
        assert_close(xt.grad, tx.grad, **TOL, what=f"dx, step {step}")
        assert_close(ours.weight.grad, theirs.weight.grad, **TOL, what="dw")
        assert_close(ours.bias.grad, theirs.bias.grad, **TOL, what="db")
        ours.zero_grad(), theirs.zero_grad()
        for (name, a), bt in zip(ours.named_buffers(), theirs.buffers()):
            assert_close(a, bt, **TOL, what=f"{name}, step {step}")
    ours.eval(), theirs.eval()
    x = rng.standard_normal(shape)
    assert_close(ours(tg.tensor(x)), theirs(torch.tensor(x)), **TOL, what="eval")


@pytest.mark.parametrize("n, vbs, per_sample, remainder, sizes", [
    (10, 4, 1, "separate", [4, 4, 2]),
    (10, 4, 1, "auto", [4, 4, 2]),
    (10, 4, 1, "merge", [4, 6]),
    (9, 4, 1, "auto", [4, 5]),       # a remainder with one value per channel is merged
    (9, 4, 2, "auto", [4, 4, 1]),    # one sample but two values per channel: kept
    (9, 4, 1, "separate", [4, 4, 1]),
    (8, 4, 1, "merge", [4, 4]),
    (3, 4, 1, "merge", [3]),
    (4, 4, 1, "auto", [4]),
    (1, 4, 1, "auto", [1]),
    (0, 4, 1, "auto", [0]),
    (257, 128, 1, "auto", [128, 129]),
])
def test_ghost_batch_sizes(n, vbs, per_sample, remainder, sizes):
    assert ghost_batch_sizes(n, vbs, per_sample, remainder) == sizes
    assert sum(sizes) == n


def test_blocks_group_equal_ghost_batches():
    assert _blocks([4, 4, 4]) == ((0, 3, 4),)
    assert _blocks([4, 4, 2]) == ((0, 2, 4), (8, 1, 2))
    assert _blocks([4, 5]) == ((0, 1, 4), (4, 1, 5))


def test_a_one_value_remainder_raises_only_with_remainder_separate():
    x = tg.tensor(np.random.default_rng(0).standard_normal((9, C)))
    with pytest.raises(ValueError, match=r"^GhostBatchNorm1d: Expected more than 1 value per channel when "
                                         r"training, got input size \(1, 3\)$"):
        GhostBatchNorm1d(C, virtual_batch_size=4, remainder="separate")(x)
    for remainder in ("auto", "merge"):
        layer = GhostBatchNorm1d(C, virtual_batch_size=4, remainder=remainder)
        layer(x)
        assert int(layer.num_batches_tracked.item()) == 2
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        GhostBatchNorm1d(C, virtual_batch_size=4)(x[:1])  # one value in the whole batch


def test_the_whole_layer_is_one_graph_node():
    for n in (8, 10):  # divisible (one block) and with a remainder (two blocks)
        x = tg.tensor(np.random.default_rng(0).standard_normal((n, C, 2, 2)), requires_grad=True)
        layer = GhostBatchNorm2d(C, virtual_batch_size=4)
        y = layer(x)
        node = y.grad_fn
        assert node.name == "GhostBatchNorm2dBackward"
        assert node.next_edges[0] == (None, x)  # straight to the leaf: no split, no cat
        assert all(edge[0] is None for edge in node.next_edges)
        shapes = node.saved_shapes()
        k = len(layer.ghost_batch_sizes(n, 4))
        assert shapes["chunk_mean"] == shapes["chunk_invstd"] == (k, C)
        assert shapes["x"] == (n, C, 2, 2)
        gx, = tg.autograd.grad([y], [x], [tg.ones_like(y)], create_graph=True)
        assert gx.grad_fn.name == "GhostNormalizeBackwardBackward"


def test_a_batch_within_one_ghost_batch_is_batchnorm():
    rng = np.random.default_rng(2)
    x, g = rng.standard_normal((6, C, 2, 2)), rng.standard_normal((6, C, 2, 2))
    ghost, bn = GhostBatchNorm2d(C, virtual_batch_size=6).double(), BatchNorm2d(C).double()
    outs = []
    for layer in (ghost, bn):
        xt = tg.tensor(x, requires_grad=True)
        y = layer(xt)
        y.backward(tg.tensor(g))
        outs.append((to_numpy(y), to_numpy(xt.grad), to_numpy(layer.weight.grad), to_numpy(layer.running_var)))
    for a, b in zip(*outs):
        assert_close(a, b, atol=1e-13, rtol=1e-13)


@pytest.mark.parametrize("shape, vbs, remainder", [((7, C, 2), 3, "separate"), ((9, C), 4, "auto"),
                                                   ((8, C, 2, 2), 2, "auto")])
@pytest.mark.parametrize("affine", [True, False])
def test_fused_backward_equals_the_composed_one(shape, vbs, remainder, affine):
    rng = np.random.default_rng(3)
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    w = rng.uniform(0.5, 1.5, C)
    sizes = ghost_batch_sizes(shape[0], vbs, int(np.prod(shape[2:])), remainder)
    layer = _layer_class(len(shape))(C, virtual_batch_size=vbs, remainder=remainder, affine=affine).double()
    y = layer(tg.tensor(x, requires_grad=True))
    node = y.grad_fn
    weight = [tg.tensor(w)] if affine else []
    fused = GhostNormalizeBackward.apply(
        tg.tensor(dy), tg.tensor(x), *weight, chunk_mean=node.saved_array("chunk_mean"),
        chunk_invstd=node.saved_array("chunk_invstd"), blocks=_blocks(sizes), eps=layer.eps,
        has_weight=affine, has_bias=affine)
    composed = composed_ghost_backward(tg.tensor(dy), tg.tensor(x), *weight, blocks=_blocks(sizes),
                                       eps=layer.eps, has_bias=affine)
    composed = [c for c in composed if c is not None]
    assert len(fused) == len(composed)
    for f, c in zip(fused, composed):
        assert_close(f, c, atol=1e-12, rtol=1e-12)


def test_gradcheck_and_gradgradcheck_with_a_remainder_and_no_affine():
    layer = GhostBatchNorm1d(C, virtual_batch_size=3, remainder="separate", affine=False).double()
    x = tg.tensor(np.random.default_rng(4).standard_normal((7, C, 2)), requires_grad=True)
    assert gradcheck(lambda t: layer(t), [x])
    assert gradgradcheck(lambda t: layer(t), [x])


def test_without_running_statistics_eval_keeps_using_ghost_batches():
    layer = GhostBatchNorm2d(C, virtual_batch_size=2, track_running_stats=False).double()
    x = tg.tensor(np.random.default_rng(5).standard_normal((6, C, 2, 2)))
    train_out = to_numpy(layer(x))
    layer.eval()
    assert_close(layer(x), train_out, atol=0, rtol=0)
    assert list(layer.state_dict()) == ["weight", "bias"]


def test_frozen_statistics_use_the_running_ones_and_do_not_move():
    layer = GhostBatchNorm2d(C, virtual_batch_size=2).double().freeze_running_stats()
    x = np.random.default_rng(6).standard_normal((6, C, 2, 2))
    y = layer(tg.tensor(x))
    assert_close(y, x / np.sqrt(1 + layer.eps), atol=1e-12)
    assert int(layer.num_batches_tracked.item()) == 0
    np.testing.assert_array_equal(to_numpy(layer.running_mean), np.zeros(C))


def test_an_empty_batch_counts_one_step_and_changes_nothing_else():
    layer = GhostBatchNorm2d(C, virtual_batch_size=2)
    y = layer(tg.tensor(np.zeros((0, C, 2, 2), np.float32)))
    assert y.shape == (0, C, 2, 2)
    assert int(layer.num_batches_tracked.item()) == 1
    np.testing.assert_array_equal(to_numpy(layer.running_var), np.ones(C))


def test_functional_form_matches_the_module():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((10, C, 2))
    layer = GhostBatchNorm1d(C, virtual_batch_size=4, momentum=0.3).double()
    rm, rv = tg.tensor(np.zeros(C)), tg.tensor(np.ones(C))
    y = ghost_batch_norm(tg.tensor(x), rm, rv, None, None, training=True, momentum=0.3,
                         virtual_batch_size=4)
    assert_close(y, layer(tg.tensor(x)), atol=1e-13)
    assert_close(rm, layer.running_mean, atol=1e-13)
    assert_close(rv, layer.running_var, atol=1e-13)
    layer.eval()
    assert_close(ghost_batch_norm(tg.tensor(x), rm, rv, training=False), layer(tg.tensor(x)), atol=1e-13)
    with pytest.raises(ValueError, match="momentum=None"):
        ghost_batch_norm(tg.tensor(x), rm, rv, training=True, momentum=None)


def test_construction_and_input_errors():
    with pytest.raises(ValueError, match="GhostBatchNorm2d: virtual_batch_size must be a positive int, got 0"):
        GhostBatchNorm2d(C, virtual_batch_size=0)
    with pytest.raises(ValueError, match="virtual_batch_size must be a positive int, got True"):
        GhostBatchNorm2d(C, virtual_batch_size=True)
    with pytest.raises(ValueError, match="remainder must be one of 'auto', 'separate', 'merge', got 'drop'"):
        GhostBatchNorm1d(C, remainder="drop")
    with pytest.raises(ValueError, match=r"^GhostBatchNorm2d\(3\): expected 4D input \(got 3D input\); input of shape \[2, 3, 2\]$"):
        GhostBatchNorm2d(C)(tg.tensor(np.ones((2, C, 2), np.float32)))
    with pytest.raises(ValueError, match=r"^GhostBatchNorm1d\(3\): expected 2D or 3D input \(got 4D input\)"):
        GhostBatchNorm1d(C)(tg.tensor(np.ones((2, C, 2, 2), np.float32)))
    with pytest.raises(RuntimeError, match=r"GhostBatchNorm1d: running_mean should contain 3 elements not 4 \(expected an input with 4 channels in dim 1, got input of shape \(2, 3\)\)"):
        GhostBatchNorm1d(4)(tg.tensor(np.ones((2, C), np.float32)))
    with pytest.raises(ValueError, match="batch_norm eps must be positive during training, but got 0"):
        GhostBatchNorm1d(C, eps=0)(tg.tensor(np.ones((2, C), np.float32)))


def test_repr_and_state_dict():
    layer = GhostBatchNorm2d(8, virtual_batch_size=32)
    assert repr(layer) == ("GhostBatchNorm2d(8, virtual_batch_size=32, eps=1e-05, momentum=0.1, affine=True, "
                           "bias=True, track_running_stats=True, remainder='auto')")
    assert list(layer.state_dict()) == list(BatchNorm2d(8).state_dict())
    assert isinstance(GhostBatchNorm1d(4), tg.nn.Module) and not isinstance(GhostBatchNorm1d(4), BatchNorm1d)


def test_float32_stays_float32_and_close_to_float64():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((10, C, 4, 4)) * 3 + 1
    y32 = GhostBatchNorm2d(C, virtual_batch_size=4)(tg.tensor(x.astype(np.float32)))
    y64 = GhostBatchNorm2d(C, virtual_batch_size=4).double()(tg.tensor(x))
    assert y32.dtype == np.float32
    assert_close(y32, y64, atol=1e-5, rtol=1e-5)
