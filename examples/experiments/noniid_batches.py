"""When the batches are not independent, for example each drawn from only a few classes, BN's
batch statistics differ systematically from the population's and the net degrades at inference;
Batch Renormalization narrows that gap, and batch-independent normalizers avoid it.

Protocol: examples.models.SmallCNN (three conv-norm-ReLU-maxpool stages) on the embedded
Shapes10, trained with SGD (momentum 0.9) on batches that each hold only k classes, for k in
{1, 2, 5, all}: for k below the number of classes, every batch draws k classes at random and then
an equal share of its B samples from each (the remainder spread over the first classes); for
k = all it is an i.i.d. draw of B samples from the whole training set. The same sampler, seed and
schedule for each normalizer: BatchNorm2d, BatchRenorm2d, GroupNorm and LayerNorm (the registry's
make_for_conv layers). BatchRenorm2d gets the paper's schedule (Ioffe 2017, section 4: rmax = 1,
dmax = 0 for the first 5k steps, then linear ramps to rmax = 3 at 40k and dmax = 5 at 25k) with
its step counts scaled so that 40k falls at half our training (scale = steps / 80k). Per
(normalizer, k, seed), after training:
- the test accuracy in eval mode (running statistics for BN and Batch Renorm);
- the test accuracy in train mode on i.i.d. test batches of the training batch size (buffers
  restored afterwards), the setting the net was never trained in for k < all;
- for BN and Batch Renorm, the gap between each layer's running statistics and the exact
  population statistics of the trained net over i.i.d. training batches
  (tinygrad_bn.nn.utils.update_bn_stats, "precise BN"): the mean over layers and channels of
  |running_mean - mean| / std and of |log(running_var / var)|, and the eval test accuracy with
  the population statistics in place of the running ones.
Plot: eval accuracy against k per normalizer (dashed: after precise BN), the train-mode accuracy,
and the statistics gap.

Verdict rule (RULE below, word for word):
with k0 the smallest k below all at which both batch-independent controls learn (GroupNorm's and LayerNorm's eval test accuracies both above chance, 1 / the number of classes, beyond the spread across seeds: where they do not, SGD on such batches fails whatever the normalizer, and a drop there says nothing about normalization), and drop(norm) = eval test accuracy at k = all minus at k0, per seed: reproduced when BatchNorm2d's eval accuracy at k0 is below its own at k = all beyond the spread, and BatchNorm2d's drop is larger than each of BatchRenorm2d's, GroupNorm's and LayerNorm's drops beyond the spread; not reproduced when BatchNorm2d's eval accuracy at k0 is above its own at k = all beyond the spread, or its drop is smaller than any of the other three's beyond the spread; inconclusive otherwise, and when there is no such k0.
"""
import sys

import numpy as np

import tinygrad_bn as tg
from tinygrad_bn.nn.utils import update_bn_stats
from tinygrad_bn.norms.batchnorm import _BatchNorm
from tinygrad_bn.norms.batchrenorm import renorm_schedule

from examples.experiments import _runner as R
from examples.models import SmallCNN

NAME = "noniid_batches"
CLAIM = ("When each batch holds only a few classes, BN's batch statistics differ systematically "
         "from the population's and the net degrades at inference; Batch Renorm narrows the gap, "
         "and batch-independent normalizers (GroupNorm, LayerNorm) avoid it.")
SOURCE = ("Ioffe 2017, 'Batch Renormalization', section 4.3 (non-i.i.d. minibatches) and "
          "Algorithm 1; the chapter's section 6.3")
RULE = __doc__.split("word for word):\n", 1)[1].strip()
BUDGET = {"quick": "~15 s", "default": "~1.5 min", "full": "~1.5 h"}
TABLE_KEYS = ["test_acc", "train_mode_iid_acc", "precise_bn_acc", "mean_gap", "log_var_gap"]
NORMS = ("BatchNorm2d", "BatchRenorm2d", "GroupNorm", "LayerNorm")
ALL = "all"
NUM_CLASSES = 10

SCALES = {"quick": dict(ks=(1, 2, 5, ALL), steps=40, batch_size=16, train_size=320, test_size=200,
                        image_size=8, widths=(4, 8, 8)),
          "default": dict(ks=(1, 2, 5, ALL), steps=250, batch_size=32, train_size=2000, test_size=500,
                          image_size=16, widths=(8, 16, 32)),
          "full": dict(ks=(1, 2, 5, ALL), steps=4000, batch_size=32, train_size=10000, test_size=2000,
                       image_size=32, widths=(32, 64, 128))}


def config_name(norm, k):
    return f"{norm} k{k}"


def configs(scale):
    base = dict(SCALES[scale], lr=0.05, momentum=0.9)
    ks = base.pop("ks")
    return {config_name(norm, k): dict(base, norm=norm, k=k) for norm in NORMS for k in ks}


# ---- batches of k classes ------------------------------------------------------------------
def class_batches(targets, k, batch_size, rng):
    """Index arrays, one batch each, forever: for k < the number of classes, k classes drawn at
    random and an equal share of the batch from each (remainder to the first ones), without
    replacement inside a class; for k = "all", batch_size indices drawn from all (i.i.d.)."""
    targets = np.asarray(targets)
    classes = np.unique(targets)
    by_class = {c: np.flatnonzero(targets == c) for c in classes}
    if k != ALL and not 1 <= k <= len(classes):
        raise ValueError(f"class_batches: k must be between 1 and {len(classes)} or 'all', got {k!r}")
    while True:
        if k == ALL:
            yield rng.choice(len(targets), size=batch_size, replace=False)
            continue
        chosen = rng.choice(classes, size=k, replace=False)
        shares = [batch_size // k + (1 if i < batch_size % k else 0) for i in range(k)]
        parts = [rng.choice(by_class[c], size=n, replace=n > len(by_class[c])) for c, n in zip(chosen, shares)]
        yield rng.permutation(np.concatenate(parts))


def tensor_batches(dataset, k, batch_size, seed, device):
    """(x, y) Tensors of class_batches over an ImageDataset."""
    rng = np.random.default_rng(50_000 + seed)
    for idx in class_batches(dataset.targets, k, batch_size, rng):
        yield tg.tensor(dataset.data[idx], device=device), tg.tensor(dataset.targets[idx], device=device)


def make_model(config):
    model = SmallCNN(image_size=config["image_size"], widths=tuple(config["widths"]), norm=config["norm"])
    if config["norm"] == "BatchRenorm2d":
        scale = config["steps"] / 80_000
        for m in model.modules():
            if isinstance(m, _BatchNorm) and hasattr(m, "rmax"):
                m.rmax, m.dmax = renorm_schedule(rmax=3.0, dmax=5.0, warmup_steps=round(5000 * scale),
                                                 rmax_steps=round(40_000 * scale),
                                                 dmax_steps=round(25_000 * scale))
    return model


# ---- measurements on the trained net ----------------------------------------------------------
def snapshot(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def train_mode_accuracy(model, dataset, batch_size, seed, device):
    """Accuracy of the train-mode forward (batch statistics) on i.i.d. batches of the dataset;
    parameters and buffers are as before afterwards."""
    saved = snapshot(model)
    order = np.random.default_rng(60_000 + seed).permutation(len(dataset.targets))
    correct = seen = 0
    model.train()
    try:
        with tg.no_grad():
            for start in range(0, len(order) - batch_size + 1, batch_size):
                idx = order[start:start + batch_size]
                logits = model(tg.tensor(dataset.data[idx], device=device))
                correct += int((logits.argmax(1).numpy() == dataset.targets[idx]).sum())
                seen += len(idx)
    finally:
        model.load_state_dict(saved)
    return correct / max(seen, 1)


def bn_layers(model):
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.running_mean is not None]


def statistics_gap(running, population, eps=1e-5):
    """(mean |rm - m| / sqrt(v + eps), mean |log((rv + eps) / (v + eps))|) over every channel of
    every layer: running and population are lists of (mean, var) array pairs, one per layer."""
    mean_gaps, var_gaps = [], []
    for (rm, rv), (m, v) in zip(running, population):
        mean_gaps.append(np.abs(rm - m) / np.sqrt(v + eps))
        var_gaps.append(np.abs(np.log((rv + eps) / (v + eps))))
    return float(np.mean(np.concatenate(mean_gaps))), float(np.mean(np.concatenate(var_gaps)))


def precise_bn(model, dataset, test, batch_size, seed, device, num_batches):
    """(mean gap, log-variance gap, eval accuracy with population statistics); the model is
    restored afterwards."""
    layers = bn_layers(model)
    running = [(m.running_mean.numpy().astype(np.float64), m.running_var.numpy().astype(np.float64))
               for m in layers]
    saved = snapshot(model)
    try:
        update_bn_stats(model, tensor_batches(dataset, ALL, batch_size, seed + 7, device), num_batches)
        population = [(m.running_mean.numpy().astype(np.float64), m.running_var.numpy().astype(np.float64))
                      for m in layers]
        acc = R.evaluate(model, test)[1]
    finally:
        model.load_state_dict(saved)
    return statistics_gap(running, population) + (acc,)


def run(config, seed, ctx):
    train, test = R.shapes10(seed, config["train_size"], config["test_size"], config["image_size"],
                             config["batch_size"], device=ctx.device)
    model = make_model(config).to(ctx.device)
    optimizer = tg.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    batches = tensor_batches(train.dataset, config["k"], config["batch_size"], seed, ctx.device)
    trained = R.train_steps(model, optimizer, batches, config["steps"], ctx, desc=f"k={config['k']}")
    acc = R.evaluate(model, test)[1]
    train_mode = train_mode_accuracy(model, test.dataset, config["batch_size"], seed, ctx.device)
    result = {"test_acc": acc, "train_mode_iid_acc": train_mode, "precise_bn_acc": None,
              "mean_gap": None, "log_var_gap": None, "diverged": trained["diverged"],
              "final_train_loss": float(np.mean(trained["losses"][-20:])) if trained["losses"] else None,
              "losses": trained["losses"]}
    if bn_layers(model):
        num_batches = max(1, len(train.dataset.targets) // config["batch_size"])
        mean_gap, var_gap, precise = precise_bn(model, train.dataset, test, config["batch_size"], seed,
                                                ctx.device, num_batches)
        result.update(mean_gap=mean_gap, log_var_gap=var_gap, precise_bn_acc=precise)
    return result


# ---- verdict and plot --------------------------------------------------------------------------
def _ks(results):
    ks = []
    for name in results:
        k = name.rsplit(" k", 1)[1]
        k = k if k == ALL else int(k)
        if k not in ks:
            ks.append(k)
    return sorted(ks, key=lambda k: NUM_CLASSES * 10 if k == ALL else k)


def drops(results, norm, k0):
    """Per seed: eval accuracy at k = all minus at k0."""
    full = R.column(results, config_name(norm, ALL), "test_acc")
    low = R.column(results, config_name(norm, k0), "test_acc")
    return [a - b for a, b in zip(full, low)]


def learns(results, norm, k):
    """Is the eval test accuracy above chance beyond the spread across seeds?"""
    accs = R.column(results, config_name(norm, k), "test_acc")
    return R.separated(accs, [1.0 / NUM_CLASSES] * len(accs)) == "greater"


def smallest_learnable_k(results):
    """The smallest k below all at which GroupNorm and LayerNorm both learn, or None."""
    for k in _ks(results):
        if k != ALL and all(learns(results, norm, k) for norm in ("GroupNorm", "LayerNorm")):
            return k
    return None


def verdict(results):
    k0 = smallest_learnable_k(results)
    if k0 is None:
        return "inconclusive", ("at no k below all do GroupNorm and LayerNorm both learn (eval "
                                "accuracy above chance beyond the spread): nothing to compare")
    bn_low = R.column(results, config_name("BatchNorm2d", k0), "test_acc")
    bn_all = R.column(results, config_name("BatchNorm2d", ALL), "test_acc")
    degrades = R.separated(bn_low, bn_all)
    bn_drop = drops(results, "BatchNorm2d", k0)
    others = {norm: R.separated(bn_drop, drops(results, norm, k0)) for norm in NORMS[1:]}
    reason = (f"k0 = {k0}; BatchNorm2d eval accuracy at k={k0} vs k=all: {degrades}; BatchNorm2d's "
              f"drop vs " + ", ".join(f"{norm}'s {side}" for norm, side in others.items()))
    if degrades == "greater" or "less" in others.values():
        return "not reproduced", reason
    if degrades == "less" and all(side == "greater" for side in others.values()):
        return "reproduced", reason
    return "inconclusive", reason


def plot(results, summary):
    ks = _ks(results)
    x = np.arange(len(ks))
    fig, axes = R.figure(3, "Non-i.i.d. batches (each of k classes): BN degrades at inference, Batch "
                            "Renorm narrows the gap, GroupNorm / LayerNorm avoid it? SmallCNN on "
                            "Shapes10", width=4.6)
    for j, norm in enumerate(NORMS):
        color = R.COLORS[j]
        R.band(axes[0], x, np.array([R.column(results, config_name(norm, k), "test_acc") for k in ks]).T,
               norm, color=color, marker="o")
        R.band(axes[1], x, np.array([R.column(results, config_name(norm, k), "train_mode_iid_acc")
                                     for k in ks]).T, norm, color=color, marker="o")
        if results[config_name(norm, ks[0])][0].get("mean_gap") is not None:
            R.band(axes[0], x, np.array([R.column(results, config_name(norm, k), "precise_bn_acc")
                                         for k in ks]).T, f"{norm} + precise BN", color=color,
                   marker="x", linestyle="--")
            R.band(axes[2], x, np.array([R.column(results, config_name(norm, k), "mean_gap") for k in ks]).T,
                   f"{norm}: |running mean - mean| / std", color=color, marker="o")
            R.band(axes[2], x, np.array([R.column(results, config_name(norm, k), "log_var_gap")
                                         for k in ks]).T, f"{norm}: |log(running var / var)|",
                   color=color, marker="s", linestyle=":")
    labels = [str(k) for k in ks]
    for ax in axes:
        ax.set_xticks(x, labels)
        ax.set_xlabel("classes per training batch (k)")
    axes[0].set(ylabel="test accuracy (eval mode)", title="eval-mode test accuracy")
    axes[1].set(ylabel="test accuracy (train mode, i.i.d. batches)", title="train-mode accuracy, i.i.d. batches")
    axes[2].set(ylabel="gap (mean over layers and channels)", yscale="log",
                title="running vs population statistics")
    return R.finish(fig, axes)


def main(argv=None):
    return R.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
