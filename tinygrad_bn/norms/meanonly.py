"""Mean-only batch normalization (Salimans & Kingma 2016, section 2.1), the worked example of
docs/extending.md: a whole normalizer - Function, Module, registry entry - in one file.

Per channel c, over the M = N * prod(spatial) values of the batch:

    training:  y = x - mean_B + b,        running_mean = (1 - m) running_mean + m mean_B
    eval:      y = x - running_mean + b

Backward (mean_B depends on every x of the channel, with d mean_B / dx = 1/M):

    dx = dy - mean(dy)    (training; the per-channel mean over the M values)
    dx = dy               (eval: running_mean is a constant)
    db = sum(dy)

The node saves nothing full-size: backward needs only dy and the shapes.
"""
from tinygrad_bn.autograd.function import Function
from tinygrad_bn.creation import zeros
from tinygrad_bn.nn.module import Module
from tinygrad_bn.nn.parameter import Parameter
from tinygrad_bn.norms._base import NormSpec, check_more_than_one_value


class MeanOnlyBatchNormFunction(Function):
    """y = x - mean + b, with the per-channel mean of the batch (training) or a given one (eval)."""

    node_name = "MeanOnlyBatchNormBackward"

    def forward(self, x, bias, running_mean, training, momentum):
        axes = (0,) + tuple(range(2, x.ndim))           # every axis but the channel axis
        shape = (1, -1) + (1,) * (x.ndim - 2)            # a per-channel vector, broadcastable to x
        mean = x.mean(axis=axes) if training else running_mean
        if training:  # running statistics: raw arrays, outside the graph
            running_mean *= 1 - momentum
            running_mean += momentum * mean
        return x - mean.reshape(shape) + bias.reshape(shape)

    def backward(self, dy):
        axes = (0,) + tuple(range(2, dy.ndim))
        dx = dy - dy.mean(axes, keepdim=True) if self.attrs["training"] else dy
        return dx, dy.sum(axes)


class MeanOnlyBatchNorm2d(Module):
    """Mean-only BatchNorm for (N, C, H, W): subtracts the batch mean, adds a learned bias."""

    def __init__(self, num_features, momentum=0.1):
        super().__init__()
        self.num_features, self.momentum = num_features, momentum
        self.bias = Parameter(zeros(num_features))
        self.register_buffer("running_mean", zeros(num_features))

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"expected 4D input (got {x.ndim}D input)")
        if self.training:
            check_more_than_one_value(x.shape, who=type(self).__name__)
        # the buffer goes in as a raw array attribute, not a Tensor input: it is updated in place
        # and must never enter the graph
        return MeanOnlyBatchNormFunction.apply(x, self.bias, running_mean=self.running_mean.data,
                                               training=self.training, momentum=self.momentum)

    def extra_repr(self):
        return f"{self.num_features}, momentum={self.momentum}"


def reference(layer, x, params, buffers, training):
    """The module docstring's equations in plain NumPy: (y, buffers after the call)."""
    axes, shape = (0,) + tuple(range(2, x.ndim)), (1, -1) + (1,) * (x.ndim - 2)
    buffers = dict(buffers)
    mean = x.mean(axis=axes) if training else buffers["running_mean"]
    if training:
        buffers["running_mean"] = (1 - layer.momentum) * buffers["running_mean"] + layer.momentum * mean
    return x - mean.reshape(shape) + params["bias"].reshape(shape), buffers


SPECS = [
    NormSpec(name="MeanOnlyBatchNorm2d", make=lambda c: MeanOnlyBatchNorm2d(c),
             input_shape=lambda c: (3, c, 2, 2), make_for_conv=lambda c, hw: MeanOnlyBatchNorm2d(c),
             reference=reference,
             description="subtract the batch mean only (Salimans & Kingma 2016)"),
]
