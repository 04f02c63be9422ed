"""The batch mean and variance fluctuate more as the batch shrinks: at m = 2 to 4 they are
wildly noisy, and at m = 1 the variance is undefined.

Protocol: train examples.models.SmallCNN (three conv-BN-ReLU-maxpool stages, widths 16/32/64)
on the embedded digits (tinygrad_bn.data.Digits, 8x8, 1,438 training images) for a few hundred
steps, then take the real pre-BN activations of its last BN layer (64 channels at 2x2) for every
training image. For m in {1, 2, 4, ..., 256}, draw many random batches of m images (without
replacement within a batch) and measure, for every unit, the relative standard deviation of the
batch mean (std of mu_B / the unit's population std) and of the batch variance (std of var_B /
mean of var_B), and report the median over units. Two views:
- per activation (each channel at each position is a unit, n = m values per statistic, as in
  BatchNorm1d): compared with the Gaussian theory sqrt(1/m) for the mean and sqrt(2/(m-1)) for
  the variance, and with the variance theory corrected by each unit's measured excess kurtosis k,
  sqrt(2/(m-1) + k/m); both times the finite-population factor sqrt((N-m)/(N-1)). At m = 1 the
  experiment calls the library's BatchNorm1d in training mode and records the error it raises.
- per channel (what this BatchNorm2d computes, n = m x 4 values per statistic), compared with
  the same theory at n = 4m (which assumes the 4 positions independent; they are not).
The noise this puts into the layer (per channel, BatchNorm2d as trained, gamma from the layer):
the relative deviation ||x_hat_B - x_hat|| / ||x_hat|| of the normalized output from the one
with population statistics, and of the gradient dL/dx (the real upstream gradient of the net's
loss, through BN's backward with batch statistics) from the same backward with population
statistics held fixed, both averaged over batches.

Verdict rule (RULE below, word for word):
reproduced when, in every seed, the per-activation relative std of the batch variance decreases strictly as m doubles from 2 to 256, exceeds 0.5 at both m = 2 and m = 4, and m = 1 raises the library's error; not reproduced when this holds in no seed; inconclusive when the seeds disagree.
"""
import sys

import numpy as np

import tinygrad_bn as tg
from tinygrad_bn import nn
import tinygrad_bn.nn.functional as F

from examples.experiments import _runner as R
from examples.models import SmallCNN

NAME = "batch_stat_noise"
CLAIM = ("The batch mean and variance fluctuate more as the batch shrinks: at m = 2 to 4 they are "
         "wildly noisy, and at m = 1 the variance is undefined.")
SOURCE = "Ioffe 2017 ('Batch Renormalization'), section 1; the chapter's section 6.1"
RULE = __doc__.split("word for word):\n", 1)[1].strip()
BUDGET = {"quick": "~15 s", "default": "~2 min", "full": "~15 min"}
TABLE_KEYS = ["var_rel_std_m2", "var_rel_std_m4", "var_rel_std_m32", "var_ratio_gauss_m32",
              "var_ratio_kurt_m32", "xhat_dev_m4", "grad_dev_m4", "m1_raises"]
MS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
EPS = 1e-5

SCALES = {"quick": dict(train_steps=40, n_batches=150),
          "default": dict(train_steps=300, n_batches=1000),
          "full": dict(train_steps=3000, n_batches=5000)}


def configs(scale):
    return {"smallcnn_digits": dict(SCALES[scale], lr=0.05, momentum=0.9, batch_size=64,
                                    widths=[16, 32, 64], ms=list(MS))}


# ---- the measurement (small functions the invariant tests call directly) -------------------
def fluctuation(acts, m, n_batches, rng):
    """Per unit: (relative std of the batch mean, relative std of the batch variance) over
    n_batches random batches of m rows of acts (N, units), drawn without replacement within a
    batch. Mean: std(mu_B) / population std; variance: std(var_B) / mean(var_B)."""
    n = len(acts)
    idx = np.stack([rng.choice(n, m, replace=False) for _ in range(n_batches)])
    batch = acts[idx]  # (n_batches, m, units)
    mu, var = batch.mean(axis=1), batch.var(axis=1)
    return mu.std(axis=0, ddof=1) / acts.std(axis=0), var.std(axis=0, ddof=1) / var.mean(axis=0)


def theory(n, excess_kurtosis=0.0, population=None):
    """Gaussian-theory relative std of (batch mean, batch variance) for n values per statistic,
    the variance's corrected by the excess kurtosis: sqrt(1/n) and sqrt(2/(n-1) + k/n), times
    the finite-population factor sqrt((N-n)/(N-1)) when population N is given."""
    fpc = 1.0 if population is None else np.sqrt((population - n) / (population - 1))
    return fpc * np.sqrt(1.0 / n), fpc * np.sqrt(2.0 / (n - 1) + np.asarray(excess_kurtosis) / n)


def excess_kurtosis(acts):
    centred = acts - acts.mean(axis=0)
    return (centred ** 4).mean(axis=0) / (centred ** 2).mean(axis=0) ** 2 - 3.0


def bn_backward(x, g, gamma, mean, var):
    """dL/dx of y = gamma (x - mean) / sqrt(var + eps) + beta over the rows of x (N, C): with
    batch statistics, dx = gamma / sigma (g - mean(g) - x_hat mean(g x_hat)); pass the batch's
    own mean and var. (With population statistics held fixed it is gamma / sigma * g.)"""
    sigma = np.sqrt(var + EPS)
    x_hat = (x - mean) / sigma
    return gamma / sigma * (g - g.mean(axis=0) - x_hat * (g * x_hat).mean(axis=0))


def layer_noise(acts, grads, gamma, m, n_batches, rng):
    """Mean over batches of ||x_hat_B - x_hat|| / ||x_hat|| and ||dx_B - dx|| / ||dx||, per
    channel statistics over the batch's m images and all positions: acts and grads (N, C, P)."""
    n = len(acts)
    pop_mean, pop_var = acts.mean(axis=(0, 2)), acts.var(axis=(0, 2))
    dev_x, dev_g = [], []
    for _ in range(n_batches):
        idx = rng.choice(n, m, replace=False)
        x = acts[idx].transpose(0, 2, 1).reshape(-1, acts.shape[1])  # (m * P, C)
        g = grads[idx].transpose(0, 2, 1).reshape(-1, acts.shape[1])
        mean, var = x.mean(axis=0), x.var(axis=0)
        xh_b, xh = (x - mean) / np.sqrt(var + EPS), (x - pop_mean) / np.sqrt(pop_var + EPS)
        dev_x.append(np.linalg.norm(xh_b - xh) / np.linalg.norm(xh))
        dx_b = bn_backward(x, g, gamma, mean, var)
        dx = gamma / np.sqrt(pop_var + EPS) * g
        dev_g.append(np.linalg.norm(dx_b - dx) / max(np.linalg.norm(dx), 1e-30))
    return float(np.mean(dev_x)), float(np.mean(dev_g))


def m1_error(units):
    """The message of the error the library's BatchNorm1d raises for a batch of one in training,
    or None if it raises none."""
    bn = nn.BatchNorm1d(units)
    try:
        bn(tg.tensor(np.zeros((1, units), np.float32)))
    except (ValueError, RuntimeError) as e:
        return f"{type(e).__name__}: {e}"
    return None


# ---- one run -------------------------------------------------------------------------------
def capture(model, loader, bn_index):
    """(pre-BN activations (N, C, P), upstream gradients dL/dy (N, C, P)) at features[bn_index]
    for every sample of loader, the net in eval mode, the loss summed over samples."""
    model.eval()
    layers = list(model.features)
    acts, grads = [], []
    for x, y in loader:
        with tg.no_grad():
            a = x
            for layer in layers[:bn_index]:
                a = layer(a)
            out = layers[bn_index](a)
        leaf = out.detach().requires_grad_()
        h = leaf
        for layer in layers[bn_index + 1:]:
            h = layer(h)
        logits = model.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))
        F.cross_entropy(logits, y, reduction="sum").backward()
        shape = (a.shape[0], a.shape[1], -1)
        acts.append(a.numpy().astype(np.float64).reshape(shape))
        grads.append(leaf.grad.numpy().astype(np.float64).reshape(shape))
    return np.concatenate(acts), np.concatenate(grads)


def run(config, seed, ctx):
    train, _ = R.digits(seed, config["batch_size"], device=ctx.device)
    model = SmallCNN(in_channels=1, image_size=8, widths=tuple(config["widths"]),
                     norm="BatchNorm2d").to(ctx.device)
    optimizer = tg.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    trained = R.train_steps(model, optimizer, R.batches(train), config["train_steps"], ctx)
    bn_index = max(i for i, m in enumerate(model.features) if isinstance(m, nn.BatchNorm2d))
    full = R.image_loaders(train.dataset, train.dataset, seed, 512, ctx.device)[1]  # in order
    acts, grads = capture(model, full, bn_index)
    gamma = model.features[bn_index].weight.detach().numpy().astype(np.float64)
    n, c, p = acts.shape
    per_act = acts.reshape(n, c * p)
    per_chan = acts.transpose(0, 2, 1)  # (N, P, C): a batch of m images gives m * P rows
    kurt = excess_kurtosis(per_act)
    kurt_chan = excess_kurtosis(per_chan.reshape(-1, c))
    rng = np.random.default_rng(1000 + seed)
    out = {"m1_error": m1_error(c * p), "ms": [], "mean_rel_std": [], "var_rel_std": [],
           "chan_mean_rel_std": [], "chan_var_rel_std": [], "theory_mean": [], "theory_var": [],
           "theory_var_kurt": [], "theory_chan_var": [], "theory_chan_var_kurt": [],
           "xhat_dev": [], "grad_dev": [], "layer_ms": []}
    for m in config["ms"]:
        if m <= n:
            _, chan_var = fluctuation_per_channel(per_chan, m, config["n_batches"], rng)
            chan_mean, _ = fluctuation_per_channel(per_chan, m, config["n_batches"], rng, what="mean")
            xd, gd = layer_noise(acts, grads, gamma, m, min(config["n_batches"], 300), rng)
            out["layer_ms"].append(m)
            out["xhat_dev"].append(xd)
            out["grad_dev"].append(gd)
        if m < 2:
            continue  # one value per unit: the variance is undefined; m1_error holds what BN says
        mean_rs, var_rs = fluctuation(per_act, m, config["n_batches"], rng)
        t_mean, t_var = theory(m, 0.0, n)
        _, t_kurt = theory(m, kurt, n)
        _, t_chan = theory(m * p, 0.0, n * p)
        _, t_chan_k = theory(m * p, kurt_chan, n * p)
        out["ms"].append(m)
        for key, value in (("mean_rel_std", mean_rs), ("var_rel_std", var_rs),
                           ("chan_mean_rel_std", chan_mean), ("chan_var_rel_std", chan_var),
                           ("theory_var_kurt", t_kurt), ("theory_chan_var_kurt", t_chan_k)):
            out[key].append(float(np.median(value)))
        out["theory_mean"].append(float(t_mean))
        out["theory_var"].append(float(t_var))
        out["theory_chan_var"].append(float(t_chan))
    at = lambda key, m: out[key][out["ms"].index(m)]  # noqa: E731
    layer_at = lambda key, m: out[key][out["layer_ms"].index(m)]  # noqa: E731
    out.update({"var_rel_std_m2": at("var_rel_std", 2), "var_rel_std_m4": at("var_rel_std", 4),
                "var_rel_std_m32": at("var_rel_std", 32),
                "var_ratio_gauss_m32": at("var_rel_std", 32) / at("theory_var", 32),
                "var_ratio_kurt_m32": at("var_rel_std", 32) / at("theory_var_kurt", 32),
                "median_excess_kurtosis": float(np.median(kurt)),
                "xhat_dev_m4": layer_at("xhat_dev", 4), "grad_dev_m4": layer_at("grad_dev", 4),
                "m1_raises": out["m1_error"] is not None,
                "final_train_loss": float(np.mean(trained["losses"][-10:])),
                "diverged": trained["diverged"]})
    return out


def fluctuation_per_channel(per_chan, m, n_batches, rng, what="var"):
    """fluctuation() for BatchNorm2d's statistics: per_chan (N images, P positions, C); a batch
    of m images gives m * P values per channel. Returns (mean rel std, var rel std) per channel
    (only the one asked for is computed; the other is None)."""
    n, p, c = per_chan.shape
    idx = np.stack([rng.choice(n, m, replace=False) for _ in range(n_batches)])
    batch = per_chan[idx].reshape(n_batches, m * p, c)
    flat = per_chan.reshape(-1, c)
    if what == "mean":
        return batch.mean(axis=1).std(axis=0, ddof=1) / flat.std(axis=0), None
    var = batch.var(axis=1)
    return None, var.std(axis=0, ddof=1) / var.mean(axis=0)


# ---- verdict and plot ----------------------------------------------------------------------
def holds(run):
    ms, v = run["ms"], run["var_rel_std"]
    chain = [v[ms.index(m)] for m in (2, 4, 8, 16, 32, 64, 128, 256) if m in ms]
    decreasing = all(a > b for a, b in zip(chain, chain[1:]))
    return decreasing and run["var_rel_std_m2"] > 0.5 and run["var_rel_std_m4"] > 0.5 and run["m1_raises"]


def verdict(results):
    runs = results["smallcnn_digits"]
    ok = [holds(r) for r in runs]
    reason = (f"{sum(ok)} of {len(ok)} seeds: variance noise strictly decreasing in m, > 0.5 at m = 2 "
              f"and 4, m = 1 raises; per-seed rel. std of var at m = 2: "
              f"{[round(r['var_rel_std_m2'], 3) for r in runs]}, m = 4: "
              f"{[round(r['var_rel_std_m4'], 3) for r in runs]}")
    if all(ok):
        return "reproduced", reason
    if not any(ok):
        return "not reproduced", reason
    return "inconclusive", reason


def plot(results, summary):
    runs = results["smallcnn_digits"]
    fig, axes = R.figure(3, "Batch statistics are wildly noisy at small m (real pre-BN activations "
                            "of a trained SmallCNN on digits)", width=4.8)
    ms = runs[0]["ms"]
    ax = axes[0]
    R.band(ax, ms, [r["var_rel_std"] for r in runs], "batch variance, measured", color=R.COLORS[0], marker="o")
    R.band(ax, ms, [r["mean_rel_std"] for r in runs], "batch mean, measured", color=R.COLORS[1], marker="s")
    ax.plot(ms, runs[0]["theory_var"], "k--", label="variance: Gaussian sqrt(2/(m-1))")
    R.band(ax, ms, [r["theory_var_kurt"] for r in runs], "variance: kurtosis-corrected theory",
           color=R.COLORS[2], ls=":")
    ax.plot(ms, runs[0]["theory_mean"], "k-.", label="mean: sqrt(1/m)")
    ax.set(xscale="log", yscale="log", xlabel="batch size m", ylabel="relative std (median over units)",
           title="per activation (BatchNorm1d's view, n = m)")
    ax = axes[1]
    R.band(ax, ms, [r["chan_var_rel_std"] for r in runs], "batch variance, measured", color=R.COLORS[0], marker="o")
    R.band(ax, ms, [r["chan_mean_rel_std"] for r in runs], "batch mean, measured", color=R.COLORS[1], marker="s")
    ax.plot(ms, runs[0]["theory_chan_var"], "k--", label="variance: Gaussian, n = 4m independent")
    R.band(ax, ms, [r["theory_chan_var_kurt"] for r in runs], "variance: kurtosis-corrected, n = 4m",
           color=R.COLORS[2], ls=":")
    ax.set(xscale="log", yscale="log", xlabel="batch size m (images)", ylabel="relative std (median over channels)",
           title="per channel (this BatchNorm2d, 2x2 positions)")
    ax = axes[2]
    lm = runs[0]["layer_ms"]
    R.band(ax, lm, [r["xhat_dev"] for r in runs], "normalized output x_hat", color=R.COLORS[3], marker="o")
    R.band(ax, lm, [r["grad_dev"] for r in runs], "gradient dL/dx", color=R.COLORS[4], marker="s")
    ax.set(xscale="log", yscale="log", xlabel="batch size m (images)",
           ylabel="relative deviation from population-statistics value",
           title="noise in BN's output and gradient")
    return R.finish(fig, axes)


def main(argv=None):
    return R.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
