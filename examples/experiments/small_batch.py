"""small_batch: BN's accuracy falls as the batch shrinks; GroupNorm stays flat; LayerNorm and FRN
do not depend on the batch at all; Batch Renorm narrows BN's gap.

Claim (the chapter's section 6; Wu & He 2018, 'Group Normalization', Fig. 1): with a small
per-step batch, BN's batch statistics become noisy estimates and its error grows, while GN (and
LN, FRN: no batch axis in their statistics) is unaffected; Batch Renormalization (Ioffe 2017)
corrects the batch statistics towards the running ones and narrows the gap.

Protocol. examples.models ResNet-8 (post-activation, widths 16/32/64) with each normalizer of
the registry: BatchNorm2d ("BN"), GroupNorm (the usual grouping, groups_for_conv), LayerNorm
over (C, H, W), BatchRenorm2d (rmax 1 -> 3, dmax 0 -> 5: the paper's linear schedule, compressed
to the run: plain BN for the first 10% of the steps, rmax reaching 3 at 60%, dmax reaching 5 at
40%) and FilterResponseNorm2d; per-step batch sizes {2, 4, 8, 16, 32, 64}; the same number of
epochs over the same embedded Shapes10 training set for every batch size, SGD with momentum 0.9
and the learning rate scaled linearly with the batch (lr = base_lr * batch / 32). Recorded per
run: the test accuracy in eval mode (running statistics, for the BN-type layers), and for BN and
Batch Renorm also in train mode (each test batch, of the training batch size, normalized by its
own statistics: the train/test mismatch), and the final training loss. Note that with the epochs
fixed, a batch of 64 takes 32 times fewer steps than a batch of 2: at our small budget the large
batches are under-trained, for every normalizer alike; the claim is about how BN compares with
the batch-independent normalizers as the batch shrinks.

Verdict rule (RULE below, word for word):
reproduced when BN's test accuracy at batch 2 is below BN's at batch 32 beyond the spread across seeds, and GroupNorm's test accuracy at batch 2 is above BN's at batch 2 beyond the spread; not reproduced when BN's accuracy at batch 2 is above its accuracy at batch 32 beyond the spread, or GroupNorm's at batch 2 is below BN's at batch 2 beyond the spread; inconclusive otherwise. LayerNorm, FRN and Batch Renorm are reported beside it (Batch Renorm minus BN at batch 2, and its sign relative to the spread) but do not enter the verdict.
"""
import sys

import numpy as np

import tinygrad_bn as tg
from tinygrad_bn.data import DataLoader
from tinygrad_bn.norms.batchrenorm import BatchRenorm2d, renorm_schedule

from examples.experiments import _runner as R
from examples.experiments.train_eval import accuracy_in_train_mode
from examples.models import resnet

NAME = "small_batch"
CLAIM = ("BN's test accuracy falls as the per-step batch shrinks, while GroupNorm stays flat and "
         "LayerNorm and FRN are batch-independent; Batch Renorm narrows BN's gap.")
SOURCE = "Wu & He 2018, 'Group Normalization', Fig. 1; Ioffe 2017 (Batch Renorm); the chapter's section 6"
RULE = __doc__.split("word for word):\n", 1)[1].strip()
BUDGET = {"quick": "~20 s", "default": "~8 min (the largest experiment)", "full": "~2 h"}
TABLE_KEYS = ["test_acc", "test_acc_train_mode", "final_train_loss", "steps"]
NORMS = {"BN": "BatchNorm2d", "GN": "GroupNorm", "LN": "LayerNorm", "BRN": "BatchRenorm2d",
         "FRN": "FilterResponseNorm2d"}
SCALES = {"quick": dict(batches=[2, 16], epochs=1, train_size=64, test_size=64, image_size=8, depth=8),
          "default": dict(batches=[2, 4, 8, 16, 32, 64], epochs=4, train_size=512, test_size=300,
                          image_size=12, depth=8),
          "full": dict(batches=[2, 4, 8, 16, 32, 64], epochs=20, train_size=5000, test_size=1000,
                       image_size=16, depth=14)}


def configs(scale):
    s = SCALES[scale]
    out = {}
    for short, norm in NORMS.items():
        for batch in s["batches"]:
            out[f"{short}_b{batch}"] = dict(norm=norm, batch_size=batch, base_lr=0.1, lr=0.1 * batch / 32,
                                            epochs=s["epochs"], train_size=s["train_size"],
                                            test_size=s["test_size"], image_size=s["image_size"],
                                            depth=s["depth"])
    return out


def make_model(config, total_steps):
    model = resnet(config["depth"], norm=config["norm"], image_size=config["image_size"])
    warmup = max(1, int(0.1 * total_steps))
    for m in model.modules():
        if isinstance(m, BatchRenorm2d):
            m.rmax, m.dmax = renorm_schedule(3.0, 5.0, warmup, max(warmup, int(0.6 * total_steps)),
                                             max(warmup, int(0.4 * total_steps)))
    return model


def run(config, seed, ctx):
    bs = config["batch_size"]
    train, test = R.shapes10(seed, config["train_size"], config["test_size"], config["image_size"], bs,
                             device=ctx.device)
    steps = config["epochs"] * (config["train_size"] // bs)
    model = make_model(config, steps).to(ctx.device)
    optimizer = tg.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9)
    trained = R.train_steps(model, optimizer, R.batches(train), steps, ctx)
    test_acc = R.evaluate(model, test)[1]
    result = {"test_acc": test_acc, "final_train_loss": float(np.mean(trained["losses"][-max(1, steps // 10):])),
              "steps": trained["steps"], "diverged": trained["diverged"], "test_acc_train_mode": None}
    if config["norm"] in ("BatchNorm2d", "BatchRenorm2d"):  # the train/test mismatch
        small = DataLoader(test.dataset, batch_size=bs, shuffle=False, drop_last=True, device=ctx.device,
                           transform=test.transform)
        result["test_acc_train_mode"] = accuracy_in_train_mode(model, small)
    return result


# ---- verdict and plot --------------------------------------------------------------------------
def _acc(results, short, batch, key="test_acc"):
    return R.column(results, f"{short}_b{batch}", key)


def verdict(results):
    small = min(int(n.split("_b")[1]) for n in results)
    ref = 32 if f"BN_b32" in results else max(int(n.split("_b")[1]) for n in results)
    bn_falls = R.separated(_acc(results, "BN", small), _acc(results, "BN", ref))
    gn_vs_bn = R.separated(_acc(results, "GN", small), _acc(results, "BN", small))
    brn = np.mean(_acc(results, "BRN", small)) - np.mean(_acc(results, "BN", small))
    brn_side = R.separated(_acc(results, "BRN", small), _acc(results, "BN", small))
    reason = (f"BN at batch {small} vs batch {ref}: {bn_falls}; GN vs BN at batch {small}: {gn_vs_bn}; "
              f"(reported, not in the verdict) Batch Renorm minus BN at batch {small}: {brn:+.3f} ({brn_side})")
    if bn_falls == "greater" or gn_vs_bn == "less":
        return "not reproduced", reason
    if bn_falls == "less" and gn_vs_bn == "greater":
        return "reproduced", reason
    return "inconclusive", reason


def plot(results, summary):
    batches = sorted({int(n.split("_b")[1]) for n in results})
    fig, axes = R.figure(2, "small_batch: " + CLAIM + " (ResNet on Shapes10, same epochs, lr ~ batch)",
                         width=5.5)
    for j, short in enumerate(NORMS):
        means = [np.mean(_acc(results, short, b)) for b in batches]
        stds = [np.std(_acc(results, short, b), ddof=1) if len(_acc(results, short, b)) > 1 else 0.0
                for b in batches]
        axes[0].errorbar(batches, means, yerr=stds, marker="o", capsize=3, color=R.COLORS[j],
                         label=f"{NORMS[short]} (mean ± std over seeds)")
    for j, short in enumerate(("BN", "BRN")):
        for key, style, what in (("test_acc", "-", "eval mode (running stats)"),
                                 ("test_acc_train_mode", "--", "train mode (batch stats)")):
            vals = [_acc(results, short, b, key) for b in batches]
            means = [np.mean(v) for v in vals]
            stds = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in vals]
            axes[1].errorbar(batches, means, yerr=stds, marker="o", capsize=3, linestyle=style,
                             color=R.COLORS[0 if short == "BN" else 3], label=f"{NORMS[short]}: {what}")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set(xlabel="per-step batch size", ylabel="test accuracy")
    axes[0].set_title("test accuracy vs batch size")
    axes[1].set_title("BN-type layers: eval mode vs train mode on test batches")
    return R.finish(fig, axes)


def main(argv=None):
    return R.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
