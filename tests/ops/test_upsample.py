"""Interpolation (tinygrad_bn/ops/upsample.py): PyTorch parity of outputs and gradients over a grid of
sizes, scale factors (integer, non-integer, downsampling) and align_corners, gradcheck +
gradgradcheck in float64, and clear errors for bad arguments."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tests.helpers import check_grads, check_torch, needs_torch, torch
from tinygrad_bn.ops.upsample import interpolate

F = torch.nn.functional

RESIZES = [dict(scale_factor=2), dict(scale_factor=0.5), dict(scale_factor=1.7), dict(scale_factor=0.45),
           dict(scale_factor=2.5, recompute_scale_factor=True), dict(scale_factor=1.3, recompute_scale_factor=True),
           dict(size=11), dict(size=3), dict(size=1)]
CASES = ([("nearest", None, s) for s in [(1, 2, 7), (2, 2, 5, 6), (1, 1, 4, 5, 3), (1, 1, 13, 9)]]
         + [("linear", ac, (2, 2, 7)) for ac in (False, True)]
         + [("bilinear", ac, s) for ac in (False, True) for s in [(2, 2, 5, 6), (1, 1, 13, 9)]])


@needs_torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("resize", RESIZES, ids=str)
@pytest.mark.parametrize("mode,align_corners,shape", CASES)
def test_interpolate_matches_torch(mode, align_corners, shape, resize, dtype):
    kw = dict(resize, mode=mode, align_corners=align_corners)
    check_torch(lambda x: interpolate(x, **kw), lambda x: F.interpolate(x, **kw), [shape], dtype=dtype,
                atol=1e-12 if dtype == np.float64 else 1e-5)


@needs_torch
@pytest.mark.parametrize("mode,align_corners,shape", [("nearest", None, (1, 2, 5, 6)), ("bilinear", True, (1, 2, 5, 6))])
def test_interpolate_on_every_device_matches_torch(device, mode, align_corners, shape):
    kw = dict(scale_factor=(1.5, 0.7), mode=mode, align_corners=align_corners)
    check_torch(lambda x: interpolate(x, **kw), lambda x: F.interpolate(x, **kw), [shape], device=device)


@needs_torch
@pytest.mark.parametrize("n", [7, 24, 26, 30, 31])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_nearest_indices_match_torch_for_awkward_ratios(n, dims):
    """Index rounding (float32 scale, exact integers, 2-D shortcuts) on ratios where it matters."""
    for kw in [dict(size=88), dict(scale_factor=1.3), dict(scale_factor=3.3, recompute_scale_factor=True),
               dict(scale_factor=0.3)]:
        shape = (1, 1, n) + (4,) * (dims - 1)
        x = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
        for dtype in (np.float64, np.float32):
            kw2 = dict(kw) if "size" not in kw else dict(size=(88,) + (2,) * (dims - 1))
            ours = interpolate(tg.tensor(x.astype(dtype)), **kw2).numpy()
            theirs = F.interpolate(torch.tensor(x.astype(dtype)), **kw2).numpy()
            np.testing.assert_array_equal(ours, theirs, err_msg=f"{kw2} {dtype}")


@needs_torch
def test_nearest_uint8_matches_torch():
    x = np.random.default_rng(0).integers(0, 255, (1, 2, 5, 4)).astype(np.uint8)
    np.testing.assert_array_equal(interpolate(tg.tensor(x), scale_factor=1.5).numpy(),
                                  F.interpolate(torch.tensor(x), scale_factor=1.5).numpy())


@pytest.mark.parametrize("kw,shape", [
    (dict(scale_factor=1.5), (1, 2, 3, 4)),
    (dict(size=(2, 5, 3)), (1, 1, 3, 2, 2)),
    (dict(size=5, mode="linear", align_corners=False), (1, 2, 3)),
    (dict(scale_factor=(1.7, 0.6), mode="bilinear"), (1, 2, 3, 5)),
    (dict(size=(4, 2), mode="bilinear", align_corners=True), (1, 1, 3, 3)),
])
def test_interpolate_gradcheck_and_double_backward(device, kw, shape):
    check_grads(lambda x: interpolate(x, **kw), [shape], device=device)


@pytest.mark.parametrize("call,exc,pattern", [
    (lambda: interpolate(tg.ones(1, 1, 4, 4), size=2, scale_factor=2), ValueError,
     r"interpolate: only one of size or scale_factor should be defined"),
    (lambda: interpolate(tg.ones(1, 1, 4, 4)), ValueError, r"interpolate: either size or scale_factor"),
    (lambda: interpolate(tg.ones(1, 1, 4, 4), size=2, align_corners=True), ValueError,
     r"interpolate: align_corners option can only be set with the interpolating modes .* mode='nearest'"),
    (lambda: interpolate(tg.ones(1, 1, 4), size=2, mode="bilinear"), NotImplementedError,
     r"interpolate: mode 'bilinear' expects a 4-D input .* got input of size \[1, 1, 4\]"),
    (lambda: interpolate(tg.ones(1, 1, 4, 4), size=2, mode="linear"), NotImplementedError,
     r"interpolate: mode 'linear' expects a 3-D input .* got input of size \[1, 1, 4, 4\]"),
    (lambda: interpolate(tg.ones(4, 4), size=2), NotImplementedError,
     r"interpolate: mode 'nearest' expects a 3-D or 4-D or 5-D input .* \[4, 4\]"),
    (lambda: interpolate(tg.ones(1, 1, 4, 4), size=2, mode="bicubic"), NotImplementedError,
     r"interpolate: mode 'bicubic' is not supported; supported modes are 'nearest'"),
    (lambda: interpolate(tg.ones(1, 1, 4, 4), size=(2, 0)), RuntimeError,
     r"interpolate: input and output sizes should be greater than 0, .* \[1, 1, 4, 4\] .* \[2, 0\]"),
    (lambda: interpolate(tg.ones(1, 1, 4, 4), scale_factor=-1.0), RuntimeError,
     r"interpolate: input and output sizes should be greater than 0"),
    (lambda: interpolate(tg.ones(1, 1, 4, 4), size=(2, 2, 2)), ValueError,
     r"interpolate: input and output must have the same number of spatial dimensions, but got input of "
     r"size \[1, 1, 4, 4\]"),
    (lambda: interpolate(tg.ones(1, 1, 4, 4), scale_factor=(2,)), ValueError,
     r"interpolate: input and scale_factor must have the same number of spatial dimensions"),
    (lambda: interpolate(tg.ones(1, 1, 4, 4), size=(2.5, 3)), TypeError,
     r"interpolate: expected size to be an int or a tuple of ints"),
    (lambda: interpolate(tg.ones(1, 1, 4, 4), size=2, recompute_scale_factor=True), ValueError,
     r"interpolate: recompute_scale_factor is not meaningful with an explicit size"),
    (lambda: interpolate(tg.ones(1, 1, 4, 4), size=2, antialias=True), ValueError,
     r"interpolate: anti-alias option is restricted to bilinear and bicubic modes"),
    (lambda: interpolate(tg.ones(1, 1, 4, 4), size=2, mode="bilinear", antialias=True), NotImplementedError,
     r"interpolate: antialias=True is not supported"),
    (lambda: interpolate(tg.ones(1, 1, 4, 4, dtype=tg.int64), size=2), NotImplementedError,
     r"interpolate: mode 'nearest' is not implemented for dtype int64"),
    (lambda: interpolate(np.ones((1, 1, 4, 4)), size=2), TypeError,
     r"interpolate: expected input to be a Tensor, got ndarray"),
])
def test_interpolate_bad_input_gets_a_clear_error(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()
