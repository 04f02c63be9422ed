"""Shape ops (tinygrad_bn/ops/shape.py), the padding modes of pad: PyTorch parity of values and
gradients, gradcheck + gradgradcheck in float64 (GatherAxis and ScatterAddAxis are each other's
adjoint), negative widths that crop, and PyTorch's errors."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tests.helpers import check_grads, check_torch, needs_torch, torch

MODES = ["constant", "reflect", "replicate", "circular"]
# (input shape, pad): 1-D, 2-D and 3-D padding, batched and not, asymmetric, zero widths, crops
PAD_CASES = [
    ((2, 3, 5), (2, 1)),
    ((3, 5), (4, 4)),                     # unbatched, padding up to n - 1 on each side
    ((2, 3, 4, 5), (1, 2, 3, 0)),
    ((3, 4, 5), (0, 0, 2, 1)),
    ((1, 2, 3, 4, 5), (1, 1, 2, 0, 1, 2)),
    ((2, 4, 6), (-1, 3)),                 # a negative width crops that side first
    ((2, 2, 5, 4), (2, -1, -2, 1)),
    ((0, 3, 4), (1, 2)),                  # an empty batch
]


def _pad(fn, p, mode):
    return lambda x: fn(x, p, mode=mode)


@needs_torch
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape,p", PAD_CASES, ids=str)
def test_pad_modes_match_torch(device, shape, p, mode):
    check_torch(_pad(tg.pad, p, mode), _pad(torch.nn.functional.pad, p, mode), [shape], device=device,
                atol=1e-12, rtol=0)


@needs_torch
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("p", [(-1, 2), (2, -1), (-2, -1), (-1, 0), (-3, -1), (-4, 1), (3, 3), (4, 0)])
def test_pad_edge_widths_match_torch(mode, p):
    """Each mode at its limits on a length-4 dim: full-width crops, the widest legal padding."""
    if mode == "circular" and p == (-4, 1):
        pytest.skip("PyTorch reads uninitialised memory here; we raise")
    x = np.arange(4.).reshape(1, 1, 4)
    try:
        ref = torch.nn.functional.pad(torch.tensor(x), p, mode=mode)
    except RuntimeError:
        with pytest.raises(RuntimeError, match="pad: "):
            tg.pad(tg.tensor(x), p, mode=mode)
        return
    np.testing.assert_array_equal(tg.pad(tg.tensor(x), p, mode=mode).numpy(), ref.numpy())


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("shape,p", [((1, 2, 5), (3, 2)), ((1, 3, 4), (-1, 2)), ((2, 3, 4), (1, 2, 2, 1)),
                                     ((1, 1, 2, 3, 3), (1, 1, 0, 2, 1, 0))], ids=str)
def test_pad_modes_gradcheck_and_double_backward(device, shape, p, mode):
    check_grads(lambda x: tg.pad(x, p, mode=mode) * tg.pad(x, p, mode=mode), [shape], device=device)


def test_pad_modes_float32_stay_float32(device):
    x = tg.randn(2, 3, 4, device=device)
    for mode in MODES:
        assert tg.pad(x, (1, 2), mode=mode).dtype == tg.float32


def test_pad_reflect_graph_is_one_gather_per_padded_dim():
    x = tg.randn(1, 2, 4, 5, requires_grad=True)
    y = tg.pad(x, (1, 1, 0, 0), mode="reflect")
    assert y.grad_fn.name == "GatherAxisBackward" and y.grad_fn.attrs["axis"] == 3
    assert y.grad_fn.next_edges[0] == (None, x)  # the width-0 dim is skipped: one node, fed by the leaf


@needs_torch
@pytest.mark.parametrize("call,error,torch_error,match", [
    (lambda F, x: F.pad(x, (4, 0), mode="reflect"), RuntimeError, RuntimeError,
     r"pad: padding size should be less than the corresponding input dimension for mode 'reflect', "
     r"but got padding \(4, 0\) at dim 2 of input shape \[2, 3, 4\]"),
    (lambda F, x: F.pad(x, (5, 0), mode="circular"), RuntimeError, RuntimeError,
     r"pad: padding value causes wrapping around more than once for mode 'circular'"),
    (lambda F, x: F.pad(x, (1, 1), mode="reflect", value=1.0), RuntimeError, RuntimeError,
     r"pad: padding mode 'reflect' doesn't take in value argument, got value=1.0"),
    (lambda F, x: F.pad(x, (1, 1), mode="mirror"), NotImplementedError, NotImplementedError,
     r"pad: mode 'mirror' is not supported; expected 'constant', 'reflect', 'replicate' or 'circular'"),
    (lambda F, x: F.pad(x, (1,), mode="reflect"), RuntimeError, RuntimeError,
     r"pad: padding length must be divisible by 2, got 1"),
    (lambda F, x: F.pad(x, (1, 1, 1, 1, 1, 1, 1, 1)), RuntimeError, RuntimeError,
     r"pad: padding length must be even and at most 2\*ndim \(6\), got 8"),
    (lambda F, x: F.pad(x, (1, 1, 1, 1, 1, 1), mode="replicate"), NotImplementedError, NotImplementedError,
     r"pad: padding size 6 is not supported for 3D input in mode 'replicate'"),
    (lambda F, x: F.pad(x[:, :0], (1, 1), mode="replicate"), RuntimeError, RuntimeError,
     r"pad: mode 'replicate' expects a 2D or 3D \(batch mode\) input with possibly 0 batch size and other "
     r"non-zero dimensions, got input shape \[2, 0, 4\]"),
    (lambda F, x: F.pad(x, (-3, -2)), RuntimeError, RuntimeError,
     r"pad: the input size 4 at dim 2, plus negative padding \(-3, -2\), results in a negative output size -1"),
    (lambda F, x: F.pad(x, (-3, -1), mode="reflect"), RuntimeError, RuntimeError,
     r"pad: input size 4 at dim 2 is too small for padding \(-3, -1\) in mode 'reflect': the output size "
     r"would be 0"),
], ids=range(10))
def test_pad_errors_match_torch_types(call, error, torch_error, match):
    with pytest.raises(torch_error):
        call(torch.nn.functional, torch.zeros(2, 3, 4))
    with pytest.raises(error, match=match):
        call(tg.nn.functional, tg.zeros(2, 3, 4))
