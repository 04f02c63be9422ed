"""A first look: train a two-layer MLP on a 3-class spiral with nothing but tensors and autograd.

    python -m examples.demo [--steps 300] [--device cpu]

Everything here is the core engine: Tensor ops, backward, and a hand-written SGD step on raw
arrays under no_grad. Prints the loss and accuracy as it trains.
"""
import argparse
import math
import sys

import numpy as np

import tinygrad_bn as tg


def spiral(n_per_class=100, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(classes):
        r = np.linspace(0.05, 1, n_per_class)
        t = np.linspace(c * 4, (c + 1) * 4, n_per_class) + rng.normal(0, 0.2, n_per_class)
        xs.append(np.stack([r * np.sin(t), r * np.cos(t)], 1))
        ys.append(np.full(n_per_class, c))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="SGD steps (full batch)")
    parser.add_argument("--lr", type=float, default=1.0, help="learning rate")
    parser.add_argument("--hidden", type=int, default=64, help="hidden units")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or fakegpu")
    args = parser.parse_args(argv)
    try:
        tg.Tensor([0.0], device=args.device)
    except (ValueError, RuntimeError) as e:
        sys.exit(f"--device: {e}")

    tg.manual_seed(0)
    x_np, y_np = spiral()
    x = tg.tensor(x_np, device=args.device)
    onehot = tg.tensor(np.eye(3, dtype=np.float32)[y_np], device=args.device)
    w1 = (tg.randn(2, args.hidden, device=args.device) * math.sqrt(2 / 2)).requires_grad_()
    b1 = tg.zeros(args.hidden, device=args.device, requires_grad=True)
    w2 = (tg.randn(args.hidden, 3, device=args.device) * math.sqrt(1 / args.hidden)).requires_grad_()
    b2 = tg.zeros(3, device=args.device, requires_grad=True)
    params = [w1, b1, w2, b2]

    for step in range(args.steps + 1):
        logits = (x @ w1 + b1).relu() @ w2 + b2
        log_probs = logits - logits.logsumexp(1, keepdim=True)
        loss = -(log_probs * onehot).sum(1).mean()
        for p in params:
            p.grad = None
        loss.backward()
        with tg.no_grad():
            for p in params:
                p.data -= args.lr * p.grad.data
        if step % 50 == 0:
            accuracy = (logits.argmax(1) == tg.tensor(y_np, device=args.device)).float().mean().item()
            print(f"step {step:4d}  loss {loss.item():.4f}  accuracy {accuracy:.3f}")
    return loss.item(), accuracy


if __name__ == "__main__":
    main()
