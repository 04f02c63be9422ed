"""Adagrad: per-coordinate learning rates, shrinking with the sum of squared gradients so far.

PyTorch's rule, per parameter p with gradient g, at step t = 1, 2, ...:

    g <- -g                                   if maximize
    g <- g + weight_decay * p                 (L2 penalty in the gradient)
    clr = lr / (1 + (t - 1) * lr_decay)
    s <- s + g^2                              (sum, starts at initial_accumulator_value)
    p <- p - clr * g / (sqrt(s) + eps)
"""
from tinygrad_bn.optim.optimizer import Optimizer, bump_version


class Adagrad(Optimizer):
    """Adagrad(params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
    eps=1e-10, foreach=None, *, maximize=False, differentiable=False, fused=None)."""

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
                 eps=1e-10, foreach=None, *, maximize=False, differentiable=False, fused=None):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= lr_decay:
            raise ValueError(f"Invalid lr_decay value: {lr_decay}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= initial_accumulator_value:
            raise ValueError(f"Invalid initial_accumulator_value value: {initial_accumulator_value}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if differentiable:
            raise NotImplementedError("Adagrad: differentiable=True is not supported (the update "
                                      "runs on raw arrays, outside the graph)")
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                        maximize=maximize, differentiable=differentiable, fused=fused)
        super().__init__(params, defaults)
        # as PyTorch: the state exists from construction, so state_dict() has it before any step
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p, group)

    def _init_state(self, p, group):
        state = self.state[p]
        if "sum" not in state:
            state["step"] = 0
            state["sum"] = self._state_buffer(p, "sum")
            state["sum"].data += group["initial_accumulator_value"]

    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns closure's loss if given."""
        loss = self._evaluate(closure)
        for group in self.param_groups:
            lr, lr_decay, eps, weight_decay = (group["lr"], group["lr_decay"], group["eps"],
                                               group["weight_decay"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                xp = p.xp
                g = -p.grad.data if group["maximize"] else p.grad.data  # never written in place
                self._init_state(p, group)  # a parameter added later with add_param_group
                state = self.state[p]
                state["step"] = step = state["step"] + 1
                if weight_decay != 0:
                    g = g + weight_decay * p.data
                clr = lr / (1 + (step - 1) * lr_decay)
                state_sum = state["sum"].data
                state_sum += g * g
                p.data -= clr * (g / (xp.sqrt(state_sum) + eps))
                bump_version(p)
        return loss
