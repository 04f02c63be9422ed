"""SGD: stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

PyTorch's rule, per parameter p with gradient g:

    g <- -g                                  if maximize
    g <- g + weight_decay * p
    b <- g                                   on the first step (no dampening then)
    b <- momentum * b + (1 - dampening) * g  afterwards
    g <- g + momentum * b  if nesterov, else  g <- b      (when momentum != 0)
    p <- p - lr * g
"""
from tinygrad_bn.optim.optimizer import Optimizer, bump_version
from tinygrad_bn.tensor import Tensor


class SGD(Optimizer):
    """SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *, maximize=False)."""

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                 *, maximize=False):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns closure's loss if given."""
        loss = self._evaluate(closure)
        for group in self.param_groups:
            lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                # every line below makes a new array: p.grad's buffer may be shared, never write it
                g = -p.grad.data if group["maximize"] else p.grad.data
                if group["weight_decay"] != 0:
                    g = g + group["weight_decay"] * p.data
                if momentum != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = Tensor._make(g.copy())
                    else:
                        buf.data *= momentum
                        buf.data += (1 - dampening) * g
                    g = g + momentum * buf.data if group["nesterov"] else buf.data
                p.data -= lr * g
                bump_version(p)
        return loss
