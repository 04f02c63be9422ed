"""train_eval: BN's two regimes, its running statistics, and exact population statistics.

Claims (the chapter's section 4; Ioffe & Szegedy 2015, section 3.1 and Alg. 2):
  (a) in training mode one example's prediction depends on the other examples of its batch; in
      eval mode it does not;
  (b) running statistics that have not converged (too few steps, or a poor momentum) open a
      train/test gap that has nothing to do with overfitting;
  (c) the paper's population statistics, computed over the training set after training, close
      that gap.

Protocol. A small CNN (examples.models.SmallCNN, BatchNorm2d after each conv) on the embedded
Shapes10, trained with SGD for a fixed number of steps, once per BN momentum in
{0.001, 0.01, 0.1, 0.5, None (the cumulative average)} and seed. At checkpoints along training
we record: the test accuracy in eval mode with the running statistics; the gap between the
running statistics and the exact population statistics of the same weights over the training
set (tinygrad_bn.nn.utils.update_bn_stats on a copy): mean over every BN channel of
|running_mean - mean| / std + |sqrt(running_var / var) - 1|; and, at the end, the test accuracy
with the population statistics ("precise BN") and in train mode (batch statistics of test
batches). For (a), one fixed test image is put in 20 batches of random training images and the
spread (largest standard deviation over the 20 batches of any of its logits) of its logits is
measured in train mode and in eval mode, on a copy of the trained model.

Momentum convention: ours is PyTorch's, the weight of the NEW batch,
running = (1 - momentum) running + momentum batch; texts that quote 0.9-0.999 (Keras, TF,
the "decay") give the weight of the OLD value. Our 0.1 is their 0.9, our 0.001 their 0.999.

Verdict rule: reproduced when (a) the eval-mode spread is exactly 0 and the train-mode spread is
above 0 in every run, (b) at the end the slowest momentum (0.001) has a larger statistics gap
than momentum 0.1 and a lower running-statistics test accuracy than its own population-statistics
accuracy, both by more than the spread across seeds, and (c) for no momentum is the
population-statistics accuracy below the running-statistics accuracy by more than the spread;
not reproduced when (a) fails or a part of (b) or (c) is contradicted beyond the spread;
inconclusive otherwise.
"""
import copy
import sys

import numpy as np

import tinygrad_bn as tg
import tinygrad_bn.nn as nn
from tinygrad_bn.nn.utils import update_bn_stats
from tinygrad_bn.optim import SGD

from examples.experiments import _runner as R
from examples.models import SmallCNN

NAME = "train_eval"
CLAIM = ("In training mode a prediction depends on its batch companions and in eval mode it does not; "
         "unconverged running statistics (few steps or a poor momentum) open a train/test gap "
         "unrelated to overfitting, and exact population statistics close it.")
SOURCE = ("Ioffe & Szegedy 2015, section 3.1 and Algorithm 2; the chapter's section 4 "
          "(training vs inference, running statistics)")
RULE = ("reproduced when (a) the eval-mode spread is exactly 0 and the train-mode spread is\n"
        "above 0 in every run, (b) at the end the slowest momentum (0.001) has a larger statistics gap\n"
        "than momentum 0.1 and a lower running-statistics test accuracy than its own population-statistics\n"
        "accuracy, both by more than the spread across seeds, and (c) for no momentum is the\n"
        "population-statistics accuracy below the running-statistics accuracy by more than the spread;\n"
        "not reproduced when (a) fails or a part of (b) or (c) is contradicted beyond the spread;\n"
        "inconclusive otherwise.")
BUDGET = {"quick": "~20 s", "default": "~3 min", "full": "~25 min"}
TABLE_KEYS = ["acc_running", "acc_precise", "acc_train_mode", "stat_gap", "spread_train", "spread_eval"]
MOMENTA = {"m0.001": 0.001, "m0.01": 0.01, "m0.1": 0.1, "m0.5": 0.5, "cumulative": None}
SPREAD_BATCHES = 20


def configs(scale):
    base = {"quick": dict(steps=40, checkpoints=[10, 20, 40], train_size=600, image_size=12, widths=[8, 16, 32]),
            "default": dict(steps=150, checkpoints=[10, 25, 50, 100, 150], train_size=2000, image_size=16,
                            widths=[16, 32, 64]),
            "full": dict(steps=1500, checkpoints=[10, 50, 100, 300, 1000, 1500], train_size=10000,
                         image_size=32, widths=[32, 64, 128])}[scale]
    base.update(batch_size=32, test_size=500 if scale != "full" else 2000, lr=0.05)
    names = ["m0.001", "m0.1"] if scale == "quick" else list(MOMENTA)
    return {name: dict(base, momentum=MOMENTA[name]) for name in names}


# ---- what one run measures -------------------------------------------------------------------
def bn_layers(model):
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def stat_gap(model, population):
    """Mean over BN channels of |rm - m| / sqrt(v) + |sqrt(rv / v) - 1| (population m, v)."""
    gaps = []
    for bn, pop in zip(bn_layers(model), bn_layers(population)):
        rm, rv = bn.running_mean.numpy().astype(np.float64), bn.running_var.numpy().astype(np.float64)
        m, v = pop.running_mean.numpy().astype(np.float64), pop.running_var.numpy().astype(np.float64)
        gaps.append(np.abs(rm - m) / np.sqrt(v) + np.abs(np.sqrt(rv / v) - 1))
    return float(np.concatenate(gaps).mean())


def with_population_stats(model, train_loader):
    """A copy of model whose BN layers hold the exact population statistics over train_loader."""
    precise = copy.deepcopy(model)
    return update_bn_stats(precise, train_loader)


def logit_spread(model, image, companions, batch_size, training, rng, repeats=SPREAD_BATCHES):
    """Largest std over `repeats` random batches of any logit of `image` (put first in each batch
    of batch_size, the rest drawn from companions), with the model in train or eval mode. The
    model is a copy: a train-mode forward would move its running statistics."""
    model = copy.deepcopy(model)
    model.train(training)
    outputs = []
    with tg.no_grad():
        for _ in range(repeats):
            idx = rng.choice(len(companions), batch_size - 1, replace=False)
            batch = np.concatenate([image[None], companions[idx]])
            outputs.append(model(tg.tensor(batch)).numpy()[0].astype(np.float64))
    return float(np.std(np.stack(outputs), axis=0).max())


def accuracy_in_train_mode(model, loader):
    """Test accuracy with each test batch normalized by its own statistics (on a copy)."""
    model = copy.deepcopy(model)
    model.train()
    correct = seen = 0
    with tg.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum().item())
            seen += int(y.shape[0])
    return correct / max(seen, 1)


def build(config, seed):
    train_loader, test_loader = R.shapes10(seed, config["train_size"], config["test_size"],
                                           config["image_size"], config["batch_size"])
    model = SmallCNN(10, 3, "BatchNorm2d", config["image_size"], widths=tuple(config["widths"]))
    for bn in bn_layers(model):
        bn.momentum = config["momentum"]
    return model, train_loader, test_loader


def run(config, seed, ctx):
    model, train_loader, test_loader = build(config, seed)
    optimizer = SGD(model.parameters(), lr=config["lr"], momentum=0.9)
    checkpoints = set(config["checkpoints"])
    curve = {"step": [], "acc_running": [], "acc_precise": [], "stat_gap": []}

    def on_step(step, x, y, loss):
        if step in checkpoints:
            precise = with_population_stats(model, train_loader)
            curve["step"].append(step)
            curve["stat_gap"].append(stat_gap(model, precise))
            curve["acc_running"].append(R.evaluate(model, test_loader)[1])
            curve["acc_precise"].append(R.evaluate(precise, test_loader)[1])
            model.train()

    trained = R.train_steps(model, optimizer, R.batches(train_loader), config["steps"], ctx, on_step=on_step)
    rng = np.random.default_rng([seed, 7])
    test_x = test_loader.transform(test_loader.dataset.data) if test_loader.transform else test_loader.dataset.data
    train_x = train_loader.transform(train_loader.dataset.data) if train_loader.transform else train_loader.dataset.data
    image = np.asarray(test_x[0], dtype=np.float32)
    companions = np.asarray(train_x, dtype=np.float32)
    return {"acc_running": curve["acc_running"][-1], "acc_precise": curve["acc_precise"][-1],
            "acc_train_mode": accuracy_in_train_mode(model, test_loader),
            "stat_gap": curve["stat_gap"][-1], "final_loss": trained["losses"][-1],
            "diverged": trained["diverged"],
            "spread_train": logit_spread(model, image, companions, config["batch_size"], True, rng),
            "spread_eval": logit_spread(model, image, companions, config["batch_size"], False, rng),
            "curve": curve}


# ---- verdict and plot ------------------------------------------------------------------------
def verdict(results):
    runs = [r for rs in results.values() for r in rs]
    if any(r["spread_eval"] != 0.0 or not r["spread_train"] > 0 for r in runs):
        return "not reproduced", "(a) failed: an eval-mode spread was not exactly 0, or a train-mode spread was 0"
    slow, ref = "m0.001", "m0.1"
    gap = R.separated(R.column(results, slow, "stat_gap"), R.column(results, ref, "stat_gap"))
    fix = R.separated(R.column(results, slow, "acc_precise"), R.column(results, slow, "acc_running"))
    worse = [name for name in results
             if R.separated(R.column(results, name, "acc_precise"), R.column(results, name, "acc_running")) == "less"]
    parts = (f"(a) held: eval spread 0, train spread > 0 in all {len(runs)} runs; (b) stat gap {slow} vs {ref}: "
             f"{gap}; precise vs running accuracy at {slow}: {fix}; (c) configurations where precise "
             f"stats were worse beyond the spread: {worse or 'none'}")
    if gap == "less" or fix == "less" or worse:
        return "not reproduced", parts
    if gap == "greater" and fix == "greater":
        return "reproduced", parts
    return "inconclusive", parts


def plot(results, summary):
    fig, axes = R.figure(3, "train_eval: " + CLAIM, width=4.6)
    for i, (name, runs) in enumerate(results.items()):
        color = R.COLORS[i % len(R.COLORS)]
        steps = runs[0]["curve"]["step"]
        R.band(axes[0], steps, [r["curve"]["acc_running"] for r in runs], f"{name} running", color=color, marker="o")
        R.band(axes[0], steps, [r["curve"]["acc_precise"] for r in runs], f"{name} precise", color=color,
               linestyle="--")
        R.band(axes[1], steps, [r["curve"]["stat_gap"] for r in runs], name, color=color, marker="o")
    axes[0].set(xlabel="training step", ylabel="test accuracy", title="running (solid) vs population (dashed) stats")
    axes[1].set(xlabel="training step", ylabel="gap to population statistics", yscale="log",
                title="running statistics vs exact population statistics")
    names = list(results)
    x = np.arange(len(names))
    for k, (key, label) in enumerate([("spread_train", "train mode"), ("spread_eval", "eval mode")]):
        means = [summary[n][key]["mean"] for n in names]
        stds = [summary[n][key]["std"] for n in names]
        axes[2].bar(x + (k - 0.5) * 0.4, means, 0.4, yerr=stds, capsize=3, label=label)
    axes[2].set_xticks(x, names, rotation=30, fontsize=7)
    axes[2].set(ylabel=f"max std of one image's logits over {SPREAD_BATCHES} batches",
                title="(a) dependence on batch companions")
    for ax in axes[:2]:
        ax.legend(fontsize=5)
    R.finish(fig, axes[2:])
    return fig


def main(argv=None):
    return R.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
