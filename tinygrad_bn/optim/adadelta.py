"""Adadelta: steps scaled by the ratio of running RMS of past updates to running RMS of gradients.

PyTorch's rule, per parameter p with gradient g:

    g <- -g                                         if maximize
    g <- g + weight_decay * p                       (L2 penalty in the gradient)
    v <- rho * v + (1 - rho) * g^2                  (square_avg)
    d = sqrt(u + eps) / sqrt(v + eps) * g           (u: acc_delta, the running mean of d^2)
    u <- rho * u + (1 - rho) * d^2
    p <- p - lr * d
"""
from tinygrad_bn.optim.optimizer import Optimizer, bump_version


class Adadelta(Optimizer):
    """Adadelta(params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *,
    capturable=False, maximize=False, differentiable=False)."""

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *,
                 capturable=False, maximize=False, differentiable=False):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if differentiable:
            raise NotImplementedError("Adadelta: differentiable=True is not supported (the update "
                                      "runs on raw arrays, outside the graph)")
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                        capturable=capturable, foreach=foreach, differentiable=differentiable)
        super().__init__(params, defaults)

    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns closure's loss if given."""
        loss = self._evaluate(closure)
        for group in self.param_groups:
            lr, rho, eps, weight_decay = group["lr"], group["rho"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                xp = p.xp
                g = -p.grad.data if group["maximize"] else p.grad.data  # never written in place
                state = self.state[p]
                state["step"] = state.get("step", 0) + 1
                square_avg = self._state_buffer(p, "square_avg").data
                acc_delta = self._state_buffer(p, "acc_delta").data
                if weight_decay != 0:
                    g = g + weight_decay * p.data
                square_avg *= rho
                square_avg += (1 - rho) * (g * g)
                delta = xp.sqrt(acc_delta + eps) / xp.sqrt(square_avg + eps) * g
                acc_delta *= rho
                acc_delta += (1 - rho) * (delta * delta)
                p.data -= lr * delta
                bump_version(p)
        return loss
