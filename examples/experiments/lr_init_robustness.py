"""BatchNorm tolerates much higher learning rates and is far less sensitive to the initial
weight scale.

Protocol: a plain deep CNN of 10 conv layers (3x3, conv-[BN]-ReLU, stride 2 at the 4th and 7th,
no residual connections), global average pool and a linear layer, with BatchNorm2d ("bn") and
without ("no_bn"), on the embedded Shapes10, SGD with momentum 0.9, a fixed number of steps.
  - LR sweep at the default init (Kaiming normal, fan_out): lr in 0.003 ... 3, half-decade steps.
  - Init sweep at lr 0.03: every conv weight = default init x {0.1, 0.3, 1, 3, 10}.
Each run records the final test accuracy and whether it diverged (a non-finite loss or a loss
above 100: detected by the runner's train_steps and recorded, never raised); a diverged run
counts as not reaching the threshold below.

Verdict rule (RULE below, word for word):
the threshold accuracy is chance (0.1) plus half the gap between chance and the best mean test accuracy of any configuration; per seed, the LR width is the number of swept learning rates whose run reaches the threshold without diverging, and the init width the number of swept init scales that do; reproduced when BN's LR width and BN's init width both exceed no BN's beyond the spread across seeds; not reproduced when either is below no BN's beyond the spread, or neither exceeds it; inconclusive otherwise.
"""
import math
import sys

import numpy as np

import tinygrad_bn as tg
from tinygrad_bn import nn
import tinygrad_bn.nn.functional as F

from examples.experiments import _runner as R

NAME = "lr_init_robustness"
CLAIM = ("BatchNorm tolerates much higher learning rates and is far less sensitive to the initial "
         "weight scale than the same plain deep CNN without it.")
SOURCE = ("Ioffe & Szegedy 2015, sections 1 and 3.3; the seed chapter's sections 1 and 5; the other "
          "texts' 'Key Benefits'")
RULE = __doc__.split("word for word):\n", 1)[1].strip()
BUDGET = {"quick": "~15 s", "default": "~10 min", "full": "~1 h"}
CHANCE = 0.1
DIVERGE_ABOVE = 100.0
TABLE_KEYS = ["test_acc", "diverged", "final_train_loss"]

SCALES = {"quick": dict(lrs=(0.01, 0.3, 3.0), inits=(0.1, 1.0, 10.0), steps=8, train_size=256, test_size=128,
                        image_size=8, width=8),
          "default": dict(lrs=(0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0), inits=(0.1, 0.3, 1.0, 3.0, 10.0),
                          steps=60, train_size=1000, test_size=500, image_size=8, width=12),
          "full": dict(lrs=(0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0), inits=(0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0),
                       steps=1500, train_size=10000, test_size=2000, image_size=32, width=32)}
INIT_SWEEP_LR = 0.03


def configs(scale):
    s = SCALES[scale]
    base = {k: s[k] for k in ("steps", "train_size", "test_size", "image_size", "width")}
    base.update(momentum=0.9, batch_size=64)
    out = {}
    for variant in ("bn", "no_bn"):
        for lr in s["lrs"]:
            out[f"{variant}_lr{lr:g}"] = dict(base, variant=variant, sweep="lr", lr=lr, init_scale=1.0)
        for init in s["inits"]:
            out[f"{variant}_init{init:g}"] = dict(base, variant=variant, sweep="init", lr=INIT_SWEEP_LR,
                                                  init_scale=init)
    return out


class PlainCNN(nn.Module):
    """10 conv layers, conv-[BN]-ReLU, stride 2 at the 4th and 7th, no skips; pool; linear.
    init_scale multiplies every conv weight's Kaiming init."""

    def __init__(self, width=16, bn=True, init_scale=1.0, depth=10, num_classes=10):
        super().__init__()
        layers, cin = [], 3
        for i in range(depth):
            stride = 2 if i in (3, 6) else 1
            layers += [nn.Conv2d(cin, width, 3, stride=stride, padding=1, bias=not bn)]
            layers += [nn.BatchNorm2d(width)] if bn else []
            layers += [nn.ReLU()]
            cin = width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                with tg.no_grad():
                    m.weight.copy_(m.weight.detach() * init_scale)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


def run(config, seed, ctx):
    train, test = R.shapes10(seed, config["train_size"], config["test_size"], config["image_size"],
                             config["batch_size"], device=ctx.device)
    model = PlainCNN(config["width"], bn=config["variant"] == "bn", init_scale=config["init_scale"]).to(ctx.device)
    optimizer = tg.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    with np.errstate(all="ignore"):
        trained = R.train_steps(model, optimizer, R.batches(train), config["steps"], ctx,
                                diverge_above=DIVERGE_ABOVE)
        loss, acc = R.evaluate(model, test)
    diverged = bool(trained["diverged"] or not math.isfinite(loss))
    tail = [v for v in trained["losses"][-10:] if math.isfinite(v)]
    return {"test_acc": acc, "test_loss": loss, "diverged": diverged,
            "final_train_loss": float(np.mean(tail)) if tail else float("nan"),
            "steps_done": trained["steps"], "losses": trained["losses"]}


# ---- verdict and plot ----------------------------------------------------------------------
def _sweep(results, variant, sweep):
    """[(value, config name)] of one sweep, in order."""
    key = "lr" if sweep == "lr" else "init"
    items = [(float(n.split(f"_{key}")[1]), n) for n in results if n.startswith(f"{variant}_{key}")]
    return sorted(items)


def threshold(results):
    best = max(np.mean([r["test_acc"] for r in runs]) for runs in results.values())
    return CHANCE + 0.5 * (best - CHANCE)


def widths(results, variant, sweep, level):
    """Per seed, how many of the sweep's values reach `level` without diverging."""
    items = _sweep(results, variant, sweep)
    seeds = len(results[items[0][1]])
    return [sum(1 for _, n in items if not results[n][s]["diverged"] and results[n][s]["test_acc"] >= level)
            for s in range(seeds)]


def verdict(results):
    level = threshold(results)
    sides, notes = [], []
    for sweep in ("lr", "init"):
        bn, plain = widths(results, "bn", sweep, level), widths(results, "no_bn", sweep, level)
        side = R.separated(bn, plain)
        sides.append(side)
        notes.append(f"{sweep} width BN {bn} vs no BN {plain}: {side}")
    reason = f"threshold accuracy {level:.3f}; " + "; ".join(notes)
    if "less" in sides or all(s == "overlap" for s in sides):
        return "not reproduced", reason
    if all(s == "greater" for s in sides):
        return "reproduced", reason
    return "inconclusive", reason


def plot(results, summary):
    fig, axes = R.figure(2, "BN tolerates higher learning rates and bad init scales (plain 10-layer "
                            "CNN on Shapes10; x marks a seed that diverged)")
    level = threshold(results)
    for ax, sweep, xlabel in ((axes[0], "lr", "learning rate (SGD, momentum 0.9)"),
                              (axes[1], "init", "init scale (x Kaiming normal)")):
        for j, variant in enumerate(("bn", "no_bn")):
            items = _sweep(results, variant, sweep)
            xs = [v for v, _ in items]
            seeds = len(results[items[0][1]])
            runs = [[results[n][s]["test_acc"] for _, n in items] for s in range(seeds)]
            R.band(ax, xs, runs, variant, color=R.COLORS[j], marker="o")
            bad = [(v, results[n][s]["test_acc"]) for v, n in items for s in range(seeds) if results[n][s]["diverged"]]
            if bad:
                ax.scatter(*zip(*bad), marker="x", color=R.COLORS[j], label=f"{variant}: diverged run")
        ax.axhline(level, color="gray", ls=":", label=f"threshold {level:.2f}")
        ax.axhline(CHANCE, color="black", lw=0.5, ls="--", label="chance")
        ax.set(xscale="log", xlabel=xlabel, ylabel="final test accuracy")
        ax.set_title(f"accuracy vs {'learning rate (default init)' if sweep == 'lr' else f'init scale (lr {INIT_SWEEP_LR})'}",
                     fontsize=9)
    return R.finish(fig, axes)


def main(argv=None):
    return R.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
