"""Dropout placed before BatchNorm shifts the variance: BN's running variance, accumulated under
dropout noise in training, no longer matches the variance of its input at inference, which hurts
the test accuracy; dropout after the last BN only avoids the shift.

Protocol: examples.models.SmallCNN (three conv-BN-ReLU-maxpool stages, global average pool,
linear) on the embedded Shapes10, in three placements with the same init scheme, data order and
schedule (SGD, lr 0.05, momentum 0.9): "none" (no dropout), "before_bn" (an nn.Dropout(p)
directly before every BN: conv -> dropout -> BN -> ReLU -> pool) and "after_last_bn" (one
nn.Dropout(p) after the last BN-ReLU-pool stage, before the classifier: no BN sees dropout),
each dropout placement with p in {0.1, 0.3, 0.5}. After training, the variance shift of every BN
layer: the ratio of its running variance to the actual (unbiased) variance of its input in eval
mode over the whole test set, per channel, averaged over channels; a ratio of 1 is no shift.
Recorded: the per-layer ratios, their mean over the BN layers, the test accuracy (eval mode),
and, as a check of the cause, the test accuracy and the ratios again after the BN statistics
are re-estimated on the training set with dropout switched off (one pass, no gradient, each BN's
cumulative average of the batch statistics).

Verdict rule (RULE below, word for word):
reproduced when, at the largest p, before_bn's mean variance-shift ratio is above none's beyond the spread across seeds, after_last_bn's is not above none's beyond the spread, and before_bn's test accuracy is below after_last_bn's beyond the spread; not reproduced when, at the largest p, before_bn's mean variance-shift ratio is not above none's beyond the spread, or before_bn's test accuracy is above after_last_bn's beyond the spread; inconclusive otherwise.
"""
import sys

import numpy as np

import tinygrad_bn as tg
from tinygrad_bn import nn

from examples.experiments import _runner as R
from examples.models import SmallCNN

NAME = "dropout_shift"
CLAIM = ("Dropout before BatchNorm shifts the variance: BN's running variance, learned under "
         "dropout noise, no longer matches the variance of its input at inference, which hurts; "
         "dropout after the last BN only avoids it.")
SOURCE = ("Li, Chen, Hu & Yang 2019, 'Understanding the Disharmony between Dropout and Batch "
          "Normalization by Variance Shift', sections 3-5; the 'Deep Dive' text's dropout section")
RULE = __doc__.split("word for word):\n", 1)[1].strip()
BUDGET = {"quick": "~15 s", "default": "~5 min", "full": "~1 h"}
TABLE_KEYS = ["mean_shift", "test_acc", "test_acc_recalibrated", "mean_shift_recalibrated",
              "final_train_loss"]
P_VALUES = (0.1, 0.3, 0.5)
PLACEMENTS = ("before_bn", "after_last_bn")

SCALES = {"quick": dict(steps=20, train_size=512, test_size=256, image_size=16, widths=(8, 16, 32)),
          "default": dict(steps=400, train_size=2000, test_size=500, image_size=16, widths=(16, 32, 64)),
          "full": dict(steps=4000, train_size=10000, test_size=2000, image_size=32,
                       widths=(32, 64, 128))}


def configs(scale):
    base = dict(SCALES[scale], lr=0.05, momentum=0.9, batch_size=64)
    out = {"none": dict(base, placement="none", p=0.0)}
    for placement in PLACEMENTS:
        for p in P_VALUES:
            out[f"{placement}_p{p:g}"] = dict(base, placement=placement, p=p)
    return out


def make_model(config):
    """SmallCNN with its dropout placed as config["placement"] says ("none", "before_bn",
    "after_last_bn"), rate config["p"]."""
    placement, p = config["placement"], config["p"]
    if placement not in ("none",) + PLACEMENTS:
        raise ValueError(f"dropout_shift: placement must be one of none, {', '.join(PLACEMENTS)}; "
                         f"got {placement!r}")
    model = SmallCNN(image_size=config["image_size"], widths=tuple(config["widths"]), norm="BatchNorm2d")
    layers = []
    for m in model.features:
        if placement == "before_bn" and isinstance(m, nn.BatchNorm2d):
            layers.append(nn.Dropout(p))
        layers.append(m)
    if placement == "after_last_bn":
        layers.append(nn.Dropout(p))  # after the last BN-ReLU-pool: only the classifier sees it
    model.features = nn.Sequential(*layers)
    return model


def bn_layers(model):
    return [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]


def variance_shift(model, loader):
    """Per BN layer (in model order): {"ratio": mean over channels of running_var / the unbiased
    variance of the BN's input over every batch of loader in eval mode, "ratio_min", "ratio_max"}.
    The model is left in eval mode, nothing in it changes."""
    bns = bn_layers(model)
    sums = [None] * len(bns)  # (count, sum, sum of squares) per channel, float64

    def hook_for(index):
        def hook(module, args):
            x = args[0].detach().numpy().astype(np.float64)
            axes = (0,) + tuple(range(2, x.ndim))
            part = (x.size // x.shape[1], x.sum(axis=axes), (x * x).sum(axis=axes))
            sums[index] = part if sums[index] is None else tuple(a + b for a, b in zip(sums[index], part))
        return hook

    handles = [bn.register_forward_pre_hook(hook_for(i)) for i, bn in enumerate(bns)]
    model.eval()
    try:
        with tg.no_grad():
            for x, _ in loader:
                model(x)
    finally:
        for h in handles:
            h.remove()
    out = []
    for bn, (n, s, ss) in zip(bns, sums):
        var = (ss - s * s / n) / (n - 1)
        ratio = bn.running_var.numpy().astype(np.float64) / var
        out.append({"ratio": float(ratio.mean()), "ratio_min": float(ratio.min()),
                    "ratio_max": float(ratio.max())})
    return out


def recalibrate(model, loader):
    """Re-estimate every BN's running statistics on loader with dropout off: reset, then one
    pass without gradient in train mode (dropout modules in eval), momentum None (a cumulative
    average of the batch statistics). Parameters do not change; the BNs' momenta are restored."""
    bns = bn_layers(model)
    momenta = [bn.momentum for bn in bns]
    model.train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
        with tg.no_grad():
            for x, _ in loader:
                model(x)
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        model.eval()


def run(config, seed, ctx):
    train, test = R.shapes10(seed, config["train_size"], config["test_size"], config["image_size"],
                             config["batch_size"], device=ctx.device)
    model = make_model(config).to(ctx.device)
    optimizer = tg.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    trained = R.train_steps(model, optimizer, R.batches(train), config["steps"], ctx)
    test_acc = R.evaluate(model, test)[1]
    shift = variance_shift(model, test)
    train.set_epoch(0)
    recalibrate(model, train)
    test_acc_recal = R.evaluate(model, test)[1]
    shift_recal = variance_shift(model, test)
    return {"test_acc": test_acc, "test_acc_recalibrated": test_acc_recal,
            "mean_shift": float(np.mean([s["ratio"] for s in shift])),
            "mean_shift_recalibrated": float(np.mean([s["ratio"] for s in shift_recal])),
            "final_train_loss": float(np.mean(trained["losses"][-10:])), "diverged": trained["diverged"],
            "shift_per_layer": [s["ratio"] for s in shift],
            "shift_per_layer_min": [s["ratio_min"] for s in shift],
            "shift_per_layer_max": [s["ratio_max"] for s in shift],
            "shift_per_layer_recalibrated": [s["ratio"] for s in shift_recal], "losses": trained["losses"]}


# ---- verdict and plot ----------------------------------------------------------------------
def verdict(results):
    p = max(P_VALUES)
    before, after = f"before_bn_p{p:g}", f"after_last_bn_p{p:g}"
    shift_before = R.separated(R.column(results, before, "mean_shift"), R.column(results, "none", "mean_shift"))
    shift_after = R.separated(R.column(results, after, "mean_shift"), R.column(results, "none", "mean_shift"))
    acc = R.separated(R.column(results, before, "test_acc"), R.column(results, after, "test_acc"))
    reason = (f"at p={p:g}: variance-shift ratio before_bn vs none {shift_before}, after_last_bn vs "
              f"none {shift_after}; test accuracy before_bn vs after_last_bn {acc}")
    if shift_before != "greater" or acc == "greater":
        return "not reproduced", reason
    if shift_after != "greater" and acc == "less":
        return "reproduced", reason
    return "inconclusive", reason


def plot(results, summary):
    fig, axes = R.figure(3, "Li et al. 2019 at our scale: dropout before BN shifts BN's variance "
                            "(running / eval-input variance) and costs accuracy; dropout after "
                            "the last BN does not. SmallCNN on Shapes10", width=4.6)
    n_layers = len(results["none"][0]["shift_per_layer"])
    layers = np.arange(1, n_layers + 1)
    shown = ["none"] + [f"before_bn_p{p:g}" for p in P_VALUES] + [f"after_last_bn_p{max(P_VALUES):g}"]
    for j, name in enumerate(shown):
        R.band(axes[0], layers, [r["shift_per_layer"] for r in results[name]], name, color=R.COLORS[j],
               marker="o")
    axes[0].axhline(1.0, color="k", lw=0.8, ls=":")
    axes[0].set(xlabel="BN layer (input side first)", ylabel="running var / eval input var",
                title="variance shift per BN layer", xticks=layers, yscale="log")
    ps = [0.0] + list(P_VALUES)
    for j, placement in enumerate(PLACEMENTS):
        names = ["none"] + [f"{placement}_p{p:g}" for p in P_VALUES]
        for ax, key in ((axes[1], "test_acc"), (axes[2], "mean_shift")):
            R.band(ax, ps, np.array([R.column(results, n, key) for n in names]).T, placement,
                   color=R.COLORS[j + 1], marker="o")
        R.band(axes[1], ps, np.array([R.column(results, n, "test_acc_recalibrated") for n in names]).T,
               f"{placement}, BN stats re-estimated without dropout", color=R.COLORS[j + 1], ls="--",
               marker="x")
    axes[1].set(xlabel="dropout rate p (p = 0: the 'none' runs)", ylabel="test accuracy (eval mode)",
                title="test accuracy vs p")
    axes[2].axhline(1.0, color="k", lw=0.8, ls=":")
    axes[2].set(xlabel="dropout rate p (p = 0: the 'none' runs)", ylabel="mean over BN layers of the ratio",
                title="mean variance shift vs p", yscale="log")
    return R.finish(fig, axes)


def main(argv=None):
    return R.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
