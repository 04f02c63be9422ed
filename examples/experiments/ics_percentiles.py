"""With BN, the distribution of a sigmoid's input stays stable through training, and the network
trains faster and reaches a higher test accuracy (Ioffe & Szegedy 2015, Figure 1).

Protocol: the paper's net, 3 fully connected hidden layers of 100 sigmoid units and a softmax
output (SigmoidMLP below), with BatchNorm1d before each sigmoid ("bn") and without ("no_bn"),
same init, data order and schedule (SGD, lr 0.1, momentum 0.9, batch 60). Data: the embedded
real digits (tinygrad_bn.data.Digits, 8x8) by default, MNIST with --dataset mnist --data-dir DIR.
Every few steps: the test accuracy (eval mode), and the 15th, 50th and 85th percentiles of the
input of one last-layer sigmoid (unit 0 of hidden layer 3) over the test set, measured with the
net in training mode (batch statistics of the test set, the running statistics left untouched),
which is the distribution the sigmoid sees while it trains. Drift = the range (max - min) of each
percentile over training, after the first measurement; we average it over the three
percentiles. "Faster" = the mean test accuracy over the measurements (the area under the
accuracy curve, divided by its length).

Verdict rule (RULE below, word for word):
reproduced when BN's final test accuracy and its mean test accuracy over training are both above no BN's beyond the spread across seeds, and BN's percentile drift is below no BN's beyond the spread; not reproduced when any of the three goes the other way beyond the spread; inconclusive otherwise.
"""
import sys

import numpy as np

import tinygrad_bn as tg
from tinygrad_bn import nn

from examples.experiments import _runner as R

NAME = "ics_percentiles"
CLAIM = ("With BN before each sigmoid, the distribution of a sigmoid's input (its 15th, 50th and "
         "85th percentiles) stays stable through training, and the net trains faster and reaches a "
         "higher test accuracy.")
SOURCE = "Ioffe & Szegedy 2015, 'Batch Normalization', section 4.1, Figure 1; the chapter's section 5.1"
RULE = __doc__.split("word for word):\n", 1)[1].strip()
BUDGET = {"quick": "~10 s", "default": "~2 min", "full": "~20 min"}
TABLE_KEYS = ["final_test_acc", "mean_test_acc", "drift", "drift_p15", "drift_p50", "drift_p85"]
PERCENTILES = (15, 50, 85)

SCALES = {"quick": dict(steps=150, eval_every=15),
          "default": dict(steps=2000, eval_every=50),
          "full": dict(steps=20000, eval_every=250)}


def add_arguments(parser):
    R.add_dataset_options(parser)


def configs(scale, args):
    base = dict(SCALES[scale], lr=0.1, momentum=0.9, batch_size=60, hidden=100, depth=3,
                dataset=args.dataset, data_dir=args.data_dir)
    return {"no_bn": dict(base, norm="none"), "bn": dict(base, norm="bn")}


class SigmoidMLP(nn.Module):
    """Ioffe & Szegedy's MNIST net: `depth` hidden layers Linear -> [BN] -> sigmoid, then a
    linear softmax layer. norm: "bn" (BatchNorm1d, gamma and beta learned), "bn_frozen"
    (BatchNorm1d(affine=False): gamma = 1, beta = 0) or "none". With record=True, forward keeps
    each sigmoid's input (detached NumPy) in self.sigmoid_inputs."""

    def __init__(self, in_features, hidden=100, depth=3, num_classes=10, norm="bn"):
        super().__init__()
        if norm not in ("bn", "bn_frozen", "none"):
            raise ValueError(f"SigmoidMLP: norm must be 'bn', 'bn_frozen' or 'none', got {norm!r}")
        self.linears = nn.ModuleList([nn.Linear(in_features if i == 0 else hidden, hidden)
                                      for i in range(depth)])
        self.norms = nn.ModuleList([nn.Identity() if norm == "none" else
                                    nn.BatchNorm1d(hidden, affine=(norm == "bn")) for _ in range(depth)])
        self.out = nn.Linear(hidden, num_classes)
        self.record, self.sigmoid_inputs = False, []

    def forward(self, x):
        x = x.flatten(1)
        self.sigmoid_inputs = []
        for linear, norm in zip(self.linears, self.norms):
            z = norm(linear(x))
            if self.record:
                self.sigmoid_inputs.append(z.detach().numpy().astype(np.float64))
            x = z.sigmoid()
        return self.out(x)


def sigmoid_inputs(model, x):
    """The sigmoid inputs of every hidden layer for batch x, in training mode (batch statistics)
    without changing the BN running statistics, or anything else, and without a graph."""
    saved = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    was_training = model.training
    model.train()
    model.record = True
    try:
        with tg.no_grad():
            model(x)
        return model.sigmoid_inputs
    finally:
        model.record = False
        model.load_state_dict(saved)
        model.train(was_training)


def test_batch(loader):
    """The whole test set as one (x, y) batch (test loaders hold it in at most a few batches)."""
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in loader])
    device = getattr(loader, "device", "cpu")
    return tg.tensor(np.concatenate(xs), device=device), np.concatenate(ys)


def make_model(config, in_features):
    return SigmoidMLP(in_features, config["hidden"], config["depth"], norm=config["norm"])


def run(config, seed, ctx):
    train, test = R.dataset_loaders(ctx.args, seed, config["batch_size"], device=ctx.device)
    probe, _ = test_batch(test)
    model = make_model(config, int(np.prod(probe.shape[1:]))).to(ctx.device)
    optimizer = tg.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    steps, accs, pct = [], [], []

    def measure(step):
        z = sigmoid_inputs(model, probe)[-1][:, 0]  # unit 0 of the last hidden layer
        pct.append([float(np.percentile(z, q)) for q in PERCENTILES])
        accs.append(R.evaluate(model, test)[1])
        steps.append(step)
        model.train()

    measure(0)
    trained = R.train_steps(model, optimizer, R.batches(train), config["steps"], ctx,
                            on_step=lambda step, *_: measure(step) if step % config["eval_every"] == 0 else None)
    if steps[-1] != trained["steps"]:
        measure(trained["steps"])
    pct_arr = np.asarray(pct)[1:]  # drift after the first measurement (step 0 is the init)
    drifts = pct_arr.max(axis=0) - pct_arr.min(axis=0)
    return {"final_test_acc": accs[-1], "mean_test_acc": float(np.mean(accs[1:])),
            "drift": float(drifts.mean()), **{f"drift_p{q}": float(d) for q, d in zip(PERCENTILES, drifts)},
            "diverged": trained["diverged"], "steps": steps, "test_accs": accs, "percentiles": pct,
            "losses": trained["losses"]}


def verdict(results):
    sides = {key: R.separated(R.column(results, "bn", key), R.column(results, "no_bn", key))
             for key in ("final_test_acc", "mean_test_acc", "drift")}
    reason = ", ".join(f"{k}: BN vs no BN {v}" for k, v in sides.items())
    if sides["final_test_acc"] == "less" or sides["mean_test_acc"] == "less" or sides["drift"] == "greater":
        return "not reproduced", reason
    if sides["final_test_acc"] == "greater" and sides["mean_test_acc"] == "greater" and sides["drift"] == "less":
        return "reproduced", reason
    return "inconclusive", reason


def plot(results, summary):
    fig, axes = R.figure(3, "Ioffe & Szegedy Fig. 1 at our scale: with BN the sigmoid's input "
                            "distribution is stable and the net trains faster", width=4.6)
    for j, name in enumerate(("no_bn", "bn")):
        runs = results[name]
        R.band(axes[0], runs[0]["steps"], [r["test_accs"] for r in runs], name, color=R.COLORS[j])
    axes[0].set(xlabel="training step", ylabel="test accuracy", title="(a) test accuracy")
    for ax, name, title in ((axes[1], "no_bn", "(b) without BN"), (axes[2], "bn", "(c) with BN")):
        runs = results[name]
        for k, q in enumerate(PERCENTILES):
            R.band(ax, runs[0]["steps"], [np.asarray(r["percentiles"])[:, k] for r in runs],
                   f"{q}th percentile", color=R.COLORS[2 + k], spread="range")
        ax.set(xlabel="training step", ylabel="input of a last-layer sigmoid",
               title=f"{title}: 15/50/85th percentiles")
    lo = min(min(min(p) for p in r["percentiles"]) for rs in results.values() for r in rs)
    hi = max(max(max(p) for p in r["percentiles"]) for rs in results.values() for r in rs)
    for ax in axes[1:]:
        ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo))  # one scale, to compare the drift
    return R.finish(fig, axes)


def main(argv=None):
    return R.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
