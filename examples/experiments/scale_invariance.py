"""Scaling the weights W of a layer that feeds BatchNorm by c leaves the output unchanged and
scales dL/dW by 1/c, so the weight norm sets an effective learning rate; a bias before BN is
redundant.

Protocol:
(a) Exact checks, float64, on one direct call: conv(3 -> 8, 3x3, with bias) -> BatchNorm2d in
    training mode -> a fixed random linear read-out L. For c in {0.01, 0.1, 10, 100}: the max
    relative output difference between weights c W and W, and the measured ratio
    ||dL/d(cW)|| / ||dL/dW|| against 1/c; the conv bias's gradient relative to the weight's (zero
    to rounding); the max output change when that bias is shifted by 1. Done with BN's eps = 1e-30
    (BN needs eps > 0; the identity is then exact, so the numbers are rounding) and with the default eps = 1e-5
    (reported: eps breaks the invariance slightly when c^2 var is not much larger than eps).
(b) Dynamics: examples.models.SmallCNN with BatchNorm2d on the embedded Shapes10, SGD (lr 0.1,
    momentum 0.9), with weight decay 0 and 5e-4 (not on BN's parameters or biases), the same
    data order. For each conv that feeds BN, every step: ||W||, the effective step lr/||W||^2,
    and the angle between W before and after the step.

Verdict rule (RULE below, word for word):
reproduced when the exact checks hold with eps = 1e-30 (output relative difference below 1e-9 and gradient ratio within 1e-9 of 1/c for every c, bias gradient below 1e-9 of the weight gradient, bias shift changing the output by less than 1e-9) and, without weight decay, the conv weight norm at the end over its initial value exceeds 1 beyond the spread across seeds, the effective step at the end over its initial value is below 1 beyond the spread, and the final weight norm with weight decay is below the one without beyond the spread; not reproduced when an exact check fails, or without weight decay the weight norm shrinks or the effective step grows beyond the spread; inconclusive otherwise.
"""
import sys

import numpy as np

import tinygrad_bn as tg
from tinygrad_bn import nn

from examples.experiments import _runner as R
from examples.models import SmallCNN

NAME = "scale_invariance"
CLAIM = ("Scaling the weights of a layer that feeds BatchNorm by c leaves the output unchanged "
         "and divides the gradient by c, so the weight norm sets an effective learning rate; a "
         "bias before BN is redundant.")
SOURCE = ("Ioffe & Szegedy 2015, section 3.3; the seed chapter's section 5.3 (scale invariance) "
          "and section 7 (practical guidance)")
RULE = __doc__.split("word for word):\n", 1)[1].strip()
BUDGET = {"quick": "~10 s", "default": "~3 min", "full": "~30 min"}
C_VALUES = (0.01, 0.1, 10.0, 100.0)
EXACT_TOL = 1e-9
EPS_TINY = 1e-30  # BN needs eps > 0; this one is far below any variance here
TABLE_KEYS = ["norm_ratio", "eff_step_ratio", "final_norm", "mean_angle_deg", "test_acc",
              "worst_output_rel_diff_epstiny", "worst_grad_ratio_err_epstiny", "bias_grad_rel_epstiny"]

SCALES = {"quick": dict(steps=30, train_size=512, test_size=256, image_size=16, widths=(8, 16, 32)),
          "default": dict(steps=400, train_size=2000, test_size=500, image_size=16, widths=(16, 32, 64)),
          "full": dict(steps=3000, train_size=10000, test_size=2000, image_size=32, widths=(32, 64, 128))}


def configs(scale):
    base = dict(SCALES[scale], lr=0.1, momentum=0.9, batch_size=64)
    return {"no_weight_decay": dict(base, weight_decay=0.0), "weight_decay_5e-4": dict(base, weight_decay=5e-4)}


# ---- (a) the exact checks ---------------------------------------------------------------------
def conv_bn(seed, eps, norm=None):
    """(conv with bias, normalizer, input, read-out) in float64; norm: a stand-in for BN (tests)."""
    rng = np.random.default_rng(seed)
    tg.manual_seed(seed)
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=True).to(dtype=tg.float64)
    bn = norm if norm is not None else nn.BatchNorm2d(8, eps=eps).to(dtype=tg.float64)
    bn.train()
    x = tg.tensor(rng.standard_normal((4, 3, 6, 6)), dtype=tg.float64)
    readout = tg.tensor(rng.standard_normal((4, 8, 6, 6)), dtype=tg.float64)
    return conv, bn, x, readout


def _forward(conv, bn, x, readout, weight, bias):
    w = tg.tensor(weight, dtype=tg.float64, requires_grad=True)
    b = tg.tensor(bias, dtype=tg.float64, requires_grad=True)
    out = bn(tg.nn.functional.conv2d(x, w, b, padding=1))
    loss = (out * readout).sum()
    gw, gb = tg.autograd.grad(loss, [w, b])
    return out.detach().numpy(), gw.numpy(), gb.numpy()


def exact_checks(seed=0, eps=None, c_values=C_VALUES, norm=None):
    """The numbers of (a): per c the output's max relative difference and |ratio c - 1| (the
    measured gradient ratio against 1/c), the bias gradient over the weight gradient (norms), and
    the output's max change when the bias shifts by 1."""
    conv, bn, x, readout = conv_bn(seed, EPS_TINY if eps is None else eps, norm)
    w0, b0 = conv.weight.detach().numpy().copy(), conv.bias.detach().numpy().copy()
    out, gw, gb = _forward(conv, bn, x, readout, w0, b0)
    scale = np.abs(out).max()
    checks = {}
    for c in c_values:
        out_c, gw_c, _ = _forward(conv, bn, x, readout, c * w0, b0)
        ratio = np.linalg.norm(gw_c) / np.linalg.norm(gw)
        checks[f"output_rel_diff_c{c:g}"] = float(np.abs(out_c - out).max() / scale)
        checks[f"grad_ratio_c{c:g}"] = float(ratio)
        checks[f"grad_ratio_err_c{c:g}"] = float(abs(ratio * c - 1.0))
    out_shift, _, _ = _forward(conv, bn, x, readout, w0, b0 + 1.0)
    checks["bias_grad_rel"] = float(np.linalg.norm(gb) / np.linalg.norm(gw))
    checks["bias_shift_output_diff"] = float(np.abs(out_shift - out).max() / scale)
    return checks


def exact_checks_hold(checks, tol=EXACT_TOL):
    worst = {k: v for k, v in checks.items() if not k.startswith("grad_ratio_c")}
    return all(v < tol for v in worst.values())


# ---- (b) the dynamics -------------------------------------------------------------------------
def _bn_fed_convs(model):
    """The convs whose output goes straight into a normalizer (every conv of SmallCNN)."""
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def run(config, seed, ctx):
    train, test = R.shapes10(seed, config["train_size"], config["test_size"], config["image_size"],
                             config["batch_size"], device=ctx.device)
    model = SmallCNN(image_size=config["image_size"], widths=tuple(config["widths"]), norm="BatchNorm2d")
    model.to(ctx.device)
    convs = _bn_fed_convs(model)
    conv_weights = {id(m.weight) for m in convs}
    decayed = [p for p in model.parameters() if id(p) in conv_weights or p is model.fc.weight]
    rest = [p for p in model.parameters() if id(p) not in {id(q) for q in decayed}]
    optimizer = tg.optim.SGD([{"params": decayed, "weight_decay": config["weight_decay"]},
                              {"params": rest, "weight_decay": 0.0}],
                             lr=config["lr"], momentum=config["momentum"])
    lr = config["lr"]
    previous = [m.weight.detach().numpy().astype(np.float64).ravel() for m in convs]
    norms = [[float(np.linalg.norm(w))] for w in previous]
    angles = [[] for _ in convs]

    def on_step(step, x, y, loss):
        for i, m in enumerate(convs):
            w = m.weight.detach().numpy().astype(np.float64).ravel()
            cos = np.dot(w, previous[i]) / (np.linalg.norm(w) * np.linalg.norm(previous[i]))
            angles[i].append(float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))))
            norms[i].append(float(np.linalg.norm(w)))
            previous[i] = w

    trained = R.train_steps(model, optimizer, R.batches(train), config["steps"], ctx, on_step=on_step)
    _, acc = R.evaluate(model, test)
    norm_ratio = float(np.mean([n[-1] / n[0] for n in norms]))
    eff = [[lr / v ** 2 for v in n] for n in norms]
    result = {"norm_ratio": norm_ratio,
              "eff_step_ratio": float(np.mean([e[-1] / e[0] for e in eff])),
              "final_norm": float(np.mean([n[-1] for n in norms])),
              "mean_angle_deg": float(np.mean([np.mean(a[-max(1, len(a) // 10):]) for a in angles])),
              "test_acc": acc, "diverged": trained["diverged"],
              "norms": norms, "effective_steps": eff, "angles_deg": angles, "losses": trained["losses"]}
    for eps in (EPS_TINY, 1e-5):
        checks = exact_checks(seed, eps)
        tag = "epstiny" if eps == EPS_TINY else "eps1e-5"
        result[f"exact_{tag}"] = checks
        result[f"worst_output_rel_diff_{tag}"] = max(v for k, v in checks.items() if k.startswith("output_rel"))
        result[f"worst_grad_ratio_err_{tag}"] = max(v for k, v in checks.items() if k.startswith("grad_ratio_err"))
        result[f"bias_grad_rel_{tag}"] = checks["bias_grad_rel"]
        result[f"exact_hold_{tag}"] = exact_checks_hold(checks)
    return result


# ---- verdict and plot -------------------------------------------------------------------------
def verdict(results):
    every = [r for runs in results.values() for r in runs]
    if not all(r["exact_hold_epstiny"] for r in every):
        return "not reproduced", "an exact check failed with eps = 1e-30"
    plain, wd = results["no_weight_decay"], results["weight_decay_5e-4"]
    grows = R.separated([r["norm_ratio"] for r in plain], [1.0] * len(plain))
    shrinks = R.separated([r["eff_step_ratio"] for r in plain], [1.0] * len(plain))
    wd_side = R.separated([r["final_norm"] for r in wd], [r["final_norm"] for r in plain])
    reason = (f"exact checks hold (eps 1e-30); no weight decay: norm ratio vs 1 {grows}, effective step "
              f"ratio vs 1 {shrinks}; final norm with vs without weight decay {wd_side}")
    if grows == "less" or shrinks == "greater":
        return "not reproduced", reason
    if grows == "greater" and shrinks == "less" and wd_side == "less":
        return "reproduced", reason
    return "inconclusive", reason


def plot(results, summary):
    fig, axes = R.figure(3, "Layers feeding BN: the weight norm sets the effective step "
                            "(SmallCNN+BN on Shapes10, SGD momentum 0.9, with and without weight decay)")
    for j, (name, runs) in enumerate(results.items()):
        color = R.COLORS[j]
        layers = len(runs[0]["norms"])
        for layer in range(layers):
            style = dict(color=color, ls=["-", "--", ":", "-."][layer % 4])
            label = f"{name}, conv {layer + 1}"
            n = [r["norms"][layer] for r in runs]
            steps = np.arange(len(n[0]))
            R.band(axes[0], steps, n, label, **style)
            R.band(axes[1], steps, [r["effective_steps"][layer] for r in runs], label, **style)
            a = [r["angles_deg"][layer] for r in runs]
            R.band(axes[2], np.arange(1, len(a[0]) + 1), a, label, **style)
    axes[0].set(xlabel="step", ylabel="||W|| (conv weight, Frobenius)", title="weight norm")
    axes[1].set(xlabel="step", ylabel="lr / ||W||^2", yscale="log", title="effective step")
    axes[2].set(xlabel="step", ylabel="angle between W_t and W_t+1 (degrees)", yscale="log",
                title="angular update")
    return R.finish(fig, axes)


def main(argv=None):
    return R.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
