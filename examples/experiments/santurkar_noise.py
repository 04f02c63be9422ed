"""Injecting time-varying, non-zero-mean, non-unit-variance noise after every BatchNorm layer
reintroduces severe distributional shift, yet training stays about as fast and stable as with
plain BN, and both beat the same net without BN.

Protocol: examples.models.SmallCNN (a small VGG-style CNN: three conv-norm-ReLU-maxpool stages)
on the embedded Shapes10 in three variants with the same init scheme, data order and schedule
(SGD, lr 0.05, momentum 0.9): "no_bn" (every BN an identity), "bn", and "noisy_bn": after each BN,
in training only, y -> y * scale + shift with, per step and per unit (channel), distribution
parameters drawn afresh, mu_s ~ U(-1, 1), sigma_s ~ U(0, 1) (and the same for the shift), and
then per example scale = 1 + a (mu_s + sigma_s z), shift = b (mu_b + sigma_b z'), z, z' ~ N(0, 1),
a = 0.5, b = 1 (NoisyBN below; not a registry normalizer). Training loss every step and test
accuracy every few steps. The covariate shift of Santurkar et al.'s definition 2.1 for the last
conv layer, every k steps on the current batch: G = its gradient, G' = its gradient after the
layers below it take one plain gradient step (lr), with fresh noise for noisy BN; we record
||G - G'|| and cos(G, G'). The measurement restores parameters, buffers and the noise stream.

Verdict rule (RULE below, word for word):
reproduced when noisy BN's final test accuracy is not below BN's beyond the spread across seeds, both BN's and noisy BN's final test accuracies are above no BN's beyond the spread, and noisy BN's mean gradient cosine (definition 2.1) is below BN's beyond the spread; not reproduced when noisy BN's accuracy is below BN's, or BN's or noisy BN's is below no BN's, or noisy BN's cosine is above BN's, each beyond the spread; inconclusive otherwise.
"""
import sys

import numpy as np

import tinygrad_bn as tg
from tinygrad_bn import nn
import tinygrad_bn.nn.functional as F

from examples.experiments import _runner as R
from examples.models import SmallCNN

NAME = "santurkar_noise"
CLAIM = ("Noise with time-varying, non-zero mean and non-unit variance injected after every BN "
         "layer reintroduces distributional shift, yet training stays about as fast and stable as "
         "with plain BN, and both beat the net without BN.")
SOURCE = "Santurkar et al. 2018, 'How Does Batch Normalization Help Optimization?', section 2, Fig. 2 and definition 2.1"
RULE = __doc__.split("word for word):\n", 1)[1].strip()
BUDGET = {"quick": "~20 s", "default": "~5 min", "full": "~1 h"}
TABLE_KEYS = ["final_test_acc", "final_train_loss", "mean_ics_l2", "mean_ics_cos"]

SCALES = {"quick": dict(steps=20, eval_every=10, ics_every=10, train_size=512, test_size=256, image_size=16,
                        widths=(8, 16, 32)),
          "default": dict(steps=300, eval_every=50, ics_every=25, train_size=2000, test_size=500,
                          image_size=16, widths=(16, 32, 64)),
          "full": dict(steps=3000, eval_every=250, ics_every=100, train_size=10000, test_size=2000,
                       image_size=32, widths=(32, 64, 128))}


def configs(scale):
    base = dict(SCALES[scale], lr=0.05, momentum=0.9, batch_size=64, noise_scale=0.5, noise_shift=1.0)
    return {"no_bn": dict(base, variant="no_bn"), "bn": dict(base, variant="bn"),
            "noisy_bn": dict(base, variant="noisy_bn")}


class NoisyBN(nn.Module):
    """BN, then in training y * scale + shift with per-unit noise whose mean and spread are
    themselves drawn per unit at every call (every step). scale = shift = 0 gives BN exactly."""

    def __init__(self, bn, noise_scale, noise_shift, rng):
        super().__init__()
        self.bn, self.noise_scale, self.noise_shift, self.rng = bn, noise_scale, noise_shift, rng

    def _draw(self, n, c, amount):
        mu = self.rng.uniform(-1.0, 1.0, size=(1, c, 1, 1))
        sigma = self.rng.uniform(0.0, 1.0, size=(1, c, 1, 1))
        return amount * (mu + sigma * self.rng.standard_normal((n, c, 1, 1)))

    def forward(self, x):
        y = self.bn(x)
        if not self.training or (self.noise_scale == 0 and self.noise_shift == 0):
            return y
        n, c = y.shape[:2]
        scale = tg.tensor((1.0 + self._draw(n, c, self.noise_scale)).astype(np.float32), device=y.device)
        shift = tg.tensor(self._draw(n, c, self.noise_shift).astype(np.float32), device=y.device)
        return y * scale.to(y.dtype) + shift.to(y.dtype)


def make_model(config, seed=0):
    model = SmallCNN(image_size=config["image_size"], widths=tuple(config["widths"]), norm="BatchNorm2d")
    rng = np.random.default_rng(10_000 + seed)
    swap = {"no_bn": lambda m: nn.Identity(), "bn": lambda m: m,
            "noisy_bn": lambda m: NoisyBN(m, config["noise_scale"], config["noise_shift"], rng)}[config["variant"]]
    model.features = nn.Sequential(*[swap(m) if isinstance(m, nn.BatchNorm2d) else m for m in model.features])
    return model


# ---- the covariate shift of definition 2.1 -------------------------------------------------
def covariate_shift(model, x, y, lr):
    """(||G - G'||, cos(G, G')) for the last conv: G its gradient now, G' after the layers below
    it take one gradient step of size lr. Restores parameters, buffers and noise streams."""
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    target = convs[-1].weight
    index = list(model.features).index(convs[-1])
    below = [p for m in list(model.features)[:index] for p in m.parameters()]
    saved = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    noisy = [m for m in model.modules() if isinstance(m, NoisyBN)]
    streams = [m.rng.bit_generator.state for m in noisy]
    try:
        loss = F.cross_entropy(model(x), y)
        grads = tg.autograd.grad(loss, [target] + below)
        g = grads[0].numpy().astype(np.float64).ravel()
        with tg.no_grad():
            for p, gp in zip(below, grads[1:]):
                p.copy_(p.detach() - lr * gp)
        loss2 = F.cross_entropy(model(x), y)
        g2 = tg.autograd.grad(loss2, [target])[0].numpy().astype(np.float64).ravel()
    finally:
        model.load_state_dict(saved)
        for m, s in zip(noisy, streams):
            m.rng.bit_generator.state = s
    denom = np.linalg.norm(g) * np.linalg.norm(g2)
    return float(np.linalg.norm(g - g2)), float(np.dot(g, g2) / denom) if denom > 0 else float("nan")


def run(config, seed, ctx):
    train, test = R.shapes10(seed, config["train_size"], config["test_size"], config["image_size"],
                             config["batch_size"], device=ctx.device)
    model = make_model(config, seed).to(ctx.device)
    optimizer = tg.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    accs, acc_steps, ics_l2, ics_cos, ics_steps = [], [], [], [], []

    def on_step(step, x, y, loss):
        if step % config["ics_every"] == 0 or step == 1:
            l2, cos = covariate_shift(model, x, y, config["lr"])
            ics_l2.append(l2)
            ics_cos.append(cos)
            ics_steps.append(step)
        if step % config["eval_every"] == 0:
            accs.append(R.evaluate(model, test)[1])
            acc_steps.append(step)
            model.train()

    trained = R.train_steps(model, optimizer, R.batches(train), config["steps"], ctx, on_step=on_step)
    final_acc = R.evaluate(model, test)[1]
    if not acc_steps or acc_steps[-1] != trained["steps"]:
        accs.append(final_acc)
        acc_steps.append(trained["steps"])
    return {"final_test_acc": final_acc, "final_train_loss": float(np.mean(trained["losses"][-10:])),
            "mean_ics_l2": float(np.nanmean(ics_l2)), "mean_ics_cos": float(np.nanmean(ics_cos)),
            "diverged": trained["diverged"], "losses": trained["losses"], "test_accs": accs,
            "acc_steps": acc_steps, "ics_l2": ics_l2, "ics_cos": ics_cos, "ics_steps": ics_steps}


# ---- verdict and plot ----------------------------------------------------------------------
def verdict(results):
    acc = lambda name: R.column(results, name, "final_test_acc")  # noqa: E731
    noisy_vs_bn = R.separated(acc("noisy_bn"), acc("bn"))
    bn_vs_plain = R.separated(acc("bn"), acc("no_bn"))
    noisy_vs_plain = R.separated(acc("noisy_bn"), acc("no_bn"))
    cos = R.separated(R.column(results, "noisy_bn", "mean_ics_cos"), R.column(results, "bn", "mean_ics_cos"))
    reason = (f"test accuracy: noisy BN vs BN {noisy_vs_bn}, BN vs no BN {bn_vs_plain}, noisy BN vs "
              f"no BN {noisy_vs_plain}; gradient cosine (def. 2.1) noisy BN vs BN {cos}")
    if noisy_vs_bn == "less" or bn_vs_plain == "less" or noisy_vs_plain == "less" or cos == "greater":
        return "not reproduced", reason
    if bn_vs_plain == "greater" and noisy_vs_plain == "greater" and cos == "less":
        return "reproduced", reason
    return "inconclusive", reason


def plot(results, summary):
    fig, axes = R.figure(4, "Santurkar et al. Fig. 2 at our scale: noisy BN (shifted, rescaled after "
                            "every BN) vs BN vs no BN, SmallCNN on Shapes10", width=4.2)
    for j, name in enumerate(("no_bn", "bn", "noisy_bn")):
        runs, color = results[name], R.COLORS[j]
        n = min(len(r["losses"]) for r in runs)
        R.band(axes[0], np.arange(1, n + 1), [r["losses"][:n] for r in runs], name, color=color)
        R.band(axes[1], runs[0]["acc_steps"], [r["test_accs"] for r in runs], name, color=color, marker="o")
        R.band(axes[2], runs[0]["ics_steps"], [r["ics_l2"] for r in runs], name, color=color, marker=".")
        R.band(axes[3], runs[0]["ics_steps"], [r["ics_cos"] for r in runs], name, color=color, marker=".")
    axes[0].set(xlabel="step", ylabel="training loss (cross entropy)", title="training loss")
    axes[1].set(xlabel="step", ylabel="test accuracy", title="test accuracy")
    axes[2].set(xlabel="step", ylabel="||G - G'|| (last conv)", yscale="log", title="covariate shift: l2")
    axes[3].set(xlabel="step", ylabel="cos(G, G') (last conv)", title="covariate shift: cosine")
    return R.finish(fig, axes)


def main(argv=None):
    return R.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
