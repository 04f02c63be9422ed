"""What BN's learnable gamma and beta are for: forcing a sigmoid's input to zero mean and unit
variance confines most of it to the sigmoid's near-linear region; the learned gamma and beta
restore the lost expressiveness; and BN can represent the identity.

Protocol: ics_percentiles' SigmoidMLP (3 hidden layers of 100 sigmoid units, Ioffe & Szegedy's
net) on the embedded digits (MNIST with --dataset mnist --data-dir DIR), three ways: "bn_affine"
(BatchNorm1d, gamma and beta learned), "bn_frozen" (BatchNorm1d(affine=False): gamma = 1,
beta = 0) and "no_bn". Same init, data order and schedule (SGD, lr 0.1, momentum 0.9, batch 60).
Every few steps: the test accuracy, and the fraction of all sigmoid inputs (every hidden unit,
the whole test set, training-mode batch statistics) in the near-linear region |z| < 1. At the
end: the learned gamma and beta of every layer. The identity claim is an exact invariant, in
tests/examples/experiments/test_affine_ablation.py: with gamma = sqrt(var_B + eps) and
beta = mu_B, BN in training mode returns its input.

Verdict rule (RULE below, word for word):
reproduced when the frozen BN's mean near-linear fraction over training is above the learned BN's beyond the spread across seeds, and the learned BN's final test accuracy is above the frozen BN's beyond the spread; not reproduced when either goes the other way beyond the spread; inconclusive otherwise. (No BN is shown for reference and is not part of the rule.)
"""
import sys

import numpy as np

import tinygrad_bn as tg

from examples.experiments import _runner as R
from examples.experiments.ics_percentiles import SigmoidMLP, sigmoid_inputs, test_batch

NAME = "affine_ablation"
CLAIM = ("Normalizing a sigmoid's input to unit variance confines it to the near-linear region "
         "|z| < 1; BN's learnable gamma and beta restore the lost expressiveness (and BN can "
         "represent the identity).")
SOURCE = ("Ioffe & Szegedy 2015, 'Batch Normalization', section 3 (the scale and shift gamma, "
          "beta); the chapter's section 2.2 and the 'mechanics' text")
RULE = __doc__.split("word for word):\n", 1)[1].strip()
BUDGET = {"quick": "~15 s", "default": "~3 min", "full": "~30 min"}
TABLE_KEYS = ["final_test_acc", "mean_linear_fraction", "final_linear_fraction", "gamma_mean",
              "beta_abs_mean"]
VARIANTS = {"bn_affine": "bn", "bn_frozen": "bn_frozen", "no_bn": "none"}

SCALES = {"quick": dict(steps=150, eval_every=15),
          "default": dict(steps=2000, eval_every=50),
          "full": dict(steps=20000, eval_every=250)}


def add_arguments(parser):
    R.add_dataset_options(parser)


def configs(scale, args):
    base = dict(SCALES[scale], lr=0.1, momentum=0.9, batch_size=60, hidden=100, depth=3,
                dataset=args.dataset, data_dir=args.data_dir)
    return {name: dict(base, norm=norm) for name, norm in VARIANTS.items()}


def linear_fraction(inputs, threshold=1.0):
    """The fraction of all sigmoid inputs (a list of arrays, one per layer) with |z| < threshold."""
    flat = np.concatenate([np.abs(z).ravel() for z in inputs])
    return float(np.mean(flat < threshold))


def run(config, seed, ctx):
    train, test = R.dataset_loaders(ctx.args, seed, config["batch_size"], device=ctx.device)
    probe, _ = test_batch(test)
    model = SigmoidMLP(int(np.prod(probe.shape[1:])), config["hidden"], config["depth"],
                       norm=config["norm"]).to(ctx.device)
    optimizer = tg.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    steps, accs, fractions, per_layer = [], [], [], []

    def measure(step):
        inputs = sigmoid_inputs(model, probe)
        fractions.append(linear_fraction(inputs))
        per_layer.append([linear_fraction([z]) for z in inputs])
        accs.append(R.evaluate(model, test)[1])
        steps.append(step)
        model.train()

    measure(0)
    trained = R.train_steps(model, optimizer, R.batches(train), config["steps"], ctx,
                            on_step=lambda step, *_: measure(step) if step % config["eval_every"] == 0 else None)
    if steps[-1] != trained["steps"]:
        measure(trained["steps"])
    gammas = [m.weight.detach().numpy().astype(np.float64).tolist() for m in model.norms
              if getattr(m, "weight", None) is not None]
    betas = [m.bias.detach().numpy().astype(np.float64).tolist() for m in model.norms
             if getattr(m, "bias", None) is not None]
    return {"final_test_acc": accs[-1], "mean_linear_fraction": float(np.mean(fractions[1:])),
            "final_linear_fraction": fractions[-1],
            "gamma_mean": float(np.mean(gammas)) if gammas else None,
            "beta_abs_mean": float(np.mean(np.abs(betas))) if betas else None,
            "diverged": trained["diverged"], "steps": steps, "test_accs": accs,
            "linear_fractions": fractions, "linear_fractions_per_layer": per_layer,
            "gammas": gammas, "betas": betas}


def verdict(results):
    frac = R.separated(R.column(results, "bn_frozen", "mean_linear_fraction"),
                       R.column(results, "bn_affine", "mean_linear_fraction"))
    acc = R.separated(R.column(results, "bn_affine", "final_test_acc"),
                      R.column(results, "bn_frozen", "final_test_acc"))
    reason = (f"near-linear fraction: frozen vs learned BN {frac}; final test accuracy: learned vs "
              f"frozen BN {acc}")
    if frac == "less" or acc == "less":
        return "not reproduced", reason
    if frac == "greater" and acc == "greater":
        return "reproduced", reason
    return "inconclusive", reason


def plot(results, summary):
    fig, axes = R.figure(3, "What gamma and beta are for: frozen BN keeps sigmoid inputs near-linear; "
                            "learned gamma, beta free them", width=4.6)
    names = list(VARIANTS)
    for j, name in enumerate(names):
        runs = results[name]
        R.band(axes[0], runs[0]["steps"], [r["linear_fractions"] for r in runs], name, color=R.COLORS[j])
    axes[0].set(xlabel="training step", ylabel="fraction of sigmoid inputs with |z| < 1",
                title="near-linear fraction (all hidden units, test set)")
    accs = [[r["final_test_acc"] for r in results[n]] for n in names]
    means = [np.mean(a) for a in accs]
    stds = [np.std(a, ddof=1) if len(a) > 1 else 0.0 for a in accs]
    axes[1].bar(names, means, yerr=stds, color=R.COLORS[:len(names)], capsize=4,
                label="mean ± std over seeds")
    for i, a in enumerate(accs):
        axes[1].scatter([i] * len(a), a, color="k", s=10, zorder=3)
    axes[1].set(ylabel="final test accuracy", title="final test accuracy (dots: seeds)")
    gammas = np.concatenate([np.ravel(r["gammas"]) for r in results["bn_affine"]])
    betas = np.concatenate([np.ravel(r["betas"]) for r in results["bn_affine"]])
    axes[2].hist(gammas, bins=40, alpha=0.6, label=f"gamma (all layers, seeds; mean {gammas.mean():.2f})")
    axes[2].hist(betas, bins=40, alpha=0.6, label=f"beta (mean {betas.mean():.2f})")
    axes[2].axvline(1.0, color="k", lw=0.8, ls="--")
    axes[2].axvline(0.0, color="k", lw=0.8, ls=":")
    axes[2].set(xlabel="value at the end of training", ylabel="count (units)",
                title="learned gamma and beta (bn_affine)")
    return R.finish(fig, axes)


def main(argv=None):
    return R.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
