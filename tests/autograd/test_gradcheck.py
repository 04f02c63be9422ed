"""gradcheck must be able to fail, and say where."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn.autograd import Function, gradcheck, gradgradcheck
from tinygrad_bn.autograd.gradcheck import GradcheckError


class WrongSquare(Function):
    """y = x^2 with a deliberately wrong backward (3x instead of 2x) at one element."""

    def forward(self, x):
        self.save_for_backward(x=x)
        return x * x

    def backward(self, g):
        x = self.saved("x")
        scale = np.ones(x.shape)
        scale.reshape(-1)[-1] = 1.5
        return g * x * 2 * tg.tensor(scale)


class SquareWithConstantBackward(Function):
    """Correct first derivative, but its backward uses raw arrays: no double backward."""

    def forward(self, x):
        self.save_for_backward(x=x)
        return x * x

    def backward(self, g):
        return g * tg.Tensor._make(2 * self.saved_array("x"))


def test_gradcheck_passes_on_a_correct_op():
    x = tg.tensor(np.random.default_rng(0).standard_normal((2, 3)), dtype=tg.float64, requires_grad=True)
    assert gradcheck(lambda t: (t * t).sum(1), [x])


def test_gradcheck_names_input_and_worst_element():
    x = tg.tensor(np.arange(1.0, 7.0).reshape(2, 3), dtype=tg.float64, requires_grad=True)
    with pytest.raises(GradcheckError, match=r"with respect to input 0 \(shape \[2, 3\]\).*worst at output element \[1, 2\], input element \[1, 2\]: analytic 18 vs numerical 12"):
        gradcheck(WrongSquare.apply, [x])
    assert gradcheck(WrongSquare.apply, [x], raise_exception=False) is False


def test_gradgradcheck_catches_a_backward_that_is_not_differentiable():
    x = tg.tensor([1.0, 2.0], dtype=tg.float64, requires_grad=True)
    assert gradcheck(SquareWithConstantBackward.apply, [x])
    with pytest.raises(GradcheckError):
        gradgradcheck(SquareWithConstantBackward.apply, [x])


def test_gradcheck_refuses_float32():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(GradcheckError, match="float64"):
        gradcheck(lambda t: t * 2, [x])
