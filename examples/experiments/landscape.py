"""With BatchNorm the loss landscape is smoother: the loss varies less along the gradient, the
gradient is more predictive (changes less), and the effective beta-smoothness is smaller.

Protocol: examples.models.SmallCNN on the embedded Shapes10, with BatchNorm2d ("bn") and the same
net with every BN replaced by an identity ("no_bn"), the same init scheme, data order and
schedule (SGD, lr 0.05, momentum 0.9). Every k steps, on the current batch and in training mode,
we move the parameters x along the current gradient g, x' = x - s g, for step sizes s in
[0.05, 0.4] (8 values, as in Santurkar et al.'s Fig. 4; in units of our learning rate that is 1x
to 8x a training step), and record, over the step sizes:
  - loss_range: max - min of L(x') (including s = 0);
  - grad_change: the largest l2 change ||grad L(x') - grad L(x)||;
  - beta: the largest ||grad L(x) - grad L(x')|| / ||x - x'||, the effective beta-smoothness.
After a probe the parameters, buffers (BN's running statistics) and the optimizer's state are
restored bit for bit, so probing does not alter training.

Verdict rule (RULE below, word for word):
reproduced when, with each seed's quantities averaged over the probe points, the BN net's loss range, gradient change and beta-smoothness are all below the no-BN net's beyond the spread across seeds; not reproduced when any of the three is above beyond the spread; inconclusive otherwise.
"""
import sys

import numpy as np

import tinygrad_bn as tg
from tinygrad_bn import nn
import tinygrad_bn.nn.functional as F

from examples.experiments import _runner as R
from examples.models import SmallCNN

NAME = "landscape"
CLAIM = ("With BatchNorm the loss varies less along the gradient, the gradient is more "
         "predictive, and the effective beta-smoothness is smaller.")
SOURCE = "Santurkar et al. 2018, 'How Does Batch Normalization Help Optimization?', section 3 and Fig. 4"
RULE = __doc__.split("word for word):\n", 1)[1].strip()
BUDGET = {"quick": "~15 s", "default": "~4 min", "full": "~40 min"}
QUANTITIES = ("loss_range", "grad_change", "beta")
TABLE_KEYS = ["mean_loss_range", "mean_grad_change", "mean_beta", "final_train_loss", "test_acc"]
STEP_SIZES = tuple(np.linspace(0.05, 0.4, 8).round(4))

SCALES = {"quick": dict(steps=20, every=10, train_size=512, test_size=256, image_size=16, widths=(8, 16, 32)),
          "default": dict(steps=300, every=25, train_size=2000, test_size=500, image_size=16, widths=(16, 32, 64)),
          "full": dict(steps=3000, every=100, train_size=10000, test_size=2000, image_size=32,
                       widths=(32, 64, 128))}


def configs(scale):
    base = dict(SCALES[scale], lr=0.05, momentum=0.9, batch_size=64, step_sizes=list(STEP_SIZES))
    return {"bn": dict(base, norm="BatchNorm2d"), "no_bn": dict(base, norm="none")}


def make_model(config):
    model = SmallCNN(image_size=config["image_size"], widths=tuple(config["widths"]), norm="BatchNorm2d")
    if config["norm"] == "none":  # the same net and init, every BN an identity
        model.features = nn.Sequential(*[nn.Identity() if isinstance(m, nn.BatchNorm2d) else m
                                         for m in model.features])
    return model


# ---- the probe -----------------------------------------------------------------------------
def snapshot(model, optimizer):
    """Copies of every parameter and buffer, and the optimizer's state dict (itself a copy)."""
    return ({k: v.detach().numpy().copy() for k, v in model.state_dict().items()}, optimizer.state_dict())


def restore(model, optimizer, saved):
    model.load_state_dict(saved[0])
    optimizer.load_state_dict(saved[1])


def _loss_and_grads(model, params, x, y):
    loss = F.cross_entropy(model(x), y)
    grads = tg.autograd.grad(loss, params)
    return float(loss.item()), [g.numpy().astype(np.float64) for g in grads]


def probe(model, optimizer, x, y, step_sizes):
    """The three quantities along the gradient at the current point; restores everything after."""
    saved = snapshot(model, optimizer)
    params = [p for p in model.parameters() if p.requires_grad]
    start = [p.detach().numpy().copy() for p in params]
    loss0, g0 = _loss_and_grads(model, params, x, y)
    g_norm = float(np.sqrt(sum((g * g).sum() for g in g0)))
    losses, changes, betas = [loss0], [], []
    try:
        with np.errstate(all="ignore"):
            for s in step_sizes:
                with tg.no_grad():
                    for p, p0, g in zip(params, start, g0):
                        p.copy_(tg.tensor((p0 - s * g).astype(p0.dtype)))
                loss, g1 = _loss_and_grads(model, params, x, y)
                change = float(np.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(g1, g0))))
                losses.append(loss)
                changes.append(change)
                betas.append(change / (s * g_norm) if g_norm > 0 else float("nan"))
    finally:
        restore(model, optimizer, saved)
    finite = [v for v in losses if np.isfinite(v)]
    return {"loss_range": float(max(finite) - min(finite)) if len(finite) == len(losses) else float("nan"),
            "grad_change": float(max(changes)), "beta": float(max(betas)), "grad_norm": g_norm,
            "losses": losses, "grad_changes": changes, "betas": betas}


def run(config, seed, ctx):
    train, test = R.shapes10(seed, config["train_size"], config["test_size"], config["image_size"],
                             config["batch_size"], device=ctx.device)
    model = make_model(config).to(ctx.device)
    optimizer = tg.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    probes = {q: [] for q in QUANTITIES}
    probe_steps = []

    def on_step(step, x, y, loss):
        if step % config["every"] == 0 or step == 1:
            p = probe(model, optimizer, x, y, config["step_sizes"])
            for q in QUANTITIES:
                probes[q].append(p[q])
            probe_steps.append(step)

    trained = R.train_steps(model, optimizer, R.batches(train), config["steps"], ctx, on_step=on_step)
    _, acc = R.evaluate(model, test)
    result = {f"mean_{q}": float(np.nanmean(probes[q])) if probes[q] else float("nan") for q in QUANTITIES}
    result.update({"final_train_loss": float(np.mean(trained["losses"][-10:])), "test_acc": acc,
                   "diverged": trained["diverged"], "probe_steps": probe_steps, "losses": trained["losses"]})
    result.update({f"probe_{q}": probes[q] for q in QUANTITIES})
    return result


# ---- verdict and plot ----------------------------------------------------------------------
def verdict(results):
    sides = {q: R.separated(R.column(results, "bn", f"mean_{q}"), R.column(results, "no_bn", f"mean_{q}"))
             for q in QUANTITIES}
    reason = "; ".join(f"{q}: BN {side} than no BN" if side != "overlap" else f"{q}: overlap"
                       for q, side in sides.items())
    if "greater" in sides.values():
        return "not reproduced", reason
    if all(side == "less" for side in sides.values()):
        return "reproduced", reason
    return "inconclusive", reason


def plot(results, summary):
    fig, axes = R.figure(3, "Santurkar et al. Fig. 4 at our scale: along the gradient, the loss "
                            "and gradient vary less with BN (SmallCNN on Shapes10, bands: min-max over seeds)")
    labels = {"loss_range": ("loss landscape: range of L(x - s g), s in [0.05, 0.4]", "loss range (nats)"),
              "grad_change": ("gradient predictiveness: max ||g(x') - g(x)||", "l2 change of the gradient"),
              "beta": ("effective beta-smoothness: max ||g(x) - g(x')|| / ||x - x'||", "beta")}
    for j, name in enumerate(("bn", "no_bn")):
        runs = results[name]
        steps = runs[0]["probe_steps"]
        for ax, q in zip(axes, QUANTITIES):
            R.band(ax, steps, [r[f"probe_{q}"] for r in runs], name, color=R.COLORS[j], spread="range",
                   marker=".")
    for ax, q in zip(axes, QUANTITIES):
        ax.set(xlabel="training step", ylabel=labels[q][1], yscale="log")
        ax.set_title(labels[q][0], fontsize=8)
    return R.finish(fig, axes)


def main(argv=None):
    return R.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
