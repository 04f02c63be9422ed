"""Adam and AdamW: adaptive moment estimation, with L2 (Adam) or decoupled (AdamW) weight decay.

PyTorch's rule, per parameter p with gradient g, at step t = 1, 2, ...:

    g <- -g                                       if maximize
    p <- p * (1 - lr * weight_decay)              AdamW (decoupled)
    g <- g + weight_decay * p                     Adam (L2 penalty in the gradient)
    m <- m + (1 - beta1) * (g - m)                (lerp: beta1 * m + (1 - beta1) * g)
    v <- beta2 * v + (1 - beta2) * g^2
    vmax <- max(vmax, v)   and v <- vmax below    if amsgrad
    p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
"""
from tinygrad_bn.optim.optimizer import Optimizer, bump_version


class Adam(Optimizer):
    """Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
    maximize=False, decoupled_weight_decay=False)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, maximize=False, decoupled_weight_decay=False):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, betas=(float(betas[0]), float(betas[1])), eps=eps,
                        weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns closure's loss if given."""
        loss = self._evaluate(closure)
        for group in self.param_groups:
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                xp = p.xp
                g = -p.grad.data if group["maximize"] else p.grad.data  # never written in place
                state = self.state[p]
                state["step"] = step = state.get("step", 0) + 1
                exp_avg = self._state_buffer(p, "exp_avg").data
                exp_avg_sq = self._state_buffer(p, "exp_avg_sq").data
                if weight_decay != 0:
                    if group["decoupled_weight_decay"]:
                        p.data *= 1 - lr * weight_decay
                    else:
                        g = g + weight_decay * p.data
                exp_avg += (1 - beta1) * (g - exp_avg)
                exp_avg_sq *= beta2
                exp_avg_sq += (1 - beta2) * (g * g)
                bias_correction1 = 1 - beta1 ** step
                bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
                if group["amsgrad"]:
                    max_exp_avg_sq = self._state_buffer(p, "max_exp_avg_sq").data
                    xp.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
                    second_moment = max_exp_avg_sq
                else:
                    second_moment = exp_avg_sq
                denom = xp.sqrt(second_moment) / bias_correction2_sqrt + eps
                p.data -= (lr / bias_correction1) * (exp_avg / denom)
                bump_version(p)
        return loss


class AdamW(Adam):
    """AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
    maximize=False): Adam with weight decay applied to the parameters, not the gradient."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)
