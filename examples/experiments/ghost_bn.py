"""ghost_bn: with very large batches BN's statistics become near-exact, the regularizing noise
disappears and generalization suffers; ghost batches of size k restore the noise.

Claim (Hoffer, Hubara & Soudry 2017, 'Train longer, generalize better', section 4 and Alg. 1;
the "Deep Dive" text): BN over one large batch normalizes with near-population statistics;
normalizing each ghost batch of k samples with its own statistics (sharing weight and bias; one
EMA step per ghost batch) brings back the small-batch noise and closes part of the
generalization gap of large-batch training.

Protocol. examples.models.SmallCNN (widths 8/16/32; its BatchNorm2d layers replaced by
tinygrad_bn's GhostBatchNorm2d with virtual_batch_size k where named) on the embedded Shapes10,
SGD with momentum 0.9, the same number of epochs for every configuration:
  * "bn_large":   BN over batches of 512 (the large-batch baseline),
  * "ghost_k8", "ghost_k16", "ghost_k32", "ghost_k64": GhostBN with k samples per ghost batch,
    the same batches of 512,
  * "bn_small":   BN over batches of 32 (the small-batch reference, 16x more steps).
The learning rate follows Hoffer et al.'s square-root scaling, lr = 0.05 * sqrt(batch / 32)
(0.2 at 512), fixed before the run. Recorded per run: the final test accuracy and loss (eval
mode), the training-set accuracy and loss in eval mode, and the generalization gap = training
accuracy - test accuracy.

Verdict rule (RULE below, word for word):
reproduced when large-batch BN's test accuracy is below small-batch BN's beyond the spread across seeds (the large-batch loss exists at this scale), and GhostBN with k = 32 (fixed beforehand: the small batch's size) has a test accuracy above large-batch BN's beyond the spread; not reproduced when large-batch BN's test accuracy is above small-batch BN's beyond the spread, or GhostBN k = 32 is below large-batch BN beyond the spread; inconclusive otherwise. The other k and the generalization gaps are reported beside it.
"""
import math
import sys

import numpy as np

import tinygrad_bn as tg
from tinygrad_bn.norms.ghostbn import GhostBatchNorm2d

from examples.experiments import _runner as R
from examples.models import SmallCNN

NAME = "ghost_bn"
CLAIM = ("With very large batches BN's statistics become near-exact, the regularizing noise "
         "disappears and generalization suffers; ghost batches of size k restore the noise.")
SOURCE = ("Hoffer, Hubara & Soudry 2017, 'Train longer, generalize better', section 4, Algorithm 1; "
          "the Deep Dive text (large batches)")
RULE = __doc__.split("word for word):\n", 1)[1].strip()
BUDGET = {"quick": "~15 s", "default": "~2.5 min", "full": "~1 h"}
TABLE_KEYS = ["test_acc", "train_acc", "gen_gap", "test_loss", "steps"]
REFERENCE_K = 32
SCALES = {"quick": dict(large=128, small=32, ks=[8, 32], epochs=2, train_size=256, test_size=128,
                        image_size=8, widths=[4, 8, 16]),
          "default": dict(large=512, small=32, ks=[8, 16, 32, 64], epochs=20, train_size=2048, test_size=500,
                          image_size=12, widths=[8, 16, 32]),
          "full": dict(large=512, small=32, ks=[8, 16, 32, 64, 128], epochs=60, train_size=8192,
                       test_size=2000, image_size=16, widths=[16, 32, 64])}


def configs(scale):
    s = SCALES[scale]
    base = dict(epochs=s["epochs"], train_size=s["train_size"], test_size=s["test_size"],
                image_size=s["image_size"], widths=s["widths"], momentum=0.9)

    def lr(batch):
        return 0.05 * math.sqrt(batch / 32)
    out = {"bn_large": dict(base, batch_size=s["large"], ghost=None, lr=lr(s["large"]))}
    for k in s["ks"]:
        out[f"ghost_k{k}"] = dict(base, batch_size=s["large"], ghost=k, lr=lr(s["large"]))
    out["bn_small"] = dict(base, batch_size=s["small"], ghost=None, lr=lr(s["small"]))
    return out


def make_model(config):
    model = SmallCNN(10, 3, "GhostBatchNorm2d" if config["ghost"] else "BatchNorm2d",
                     config["image_size"], widths=tuple(config["widths"]))
    for m in model.modules():
        if isinstance(m, GhostBatchNorm2d):
            m.virtual_batch_size = int(config["ghost"])
    return model


def run(config, seed, ctx):
    bs = config["batch_size"]
    train, test = R.shapes10(seed, config["train_size"], config["test_size"], config["image_size"], bs,
                             device=ctx.device)
    steps = config["epochs"] * (config["train_size"] // bs)
    model = make_model(config).to(ctx.device)
    optimizer = tg.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    trained = R.train_steps(model, optimizer, R.batches(train), steps, ctx)
    test_loss, test_acc = R.evaluate(model, test)
    train_loss, train_acc = R.evaluate(model, train)
    return {"test_acc": test_acc, "test_loss": test_loss, "train_acc": train_acc, "train_loss": train_loss,
            "gen_gap": train_acc - test_acc, "batch_size": bs, "steps": trained["steps"], "diverged": trained["diverged"],
            "losses": trained["losses"]}


# ---- verdict and plot --------------------------------------------------------------------------
def verdict(results):
    acc = lambda name: R.column(results, name, "test_acc")  # noqa: E731
    large_vs_small = R.separated(acc("bn_large"), acc("bn_small"))
    ghost = f"ghost_k{REFERENCE_K}"
    ghost_vs_large = R.separated(acc(ghost), acc("bn_large"))
    others = ", ".join(f"k={n[len('ghost_k'):]} {R.separated(acc(n), acc('bn_large'))}"
                       for n in results if n.startswith("ghost_k") and n != ghost)
    reason = (f"large-batch BN vs small-batch BN test accuracy: {large_vs_small}; GhostBN k={REFERENCE_K} "
              f"vs large-batch BN: {ghost_vs_large}; (reported) other k vs large-batch BN: {others or 'none'}")
    if large_vs_small == "greater" or ghost_vs_large == "less":
        return "not reproduced", reason
    if large_vs_small == "less" and ghost_vs_large == "greater":
        return "reproduced", reason
    return "inconclusive", reason


def plot(results, summary):
    ghosts = sorted((int(n[len("ghost_k"):]), n) for n in results if n.startswith("ghost_k"))
    ks = [k for k, _ in ghosts]
    fig, axes = R.figure(2, "ghost_bn: " + CLAIM + " (SmallCNN on Shapes10)", width=5.5)
    for ax, key, label in ((axes[0], "test_acc", "test accuracy"),
                           (axes[1], "gen_gap", "generalization gap (train acc - test acc)")):
        vals = [R.column(results, n, key) for _, n in ghosts]
        ax.errorbar(ks, [np.mean(v) for v in vals], yerr=[np.std(v, ddof=1) if len(v) > 1 else 0 for v in vals],
                    marker="o", capsize=3, color=R.COLORS[0],
                    label=f"GhostBN, batch {results[ghosts[0][1]][0]['batch_size']} (mean ± std)")
        for j, (name, what) in enumerate((("bn_large", "BN, large batch"), ("bn_small", "BN, small batch"))):
            v = R.column(results, name, key)
            m, s = np.mean(v), (np.std(v, ddof=1) if len(v) > 1 else 0.0)
            ax.axhline(m, color=R.COLORS[j + 1],
                       label=f"{what} ({results[name][0]['batch_size']}; mean, band ±1 std)")
            ax.axhspan(m - s, m + s, color=R.COLORS[j + 1], alpha=0.15, lw=0)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set(xlabel="ghost batch size k (samples)", ylabel=label, title=label)
    return R.finish(fig, axes)


def main(argv=None):
    return R.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
