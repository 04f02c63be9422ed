"""Bad input gets an exception that names the op, the shapes or dtypes, and what was expected."""
import pytest

import tinygrad_bn as tg


@pytest.mark.parametrize("fn,exc,pattern", [
    (lambda: tg.ones(2, 3) @ tg.ones(4, 5), RuntimeError,
     r"matmul: mat1 and mat2 shapes cannot be multiplied \(2x3 and 4x5\)"),
    (lambda: tg.ones(2, 2, 3) @ tg.ones(3, 3, 4), RuntimeError, r"matmul \(batch dims\): shapes \[2\] and \[3\] are not broadcastable"),
    (lambda: tg.ones(3) @ tg.tensor(2.0), RuntimeError, r"matmul: both arguments need to be at least 1D"),
    (lambda: tg.ones(2, 3) + tg.ones(4), RuntimeError, r"add: shapes \[2, 3\] and \[4\] are not broadcastable"),
    (lambda: tg.ones(2, 3) * tg.ones(3, 2), RuntimeError, r"mul: shapes \[2, 3\] and \[3, 2\] are not broadcastable"),
    (lambda: tg.ones(6).reshape(4, 2), RuntimeError, r"reshape: shape '\[4, 2\]' is invalid for input of size 6"),
    (lambda: tg.ones(6).reshape(-1, -1), RuntimeError, r"only one dimension can be inferred"),
    (lambda: tg.ones(2, 3).sum(2), IndexError, r"sum: Dimension out of range \(expected to be in range of \[-2, 1\], but got 2\)"),
    (lambda: tg.ones(2, 3).permute(0, 0), RuntimeError, r"permute: dims \[0, 0\] are not a permutation"),
    (lambda: tg.ones(3, 2).expand(3, 4), RuntimeError, r"expand: the expanded size of the tensor \(4\) must match the existing size \(2\) at non-singleton dimension 1"),
    (lambda: tg.ones(3)[5], IndexError, r"index: index 5 is out of bounds .* tensor of shape \[3\]"),
    (lambda: tg.ones(3)[tg.ones(2)], IndexError, r"tensors used as indices must be long, int or bool, got float32"),
    (lambda: tg.ones(3)["a"], IndexError, r"unsupported index 'a'"),
    (lambda: tg.cat([tg.ones(2, 3), tg.ones(2, 4)], 0), RuntimeError, r"cat: Sizes of tensors must match except in dimension 0. Expected size 3 but got size 4 for tensor number 1"),
    (lambda: tg.cat([tg.ones(2), tg.ones(2, 1)]), RuntimeError, r"cat: Tensors must have same number of dimensions"),
    (lambda: tg.stack([tg.ones(2), tg.ones(3)]), RuntimeError, r"stack: expects each tensor to be equal size"),
    (lambda: tg.ones(4).split([1, 2]), RuntimeError, r"split_sizes to sum exactly to 4"),
    (lambda: tg.pad(tg.ones(2), (1, 1, 1, 1)), RuntimeError, r"pad: padding length must be even and at most 2\*ndim \(2\), got 4"),
    (lambda: tg.ones(0).amax(0), IndexError, r"amax: Expected reduction dim 0 to have non-zero size"),
    (lambda: tg.ones(2, dtype=tg.int64).mean(), RuntimeError, r"mean\(\): could not infer output dtype.*Got: int64"),
    (lambda: tg.where(tg.ones(2), tg.ones(2), tg.ones(2)), TypeError, r"where: expected condition to be a bool tensor, got dtype float32"),
    (lambda: tg.clamp(tg.ones(2)), RuntimeError, r"clamp: at least one of 'min' or 'max' must not be None"),
    (lambda: ~tg.ones(2), TypeError, r"logical_not \(~\): expected a bool tensor, got dtype float32"),
    (lambda: tg.ones(2, device="fakegpu") + tg.ones(2), RuntimeError, r"Add: expected all tensors to be on the same device, but found at least two devices, fakegpu and cpu"),
    (lambda: tg.ones(2, device="tpu"), ValueError, r"device: unknown device string 'tpu'"),
    (lambda: tg.zeros(-1), ValueError, r"zeros: sizes must be non-negative ints, got \[-1\]"),
    (lambda: tg.randint(5, 2, (3,)), ValueError, r"randint: expected low < high"),
    (lambda: len(tg.tensor(1.0)), TypeError, r"len\(\) of a 0-d tensor"),
])
def test_bad_input_gets_a_clear_error(fn, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fn()


def test_errors_on_device_backend_are_the_same():
    with pytest.raises(RuntimeError, match=r"matmul: mat1 and mat2 shapes cannot be multiplied \(2x3 and 4x5\)"):
        tg.ones(2, 3, device="fakegpu") @ tg.ones(4, 5, device="fakegpu")
    with pytest.raises(IndexError, match=r"index: index 5 is out of bounds"):
        tg.ones(3, device="fakegpu")[5]
