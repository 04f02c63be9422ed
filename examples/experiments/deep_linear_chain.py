"""In a deep chain of single-unit linear layers, y_hat = x w1 ... wl, the first-order prediction
of a gradient step's effect, -eta g'g, misses the real change by a margin that grows with depth
and with the step size, because the layers' updates interact (higher-order terms); a
batch-normalized unit at every layer removes that interaction.

Protocol: a batch of N inputs x ~ N(0, 1), targets y = 0.5 x + 0.1 noise, loss
L = mean((y_hat - y)^2) / 2, in float64. Weights w_i = 1 + 0.1 * N(0, 1), drawn per seed. For
each depth and step size eta we take one plain gradient step w' = w - eta g and compare the real
loss change dL = L(w') - L(w) with
  - the first-order prediction  -eta g'g;
  - the second-order prediction -eta g'g + eta^2/2 g'Hg, where Hg is the Hessian-vector product
    computed through the project's own double backward (autograd.grad with create_graph=True).
The relative error of a prediction is |dL - prediction| / |eta g'g|. The same chain is then run
with a batch-normalized unit at every layer, h_i = gamma_i BN(h_{i-1} w_i) + beta_i (training
mode: batch statistics), with w_i, gamma_i, beta_i all trained.

Verdict rule (RULE below, word for word):
reproduced when, in the plain chain, for every step size the first-order relative error at the deepest depth exceeds the one at depth 2 beyond the spread across seeds, and at the deepest depth the error at the largest step size exceeds the one at the smallest beyond the spread; not reproduced when any of those comparisons goes the other way beyond the spread; inconclusive otherwise. The batch-normalized chain is measured and reported, not part of the rule.
"""
import sys

import numpy as np

import tinygrad_bn as tg
from tinygrad_bn.norms.batchnorm import batch_norm

from examples.experiments import _runner as R

NAME = "deep_linear_chain"
CLAIM = ("In a deep chain of single-unit linear layers the first-order prediction of a gradient "
         "step's effect misses the real change by a margin that grows with depth and step size.")
SOURCE = ("Goodfellow, Bengio & Courville, Deep Learning (2016), section 8.7.1; the seed text's "
          "'mathematical motivation' for batch normalization")
RULE = ("reproduced when, in the plain chain, for every step size the first-order relative "
        "error at the deepest depth exceeds the one at depth 2 beyond the spread across seeds, "
        "and at the deepest depth the error at the largest step size exceeds the one at the "
        "smallest beyond the spread; not reproduced when any of those comparisons goes the other "
        "way beyond the spread; inconclusive otherwise. The batch-normalized chain is measured "
        "and reported, not part of the rule.")
BUDGET = {"quick": "~2 s", "default": "~3 s", "full": "~1 min"}
SEEDS = range(5)

SCALES = {"quick": dict(depths=(2, 8, 32), etas=(1e-3, 1e-2, 1e-1), batch=32),
          "default": dict(depths=(2, 4, 8, 16, 32), etas=(1e-3, 1e-2, 3e-2, 1e-1), batch=256),
          "full": dict(depths=(2, 4, 8, 16, 32, 64, 128), etas=(1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1),
                       batch=4096)}


def configs(scale):
    s = SCALES[scale]
    return {f"{variant}_d{depth}": {"variant": variant, "depth": depth, "etas": list(s["etas"]),
                                    "batch": s["batch"]}
            for variant in ("plain", "bn") for depth in s["depths"]}


# ---- the chain ------------------------------------------------------------------------------
class Chain:
    """y_hat = x w1 ... wl (plain) or h_i = gamma_i BN(h_{i-1} w_i) + beta_i (bn), float64,
    with its data. params: the list of leaf tensors a gradient step moves."""

    def __init__(self, depth, batch, seed, bn=False):
        rng = np.random.default_rng(seed)
        self.bn = bn
        self.x = tg.tensor(rng.standard_normal((batch, 1)), dtype=tg.float64)
        self.y = tg.tensor(0.5 * self.x.numpy() + 0.1 * rng.standard_normal((batch, 1)), dtype=tg.float64)
        self.w = [1.0 + 0.1 * rng.standard_normal((1, 1)) for _ in range(depth)]
        self.gamma = [np.ones(1) for _ in range(depth)] if bn else []
        self.beta = [np.zeros(1) for _ in range(depth)] if bn else []

    def values(self):
        return self.w + self.gamma + self.beta

    def loss(self, values):
        """L at parameter values (numpy arrays) -> (loss tensor, the leaf tensors)."""
        leaves = [tg.tensor(v, dtype=tg.float64, requires_grad=True) for v in values]
        depth = len(self.w)
        w, gamma, beta = leaves[:depth], leaves[depth:2 * depth], leaves[2 * depth:]
        h = self.x
        for i in range(depth):
            h = h @ w[i]
            if self.bn:
                h = batch_norm(h, None, None, gamma[i], beta[i], training=True)
        diff = h - self.y
        return (diff * diff).mean() * 0.5, leaves


def step_predictions(chain, etas):
    """For each eta: the real loss change of one step w - eta g, and the first- and second-order
    predictions (g'Hg by double backward)."""
    values = chain.values()
    loss, leaves = chain.loss(values)
    grads = tg.autograd.grad(loss, leaves, create_graph=True)
    g = [gr.detach() for gr in grads]
    g_dot_v = sum((gi * gd).sum() for gi, gd in zip(grads, g))  # g(w)'v with v = g held fixed
    hg = tg.autograd.grad(g_dot_v, leaves, allow_unused=True)  # d(g(w)'v)/dw = H v = H g
    g_np = [gi.numpy() for gi in g]
    gg = float(sum((gi * gi).sum() for gi in g_np))
    ghg = float(sum((h.numpy() * gi).sum() for h, gi in zip(hg, g_np) if h is not None))
    base = float(loss.item())
    out = []
    for eta in etas:
        with tg.no_grad():
            moved, _ = chain.loss([v - eta * gi for v, gi in zip(values, g_np)])
        actual = float(moved.item()) - base
        first = -eta * gg
        second = first + 0.5 * eta * eta * ghg
        out.append({"eta": eta, "actual": actual, "first": first, "second": second, "gg": gg, "ghg": ghg})
    return out


def loglog_slope(etas, gaps):
    """Least-squares slope of log(gap) against log(eta)."""
    return float(np.polyfit(np.log(etas), np.log(gaps), 1)[0])


def run(config, seed, ctx):
    chain = Chain(config["depth"], config["batch"], seed, bn=config["variant"] == "bn")
    result = {"grad_sq_norm": None}
    for p in step_predictions(chain, config["etas"]):
        scale = abs(p["eta"] * p["gg"]) or float("nan")
        key = f"eta{p['eta']:g}"
        result[f"rel_err1_{key}"] = abs(p["actual"] - p["first"]) / scale
        result[f"rel_err2_{key}"] = abs(p["actual"] - p["second"]) / scale
        result[f"actual_{key}"] = p["actual"]
        result[f"first_{key}"] = p["first"]
        result["grad_sq_norm"] = p["gg"]
    return result


# ---- verdict and plot -----------------------------------------------------------------------
def _depths_etas(results, variant):
    depths = sorted({int(n.split("_d")[1]) for n in results if n.startswith(variant + "_")})
    first = results[f"{variant}_d{depths[0]}"][0]
    etas = [k[len("rel_err1_eta"):] for k in first if k.startswith("rel_err1_")]
    return depths, etas


def verdict(results):
    depths, etas = _depths_etas(results, "plain")
    deep, shallow = depths[-1], depths[0]
    sides, notes = [], []
    for eta in etas:
        key = f"rel_err1_eta{eta}"
        side = R.separated(R.column(results, f"plain_d{deep}", key), R.column(results, f"plain_d{shallow}", key))
        sides.append(side)
        notes.append(f"eta {eta}: depth {deep} vs {shallow} {side}")
    key_hi, key_lo = f"rel_err1_eta{etas[-1]}", f"rel_err1_eta{etas[0]}"
    side = R.separated(R.column(results, f"plain_d{deep}", key_hi), R.column(results, f"plain_d{deep}", key_lo))
    sides.append(side)
    notes.append(f"depth {deep}: eta {etas[-1]} vs {etas[0]} {side}")
    bn_deep = R.mean_std(R.column(results, f"bn_d{deep}", key_hi))["mean"]
    plain_deep = R.mean_std(R.column(results, f"plain_d{deep}", key_hi))["mean"]
    notes.append(f"(reported: at depth {deep}, eta {etas[-1]}, first-order relative error plain "
                 f"{plain_deep:.3g} vs BN chain {bn_deep:.3g})")
    reason = "; ".join(notes)
    if "less" in sides:
        return "not reproduced", reason
    if all(s == "greater" for s in sides):
        return "reproduced", reason
    return "inconclusive", reason


def plot(results, summary):
    fig, axes = R.figure(2, "First-order prediction error of one gradient step vs depth: "
                            "plain deep linear chain vs a batch-normalized unit at every layer")
    for ax, variant, title in ((axes[0], "plain", "plain chain  y = x w1 ... wl"),
                               (axes[1], "bn", "BN chain  h_i = gamma_i BN(h_{i-1} w_i) + beta_i")):
        depths, etas = _depths_etas(results, variant)
        for i, eta in enumerate(etas):
            color = R.COLORS[i % len(R.COLORS)]
            runs = [[results[f"{variant}_d{d}"][s][f"rel_err1_eta{eta}"] for d in depths]
                    for s in range(len(results[f"{variant}_d{depths[0]}"]))]
            R.band(ax, depths, runs, f"1st order, eta={eta}", color=color, marker="o")
            runs2 = [[results[f"{variant}_d{d}"][s][f"rel_err2_eta{eta}"] for d in depths]
                     for s in range(len(results[f"{variant}_d{depths[0]}"]))]
            ax.plot(depths, np.nanmean(np.asarray(runs2, dtype=float), axis=0), color=color, ls="--",
                    lw=1, label=f"2nd order (HVP), eta={eta}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("depth l (number of single-unit layers)")
        ax.set_ylabel("|dL_real - dL_predicted| / (eta g'g)  (relative)")
        ax.set_title(title, fontsize=9)
    return R.finish(fig, axes)


# the table: every step size's first-order error and the largest step's second-order error
TABLE_KEYS = [f"rel_err1_eta{e:g}" for e in SCALES["default"]["etas"]] + [f"rel_err2_eta{SCALES['default']['etas'][-1]:g}"]


def main(argv=None):
    return R.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
