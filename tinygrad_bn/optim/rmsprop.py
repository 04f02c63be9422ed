"""RMSprop: divide the gradient by a running root-mean-square of recent gradients.

PyTorch's rule, per parameter p with gradient g:

    g <- -g                                         if maximize
    g <- g + weight_decay * p                       (L2 penalty in the gradient)
    v <- alpha * v + (1 - alpha) * g^2              (square_avg)
    c <- c + (1 - alpha) * (g - c),  v~ = v - c^2   if centered (grad_avg), else v~ = v
    d = sqrt(v~) + eps
    b <- momentum * b + g / d,  p <- p - lr * b     if momentum > 0 (momentum_buffer)
    p <- p - lr * g / d                             otherwise
"""
from tinygrad_bn.optim.optimizer import Optimizer, bump_version


class RMSprop(Optimizer):
    """RMSprop(params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
    capturable=False, foreach=None, maximize=False, differentiable=False)."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= momentum:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= alpha:
            raise ValueError(f"Invalid alpha value: {alpha}")
        if differentiable:
            raise NotImplementedError("RMSprop: differentiable=True is not supported (the update "
                                      "runs on raw arrays, outside the graph)")
        # capturable and foreach are CUDA-graph and kernel-fusion switches; the update is the same
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                        maximize=maximize, differentiable=differentiable)
        super().__init__(params, defaults)

    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns closure's loss if given."""
        loss = self._evaluate(closure)
        for group in self.param_groups:
            lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
            weight_decay, momentum = group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                xp = p.xp
                g = -p.grad.data if group["maximize"] else p.grad.data  # never written in place
                state = self.state[p]
                state["step"] = state.get("step", 0) + 1
                square_avg = self._state_buffer(p, "square_avg").data
                if weight_decay != 0:
                    g = g + weight_decay * p.data
                square_avg *= alpha
                square_avg += (1 - alpha) * (g * g)
                if group["centered"]:
                    grad_avg = self._state_buffer(p, "grad_avg").data
                    grad_avg += (1 - alpha) * (g - grad_avg)
                    avg = xp.sqrt(square_avg - grad_avg * grad_avg)
                else:
                    avg = xp.sqrt(square_avg)
                avg += eps
                if momentum > 0:
                    buf = self._state_buffer(p, "momentum_buffer").data
                    buf *= momentum
                    buf += g / avg
                    p.data -= lr * buf
                else:
                    p.data -= lr * (g / avg)
                bump_version(p)
        return loss
