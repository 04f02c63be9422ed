"""Where does BN go? Between the linear map and the nonlinearity (conv -> BN -> ReLU), as Ioffe &
Szegedy place it, or after the activation (conv -> ReLU -> BN), as some practitioners report
works as well or better: measure both.

Protocol: examples.models.SmallCNN (three stages, each conv 3x3 -> BN -> ReLU -> maxpool) on the
embedded Shapes10 in three variants with the same initial conv weights, data order and schedule
(SGD, lr 0.05, momentum 0.9):
- "bn_relu": SmallCNN as it is (conv without bias: BN's shift makes a bias redundant);
- "relu_bn": each stage reordered to conv -> ReLU -> BN -> maxpool, the conv given a bias
  (initialised to 0), since a bias before the ReLU is no longer redundant: without it the ReLU
  threshold of every unit is fixed at 0;
- "no_bn": the BN layers removed (a reference: does BN help here at all?).
Every few steps we record the test accuracy (eval mode) and, on a fixed probe batch of test
images in eval mode, the fraction of dead ReLUs: units (channel and position of one ReLU's
output) that are 0 for every image of the probe batch, and channels that are 0 everywhere. The
speed of training is the mean test accuracy over the evaluation points (the area under the
accuracy curve, normalised) and the number of steps until the test accuracy first reaches a
target stated beforehand (TARGET_ACC per scale; None when never reached).

Verdict rule (RULE below, word for word):
reproduced when bn_relu's final test accuracy and its mean test accuracy over training are both above relu_bn's beyond the spread across seeds; not reproduced when either of them is below relu_bn's beyond the spread; inconclusive otherwise (a difference within the spread is what the literature's disagreement would predict).
"""
import sys

import numpy as np

import tinygrad_bn as tg
from tinygrad_bn import nn

from examples.experiments import _runner as R
from examples.models import SmallCNN

NAME = "bn_placement"
CLAIM = ("BN belongs between the linear map and the nonlinearity (conv -> BN -> ReLU): it trains "
         "faster and reaches a higher accuracy than BN placed after the activation.")
SOURCE = ("Ioffe & Szegedy 2015, section 3.2; Goodfellow et al. 8.7.1; the chapter's section 7 "
          "(placement); against: Mishkin et al.'s caffenet-benchmark (BN after ReLU)")
RULE = __doc__.split("word for word):\n", 1)[1].strip()
BUDGET = {"quick": "~10 s", "default": "~4-6 min", "full": "~1 h"}
TABLE_KEYS = ["final_test_acc", "mean_test_acc", "steps_to_target", "dead_unit_fraction",
              "dead_channel_fraction"]
VARIANTS = ("bn_relu", "relu_bn", "no_bn")
TARGET_ACC = {"quick": 0.15, "default": 0.45, "full": 0.7}

SCALES = {"quick": dict(steps=30, eval_every=10, batch_size=32, train_size=320, test_size=200,
                        image_size=8, widths=(4, 8, 8), probe=64),
          "default": dict(steps=500, eval_every=25, batch_size=64, train_size=2000, test_size=500,
                          image_size=16, widths=(16, 32, 64), probe=256),
          "full": dict(steps=4000, eval_every=200, batch_size=64, train_size=10000, test_size=2000,
                       image_size=32, widths=(32, 64, 128), probe=512)}


def configs(scale):
    base = dict(SCALES[scale], lr=0.05, momentum=0.9, target_acc=TARGET_ACC[scale])
    return {v: dict(base, variant=v) for v in VARIANTS}


def make_model(config):
    """SmallCNN with its stages (conv, BN, ReLU, pool) kept, reordered to (conv+bias, ReLU, BN,
    pool), or stripped of BN; the conv weights are those of SmallCNN's init in every variant."""
    model = SmallCNN(image_size=config["image_size"], widths=tuple(config["widths"]), norm="BatchNorm2d")
    layers = list(model.features)
    stages = [layers[i:i + 4] for i in range(0, len(layers), 4)]
    new = []
    for conv, bn, relu, pool in stages:
        if config["variant"] == "bn_relu":
            new += [conv, bn, relu, pool]
        elif config["variant"] == "relu_bn":
            biased = nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=1, bias=True)
            with tg.no_grad():
                biased.weight.copy_(conv.weight.detach())
                biased.bias.zero_()
            new += [biased, relu, bn, pool]
        elif config["variant"] == "no_bn":
            new += [conv, relu, pool]
        else:
            raise ValueError(f"bn_placement: unknown variant {config['variant']!r}; expected one of {VARIANTS}")
    model.features = nn.Sequential(*new)
    return model


def dead_relus(model, x):
    """(fraction of ReLU units, fraction of ReLU channels) that are 0 for every image of x, over
    all ReLUs of the model, in eval mode. A unit is one (channel, position) of a ReLU's output."""
    outputs = []
    handles = [m.register_forward_hook(lambda mod, args, out: outputs.append(out.numpy()))
               for m in model.modules() if isinstance(m, nn.ReLU)]
    model.eval()
    try:
        with tg.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train()
    dead_units = total_units = dead_channels = total_channels = 0
    for out in outputs:
        alive = (out > 0).any(axis=0)                  # (C, H, W): positive for some image
        dead_units += int((~alive).sum())
        total_units += alive.size
        channel_alive = alive.reshape(alive.shape[0], -1).any(axis=1)
        dead_channels += int((~channel_alive).sum())
        total_channels += channel_alive.size
    return dead_units / total_units, dead_channels / total_channels


def steps_to(accs, steps, target):
    """The first step whose test accuracy reaches target, or None."""
    return next((s for a, s in zip(accs, steps) if a >= target), None)


def run(config, seed, ctx):
    train, test = R.shapes10(seed, config["train_size"], config["test_size"], config["image_size"],
                             config["batch_size"], device=ctx.device)
    model = make_model(config).to(ctx.device)
    optimizer = tg.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    probe = tg.tensor(test.dataset.data[:config["probe"]], device=ctx.device)
    accs, acc_steps, dead_u, dead_c = [], [], [], []

    def record(step):
        accs.append(R.evaluate(model, test)[1])
        acc_steps.append(step)
        units, channels = dead_relus(model, probe)
        dead_u.append(units)
        dead_c.append(channels)

    record(0)

    def on_step(step, x, y, loss):
        if step % config["eval_every"] == 0:
            record(step)

    trained = R.train_steps(model, optimizer, R.batches(train), config["steps"], ctx, on_step=on_step)
    if acc_steps[-1] != trained["steps"]:
        record(trained["steps"])
    return {"final_test_acc": accs[-1], "mean_test_acc": float(np.mean(accs[1:])),
            "steps_to_target": steps_to(accs, acc_steps, config["target_acc"]), "target_acc": config["target_acc"],
            "dead_unit_fraction": dead_u[-1], "dead_channel_fraction": dead_c[-1],
            "final_train_loss": float(np.mean(trained["losses"][-10:])), "diverged": trained["diverged"],
            "params": sum(p.numel() for p in model.parameters()),
            "losses": trained["losses"], "test_accs": accs, "acc_steps": acc_steps,
            "dead_units": dead_u, "dead_channels": dead_c}


def verdict(results):
    final = R.separated(R.column(results, "bn_relu", "final_test_acc"), R.column(results, "relu_bn", "final_test_acc"))
    speed = R.separated(R.column(results, "bn_relu", "mean_test_acc"), R.column(results, "relu_bn", "mean_test_acc"))
    reason = (f"bn_relu vs relu_bn: final test accuracy {final}, mean test accuracy over training {speed}")
    if final == "less" or speed == "less":
        return "not reproduced", reason
    if final == "greater" and speed == "greater":
        return "reproduced", reason
    return "inconclusive", reason


def plot(results, summary):
    fig, axes = R.figure(3, "BN placement: conv -> BN -> ReLU vs conv -> ReLU -> BN (and no BN), "
                            "SmallCNN on Shapes10", width=4.6)
    for j, name in enumerate(VARIANTS):
        runs, color = results[name], R.COLORS[j]
        n = min(len(r["losses"]) for r in runs)
        R.band(axes[0], np.arange(1, n + 1), [r["losses"][:n] for r in runs], name, color=color)
        R.band(axes[1], runs[0]["acc_steps"], [r["test_accs"] for r in runs], name, color=color, marker="o")
        R.band(axes[2], runs[0]["acc_steps"], [r["dead_units"] for r in runs], name, color=color, marker=".")
    target = next(iter(results.values()))[0].get("target_acc")
    axes[0].set(xlabel="step", ylabel="training loss (cross entropy)", title="training loss")
    axes[1].set(xlabel="step", ylabel="test accuracy (eval mode)", title="test accuracy")
    axes[2].set(xlabel="step", ylabel="fraction of dead ReLU units (probe batch)", title="dead ReLUs")
    if target is not None:
        axes[1].axhline(target, color="gray", linestyle=":", label=f"target {target}")
    return R.finish(fig, axes)


def main(argv=None):
    return R.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
