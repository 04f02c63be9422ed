"""Convolution (tinygrad_bn/ops/conv.py): PyTorch parity of outputs and input/weight/bias
gradients, gradcheck + gradgradcheck in float64, the graph node, and clear errors."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tests.helpers import check_grads, check_torch, needs_torch, torch
from tinygrad_bn.ops.conv import conv1d, conv2d, conv3d, conv_transpose1d, conv_transpose2d

F = torch.nn.functional
# PyTorch warns that 'same' with an even kernel copies the input (so do we, silently)
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")

# (input shape, weight shape, bias?, keyword arguments)
CONV2D_CASES = [
    ((2, 3, 7, 6), (4, 3, 3, 3), True, {}),
    ((2, 3, 7, 6), (4, 3, 3, 3), False, dict(stride=2, padding=1)),
    ((1, 3, 9, 8), (5, 3, 3, 2), True, dict(stride=(2, 1), padding=(1, 0))),          # batch 1, non-square
    ((2, 4, 9, 9), (6, 2, 3, 3), True, dict(padding=2, dilation=2, groups=2)),
    ((2, 4, 8, 7), (4, 1, 3, 3), False, dict(stride=2, padding=1, groups=4)),         # depthwise
    ((2, 4, 8, 7), (8, 1, 3, 3), True, dict(padding=1, groups=4)),                     # depthwise x2
    ((2, 3, 8, 8), (4, 3, 4, 3), True, dict(padding="same")),                          # even kernel
    ((2, 3, 7, 8), (4, 3, 3, 3), False, dict(padding="same", dilation=(1, 2))),
    ((2, 3, 7, 8), (4, 3, 3, 3), True, dict(padding="valid", stride=(1, 3))),
    ((2, 3, 5, 5), (2, 3, 1, 1), True, {}),                                            # 1x1
    ((2, 3, 5, 4), (2, 3, 5, 4), True, {}),                                            # kernel = input
    ((3, 7, 6), (4, 3, 3, 3), True, dict(padding=1)),                                  # unbatched
    ((2, 3, 11, 10), (4, 3, 3, 5), True, dict(stride=3, padding=(2, 1), dilation=(1, 2))),
]

CONV1D_CASES = [
    ((2, 3, 10), (4, 3, 3), True, {}),
    ((2, 4, 11), (6, 2, 3), False, dict(stride=2, padding=2, dilation=2, groups=2)),
    ((1, 3, 9), (4, 3, 4), True, dict(padding="same")),
    ((3, 9), (4, 3, 2), True, dict(stride=3)),                                         # unbatched
]


def _shapes(x_shape, w_shape, bias):
    return [x_shape, w_shape] + ([(w_shape[0],)] if bias else [])


def _fn(op, kwargs):
    return lambda x, w, b=None: op(x, w, b, **kwargs)


@needs_torch
@pytest.mark.parametrize("x_shape,w_shape,bias,kwargs", CONV2D_CASES)
def test_conv2d_matches_torch(device, x_shape, w_shape, bias, kwargs):
    check_torch(_fn(conv2d, kwargs), _fn(F.conv2d, kwargs), _shapes(x_shape, w_shape, bias),
                device=device)


@needs_torch
@pytest.mark.parametrize("x_shape,w_shape,bias,kwargs", CONV1D_CASES)
def test_conv1d_matches_torch(device, x_shape, w_shape, bias, kwargs):
    check_torch(_fn(conv1d, kwargs), _fn(F.conv1d, kwargs), _shapes(x_shape, w_shape, bias),
                device=device)


@needs_torch
def test_conv3d_matches_torch(device):
    kwargs = dict(stride=(1, 2, 1), padding=1, groups=2)
    check_torch(_fn(conv3d, kwargs), _fn(F.conv3d, kwargs), [(1, 4, 4, 5, 4), (2, 2, 3, 3, 2), (2,)],
                device=device)


@needs_torch
@pytest.mark.parametrize("x_shape,w_shape,bias,kwargs", [CONV2D_CASES[i] for i in (0, 3, 4, 6)])
def test_conv2d_float32_matches_torch(device, x_shape, w_shape, bias, kwargs):
    check_torch(_fn(conv2d, kwargs), _fn(F.conv2d, kwargs), _shapes(x_shape, w_shape, bias),
                device=device, dtype=np.float32, atol=1e-4, rtol=1e-4)


@needs_torch
@pytest.mark.parametrize("x_shape,w_shape,bias,kwargs", [
    ((2, 4, 5, 5), (4, 3, 3, 3), True, dict(stride=2, padding=1, output_padding=1)),
    ((2, 4, 4, 5), (4, 2, 3, 2), False, dict(groups=2, dilation=2)),
    ((4, 3, 3), (4, 2, 2, 2), True, dict(stride=(2, 3), output_padding=(1, 2))),       # unbatched
])
def test_conv_transpose2d_matches_torch(device, x_shape, w_shape, bias, kwargs):
    shapes = [x_shape, w_shape] + ([(w_shape[1] * kwargs.get("groups", 1),)] if bias else [])
    check_torch(_fn(conv_transpose2d, kwargs), _fn(F.conv_transpose2d, kwargs), shapes, device=device)


@needs_torch
def test_conv_transpose1d_matches_torch(device):
    kwargs = dict(stride=3, padding=1, output_padding=2, dilation=2)
    check_torch(_fn(conv_transpose1d, kwargs), _fn(F.conv_transpose1d, kwargs),
                [(2, 3, 5), (3, 2, 3), (2,)], device=device)


@pytest.mark.parametrize("fn,shapes", [
    (lambda x, w, b: conv2d(x, w, b, stride=2, padding=1, groups=2), [(1, 4, 5, 4), (2, 2, 2, 3), (2,)]),
    (lambda x, w: conv2d(x, w, padding="same", dilation=(1, 2)), [(1, 2, 4, 4), (2, 2, 2, 2)]),
    (lambda x, w: conv2d(x, w, stride=(1, 2), dilation=(2, 1)), [(2, 1, 5, 4), (2, 1, 2, 2)]),
    (lambda x, w, b: conv1d(x, w, b, stride=2, padding=1), [(2, 2, 6), (3, 2, 3), (3,)]),
    (lambda x, w: conv_transpose2d(x, w, stride=2, padding=1, output_padding=1), [(1, 2, 2, 3), (2, 2, 3, 2)]),
])
def test_conv_gradcheck_and_double_backward(device, fn, shapes):
    check_grads(fn, shapes, device=device)


@needs_torch
@pytest.mark.parametrize("x_grad,w_grad", [(False, True), (True, False)])
def test_conv_gradient_of_one_input_only(device, x_grad, w_grad):
    rng = np.random.default_rng(0)
    x, w, g = rng.standard_normal((2, 4, 6, 5)), rng.standard_normal((6, 2, 3, 3)), rng.standard_normal((2, 6, 3, 3))
    ours = [tg.tensor(x, device=device, requires_grad=x_grad), tg.tensor(w, device=device, requires_grad=w_grad)]
    theirs = [torch.tensor(x, requires_grad=x_grad), torch.tensor(w, requires_grad=w_grad)]
    conv2d(*ours, stride=2, padding=1, groups=2).backward(tg.tensor(g, device=device))
    F.conv2d(*theirs, stride=2, padding=1, groups=2).backward(torch.tensor(g))
    for a, b in zip(ours, theirs):
        assert (a.grad is None) == (b.grad is None)
        if b.grad is not None:
            np.testing.assert_allclose(a.grad.cpu().numpy(), b.grad.numpy(), atol=1e-10)


@needs_torch
def test_conv_double_backward_matches_torch(device):
    """A gradient penalty: d/d(x, w) of sum(dL/dx ** 2) + sum(dL/dw ** 2), through create_graph."""
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((2, 4, 6, 5)), rng.standard_normal((6, 2, 3, 2)), rng.standard_normal(6)

    def penalty(grad, x, w, b, conv):
        y = conv(x, w, b, stride=(2, 1), padding=1, dilation=(1, 2), groups=2)
        dx, dw = grad([(y * y).sum()], [x, w], create_graph=True)
        return (dx * dx).sum() + (dw * dw).sum()

    ours = [tg.tensor(a, device=device, requires_grad=True) for a in (x, w, b)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    penalty(tg.autograd.grad, *ours, conv2d).backward()
    penalty(torch.autograd.grad, *theirs, F.conv2d).backward()
    for a, t in zip(ours, theirs):
        np.testing.assert_allclose(a.grad.cpu().numpy(), t.grad.numpy(), atol=1e-8, rtol=1e-8)


@needs_torch
def test_conv_empty_batch(device):
    check_torch(_fn(conv2d, dict(padding=1)), _fn(F.conv2d, dict(padding=1)),
                [(0, 3, 5, 5), (4, 3, 3, 3), (4,)], device=device)


def test_conv_graph_node_attrs_and_saved_tensors():
    x = tg.randn(1, 3, 6, 6, requires_grad=True)
    w = tg.randn(4, 3, 3, 3, requires_grad=True)
    y = conv2d(x, w, stride=2, padding=(1, 0), dilation=1, groups=1)
    node = y.grad_fn
    assert node.name == "ConvolutionBackward"
    assert node.attrs == dict(stride=(2, 2), padding=(1, 0), dilation=(1, 1), groups=1)
    # the input and the weight are references, not copies; the column matrix is not kept
    assert node.saved_shapes() == {"x": (1, 3, 6, 6), "w": (4, 3, 3, 3)}
    assert node.saved_array("x") is x.data and node.saved_array("w") is w.data
    y.backward(tg.ones(*y.shape))
    assert node.saved_shapes() == {}  # everything is freed after backward


def test_conv_saves_only_what_the_needed_gradient_uses():
    x, w = tg.randn(1, 2, 5, 5), tg.randn(3, 2, 3, 3, requires_grad=True)
    assert set(conv2d(x, w).grad_fn.saved_shapes()) == {"x"}   # dw needs x only
    x.requires_grad_(True)
    w2 = tg.randn(3, 2, 3, 3)
    assert set(conv2d(x, w2).grad_fn.saved_shapes()) == {"w"}     # dx needs w only


def test_conv_double_backward_builds_conv_nodes():
    x = tg.randn(1, 2, 5, 5, dtype=tg.float64, requires_grad=True)
    w = tg.randn(3, 2, 3, 3, dtype=tg.float64, requires_grad=True)
    dx, dw = tg.autograd.grad([conv2d(x, w, padding=1).square().sum()], [x, w], create_graph=True)
    assert dx.requires_grad and dw.requires_grad
    (dx.sum() + dw.sum()).backward()
    assert x.grad is not None and w.grad is not None


def test_conv_without_grad_records_nothing(device):
    x, w = tg.randn(2, 3, 5, 5, device=device), tg.randn(4, 3, 3, 3, device=device)
    y = conv2d(x, w, padding=1)
    assert y.grad_fn is None and y.shape == (2, 4, 5, 5) and y.device == device


def test_conv_float32_stays_float32(device):
    y = conv2d(tg.randn(1, 2, 4, 4, device=device), tg.randn(3, 2, 3, 3, device=device), tg.zeros(3, device=device))
    assert y.dtype == tg.float32


X, W = (1, 4, 8, 8), (8, 3, 3, 3)


@pytest.mark.parametrize("call,exc,pattern", [
    (lambda: conv2d(tg.ones(*X), tg.ones(*W)), RuntimeError,
     r"conv2d: expected input\[1, 4, 8, 8\] to have 3 channels \(weight \[8, 3, 3, 3\], groups=1\), "
     r"but got 4 channels"),
    (lambda: conv2d(tg.ones(2, 3), tg.ones(*W)), RuntimeError,
     r"conv2d: Expected 3D \(unbatched\) or 4D \(batched\) input to conv2d, but got input of size: \[2, 3\]"),
    (lambda: conv2d(tg.ones(1, 3, 8, 8), tg.ones(8, 3, 3)), RuntimeError,
     r"conv2d: expected weight to be 4-D .* but got weight of size \[8, 3, 3\]"),
    (lambda: conv2d(tg.ones(1, 4, 8, 8), tg.ones(3, 2, 3, 3), groups=2), RuntimeError,
     r"conv2d: Given groups=2, expected weight to be divisible by 2 at dimension 0, but got weight "
     r"of size \[3, 2, 3, 3\]"),
    (lambda: conv2d(tg.ones(1, 3, 8, 8), tg.ones(4, 3, 3, 3), groups=2), RuntimeError,
     r"conv2d: expected input\[1, 3, 8, 8\] to have 6 channels \(weight \[4, 3, 3, 3\], groups=2\)"),
    (lambda: conv2d(tg.ones(1, 3, 8, 8), tg.ones(*W), groups=0), RuntimeError,
     r"conv2d: non-positive groups is not supported, got groups=0"),
    (lambda: conv2d(tg.ones(1, 3, 2, 2), tg.ones(*W)), RuntimeError,
     r"conv2d: Calculated padded input size per channel: \(2 x 2\). Kernel size: \(3 x 3\). "
     r"Kernel size can't be greater than actual input size"),
    (lambda: conv2d(tg.ones(1, 3, 4, 4), tg.ones(*W), dilation=2), RuntimeError,
     r"conv2d: Calculated padded input size per channel: \(4 x 4\). Kernel size: \(5 x 5\)"),
    (lambda: conv2d(tg.ones(1, 3, 8, 8), tg.ones(*W), stride=0), RuntimeError,
     r"conv2d: non-positive stride is not supported, got stride=\(0, 0\)"),
    (lambda: conv2d(tg.ones(1, 3, 8, 8), tg.ones(*W), padding=(-1, 0)), RuntimeError,
     r"conv2d: negative padding is not supported, got padding=\(-1, 0\)"),
    (lambda: conv2d(tg.ones(1, 3, 8, 8), tg.ones(*W), dilation=(1, 0)), RuntimeError,
     r"conv2d: dilation should be greater than zero, but got dilation=\(1, 0\)"),
    (lambda: conv2d(tg.ones(1, 3, 8, 8), tg.ones(*W), stride=(1, 1, 1)), RuntimeError,
     r"conv2d: expected stride to be a single integer value or a list of 2 values to match the "
     r"convolution dimensions, but got stride=\(1, 1, 1\)"),
    (lambda: conv2d(tg.ones(1, 3, 8, 8), tg.ones(*W), padding=1.5), RuntimeError,
     r"conv2d: expected padding to be a single integer value or a list of 2 values"),
    (lambda: conv2d(tg.ones(1, 3, 8, 8), tg.ones(*W), padding="same", stride=2), RuntimeError,
     r"conv2d: padding='same' is not supported for strided convolutions, got stride=\(2, 2\)"),
    (lambda: conv2d(tg.ones(1, 3, 8, 8), tg.ones(*W), padding="full"), RuntimeError,
     r"conv2d: Invalid padding string 'full', should be one of 'valid' or 'same'"),
    (lambda: conv2d(tg.ones(1, 3, 8, 8), tg.ones(*W), tg.ones(4)), RuntimeError,
     r"conv2d: Given weight of size \[8, 3, 3, 3\], expected bias to be 1-dimensional with 8 "
     r"elements, but got bias of size \[4\] instead"),
    (lambda: conv2d(tg.ones(1, 3, 8, 8, dtype=tg.float64), tg.ones(*W)), RuntimeError,
     r"conv2d: expected input and weight to have the same dtype, but got input float64 and weight float32"),
    (lambda: conv2d(tg.ones(1, 3, 8, 8), tg.ones(*W), tg.ones(8, dtype=tg.float64)), RuntimeError,
     r"conv2d: expected input and bias to have the same dtype"),
    (lambda: conv2d(tg.ones(1, 3, 8, 8, dtype=tg.int64), tg.ones(*W, dtype=tg.int64)), RuntimeError,
     r"conv2d: expected a floating-point input, got input of dtype int64"),
    (lambda: conv2d(tg.ones(1, 3, 8, 8), tg.ones(*W, device="fakegpu")), RuntimeError,
     r"conv2d: expected input and weight on the same device, but got input on cpu and weight on fakegpu"),
    (lambda: conv2d(np.ones((1, 3, 8, 8)), tg.ones(*W)), TypeError,
     r"conv2d: expected input to be a Tensor, got ndarray"),
    (lambda: conv1d(tg.ones(2, 3, 8, 8), tg.ones(4, 3, 3)), RuntimeError,
     r"conv1d: Expected 2D \(unbatched\) or 3D \(batched\) input to conv1d, but got input of size: \[2, 3, 8, 8\]"),
    (lambda: conv1d(tg.ones(2, 3, 2), tg.ones(4, 3, 3)), RuntimeError,
     r"conv1d: Calculated padded input size per channel: \(2\). Kernel size: \(3\)"),
    (lambda: conv_transpose2d(tg.ones(1, 3, 4, 4), tg.ones(4, 2, 3, 3)), RuntimeError,
     r"conv_transpose2d: expected input\[1, 3, 4, 4\] to have 4 channels"),
    (lambda: conv_transpose2d(tg.ones(1, 4, 4, 4), tg.ones(4, 2, 3, 3), stride=2, output_padding=2),
     RuntimeError, r"conv_transpose2d: output padding must be non-negative and smaller than either "
                   r"stride or dilation, but got output_padding=\(2, 2\), stride=\(2, 2\)"),
    (lambda: conv_transpose2d(tg.ones(1, 4, 4, 4), tg.ones(4, 2, 3, 3), tg.ones(3)), RuntimeError,
     r"conv_transpose2d: Given weight of size \[4, 2, 3, 3\], expected bias to be 1-dimensional with 2 elements"),
])
def test_conv_bad_input_gets_a_clear_error(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


# ---- the algorithms inside (issue 14): each one exercised, and the paths agree -----------------
from tinygrad_bn.ops import conv as conv_module  # noqa: E402

# (dy shape, w shape, output size, stride, padding, dilation, groups, the path expected)
TRANSPOSE_GEOMETRIES = [
    ((2, 4, 5, 6), (4, 3, 3, 3), (5, 6), (1, 1), (1, 1), (1, 1), 1, "conv"),      # ResNet 3x3
    ((1, 6, 3, 4), (6, 2, 3, 2), (7, 3), (1, 1), (0, 1), (2, 1), 2, "conv"),      # dilation, groups
    ((2, 4, 3, 3), (4, 1, 3, 3), (5, 5), (1, 1), (0, 0), (1, 1), 4, "conv"),      # depthwise, valid
    ((2, 4, 3, 4), (4, 3, 3, 3), (5, 7), (2, 2), (1, 1), (1, 1), 1, "col2im"),    # stride 2
    ((2, 4, 7, 7), (4, 3, 1, 1), (5, 5), (1, 1), (1, 1), (1, 1), 1, "col2im"),    # p > d(K-1)
    ((2, 4, 3, 3), (4, 3, 2, 2), (6, 6), (1, 1), (0, 0), (2, 2), 1, "col2im"),    # output_padding
]


@pytest.mark.parametrize("y_shape,w_shape,size,stride,padding,dilation,groups,path",
                         TRANSPOSE_GEOMETRIES)
def test_conv_transpose_paths_agree_and_each_is_chosen(y_shape, w_shape, size, stride, padding,
                                                       dilation, groups, path):
    """The stride-1 input gradient as one convolution with flipped weights equals col2im, and the
    choice between them goes where the module says (both are exercised by this list)."""
    rng = np.random.default_rng(0)
    y, w = rng.standard_normal(y_shape), rng.standard_normal(w_shape)
    as_conv = conv_module._transpose_is_a_conv(y_shape, w_shape, size, stride, padding, dilation)
    assert as_conv == (path == "conv")
    reference = conv_module._col2im(np, y, w, size, stride, padding, dilation, groups)
    assert reference.shape[2:] == size
    if as_conv:
        fast = conv_module._transpose_as_conv(np, y, w, padding, dilation, groups)
        np.testing.assert_allclose(fast, reference, atol=1e-12, rtol=1e-12)


@needs_torch
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
@pytest.mark.parametrize("x_shape,w_shape,kwargs", [
    ((3, 16, 9, 7), (8, 16, 3, 3), dict(padding=1)),                               # odd sizes
    ((1, 4, 6, 6), (6, 2, 3, 3), dict(padding=2, dilation=2, groups=2)),           # batch 1
    ((2, 3, 7, 5), (4, 3, 1, 1), dict(padding=1)),                                 # p > d(K-1)
    ((2, 3, 8, 8), (4, 3, 3, 3), dict(stride=2, padding=1)),                       # stride 2
    ((2, 5, 6, 7), (5, 1, 3, 3), dict(padding=1, groups=5)),                       # depthwise
])
def test_conv_input_gradient_paths_match_torch(device, dtype, tol, x_shape, w_shape, kwargs):
    check_torch(_fn(conv2d, kwargs), _fn(F.conv2d, kwargs), [x_shape, w_shape], device=device,
                dtype=dtype, atol=tol, rtol=tol)


@pytest.mark.parametrize("fn,shapes", [
    (lambda x, w: conv2d(x, w, padding=1, dilation=(2, 1), groups=2), [(1, 4, 5, 4), (2, 2, 2, 3)]),
    (lambda x, w: conv_transpose2d(x, w, padding=1, groups=2), [(2, 2, 3, 3), (2, 1, 3, 3)]),
])
def test_conv_stride1_paths_gradcheck_and_double_backward(device, fn, shapes):
    check_grads(fn, shapes, device=device)


@needs_torch
def test_conv_non_contiguous_input_and_weight():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 3, 6, 7)), rng.standard_normal((3, 4, 3, 3))
    ours_x, ours_w = tg.tensor(x, requires_grad=True), tg.tensor(w, requires_grad=True)
    theirs_x, theirs_w = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    # transposed views: the channels-last and the flipped-weight copies must not assume a layout
    out = conv2d(ours_x.transpose(2, 3), ours_w.transpose(0, 1), padding=1)
    ref = F.conv2d(theirs_x.transpose(2, 3), theirs_w.transpose(0, 1), padding=1)
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), atol=1e-10)
    out.sum().backward()
    ref.sum().backward()
    np.testing.assert_allclose(ours_x.grad.numpy(), theirs_x.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(ours_w.grad.numpy(), theirs_w.grad.numpy(), atol=1e-10)


def test_merge_runs_merges_only_contiguous_neighbours():
    a = np.arange(2 * 5 * 6 * 4).reshape(2, 5, 6, 4)
    windows = conv_module.sliding_windows(a, 1, (3, 4), (3, 3), (1, 1), (1, 1))
    rows = windows.transpose(2, 3, 4, 0, 1, 5)          # (N, Qh, Qw, Kh, Kw, C), as im2col reads
    merged = conv_module._merge_runs(rows)
    assert merged.shape == (2, 3, 4, 3, 12)              # Kw and C merged: 3 taps x 4 channels
    np.testing.assert_array_equal(merged.reshape(rows.shape), rows)
    assert conv_module._merge_runs(a).shape == (a.size,)
    assert conv_module._merge_runs(a[:, :, ::2]).shape == (30, 4)   # one stride of 8 items
    assert conv_module._merge_runs(a[:, :, :5]).shape == (10, 20)


def test_conv_outputs_do_not_alias_the_reused_column_buffer():
    """The column matrix is scratch reused by the next call: nothing returned may point into it."""
    x1, w1 = tg.randn(2, 3, 6, 6, dtype=tg.float64), tg.randn(4, 3, 3, 3, dtype=tg.float64)
    x2, w2 = tg.randn(1, 2, 9, 9, dtype=tg.float64), tg.randn(2, 2, 3, 3, dtype=tg.float64)
    y1 = conv2d(x1, w1, padding=1)
    first = y1.numpy().copy()
    conv2d(x2, w2, padding=1)                            # reuses (and overwrites) the scratch
    np.testing.assert_array_equal(y1.numpy(), first)
    for use in ("columns", "padded"):
        scratch = conv_module._scratch(np, (1,), np.uint8, use).base
        assert not np.shares_memory(y1.numpy(), scratch)


def test_conv_padded_scratch_has_a_zero_border_after_reuse():
    """The padded buffer is reused and only its border zeroed: a call after a larger one whose
    values filled the same memory must still see zeros outside the input."""
    big = np.full((2, 3, 9, 9), 7.0)
    conv_module._padded_channels_last(np, big, (0, 0), 1)        # fill the buffer with 7s
    small = np.ones((1, 2, 3, 4))
    padded = conv_module._padded_channels_last(np, small, (2, 1), 2)
    expected = np.zeros((1, 7, 6, 2))
    expected[:, 2:5, 1:5] = 1
    np.testing.assert_array_equal(padded.reshape(1, 7, 6, 2), expected)
