"""At inference, BatchNorm folds into the convolution (or linear layer) before it: the folded
network gives the same outputs as the unfolded one, with fewer parameters and operations, and
runs faster.

Protocol: a post-activation CIFAR ResNet (examples.models.resnet, BatchNorm2d; ResNet-20 by
default) trained briefly on the embedded Shapes10 (SGD, lr 0.1, momentum 0.9), then folded with
the project's fusion utility, tinygrad_bn.nn.utils.fusion.fuse_bn(model.eval(), example_input)
(the pairs read off the recorded graph: every conv whose output goes only to a BN). The same
trained weights are evaluated in float32 and, cast with Module.double(), in float64 (one
configuration each; the training is shared, cached per seed). Per dtype, on the whole test set:
the max absolute logit difference folded vs unfolded and the relative one (over the largest
|logit|), the test accuracy of both and the number of changed predictions; the parameter count
and the buffers; the operation count (the nodes of the recorded forward graph, by type) and the
FLOPs (a conv or linear: 2 per multiply-add, plus 1 per output for a bias; an eval BN: 4 per
element, its formula (x - rm) * invstd * gamma + beta); and the inference time per test batch,
unfolded and folded timed alternately in the same run (median over repeats), as the ratio
folded / unfolded.

Verdict rule (RULE below, word for word):
reproduced when, on every seed, the folded logits match the unfolded ones within 1e-5 relative in float32 and 1e-10 in float64, the test accuracies differ by at most one test image, the folded network has fewer FLOPs and graph nodes, and the inference-time ratio folded / unfolded is below 1 beyond the spread across seeds in both dtypes; not reproduced when a tolerance or the accuracy check fails on any seed, the folded network has no fewer FLOPs, or the time ratio is above 1 beyond the spread in either dtype; inconclusive otherwise.
"""
import copy
import json
import statistics
import sys
import time

import numpy as np

import tinygrad_bn as tg
from tinygrad_bn import nn
from tinygrad_bn.nn.utils.fusion import fuse_bn

from examples.experiments import _runner as R
from examples.models import count_parameters, resnet

NAME = "bn_folding"
CLAIM = ("At inference BatchNorm folds into the preceding convolution or linear layer, with "
         "identical results and less compute.")
SOURCE = ("Ioffe & Szegedy 2015, section 3.2 (the inference transform is a fixed linear map); the "
          "seed chapter's section 4.1; the 'Advanced Techniques' text's folding section")
RULE = __doc__.split("word for word):\n", 1)[1].strip()
BUDGET = {"quick": "~15 s", "default": "~3 min", "full": "~30 min"}
TABLE_KEYS = ["max_abs_logit_diff", "max_rel_logit_diff", "test_acc_unfolded", "test_acc_folded",
              "time_ratio", "flops_ratio", "nodes_unfolded", "nodes_folded", "params_unfolded",
              "params_folded"]
TOLERANCE = {"float32": 1e-5, "float64": 1e-10}

SCALES = {"quick": dict(depth=8, steps=10, train_size=256, test_size=256, image_size=16, repeats=3),
          "default": dict(depth=20, steps=150, train_size=2000, test_size=1000, image_size=16, repeats=9),
          "full": dict(depth=56, steps=2000, train_size=10000, test_size=2000, image_size=32, repeats=15)}
TRAINING_KEYS = ("depth", "steps", "train_size", "test_size", "image_size", "batch_size", "lr",
                 "momentum")


def configs(scale):
    base = dict(SCALES[scale], lr=0.1, momentum=0.9, batch_size=64, eval_batch_size=250)
    return {dtype: dict(base, dtype=dtype) for dtype in TOLERANCE}


# ---- what folding changes ------------------------------------------------------------------
def fold(model, example_input):
    """(the folded copy, the number of BNs folded away): the project's fuse_bn, on the graph."""
    model.eval()
    folded = fuse_bn(model, example_input)
    bns = lambda m: sum(isinstance(x, (nn.BatchNorm1d, nn.BatchNorm2d)) for x in m.modules())  # noqa: E731
    return folded, bns(model) - bns(folded)


def graph_nodes(model, x):
    """{node type name: count} of the forward graph of model(x) (eval mode, x as a leaf that
    requires grad, so every op records its node)."""
    x = tg.tensor(x.detach().numpy(), device=x.device, requires_grad=True)
    with tg.enable_grad():
        out = model(x)
    counts, seen, stack = {}, set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        name = node.name if isinstance(getattr(node, "name", None), str) else type(node).__name__
        counts[name] = counts.get(name, 0) + 1
        stack.extend(edge[0] for edge in node.next_edges if edge is not None)
    return counts


def flops(model, x):
    """FLOPs of one forward pass of model on x, from the layers that do the arithmetic: conv and
    linear 2 per multiply-add + 1 per output for a bias, eval BN 4 per element (see docstring)."""
    total, handles = [0], []

    def conv_or_linear(module, args, output):
        if isinstance(module, nn.Linear):
            macs = output.numel() * module.in_features
        else:
            k = int(np.prod(module.weight.shape[1:]))  # in_channels / groups * kernel size
            macs = output.numel() * k
        total[0] += 2 * macs + (output.numel() if module.bias is not None else 0)

    def batch_norm(module, args, output):
        total[0] += 4 * output.numel()

    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            handles.append(m.register_forward_hook(conv_or_linear))
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            handles.append(m.register_forward_hook(batch_norm))
    try:
        with tg.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total[0]


def logits_of(model, batches):
    model.eval()
    with tg.no_grad():
        return np.concatenate([model(x).numpy().astype(np.float64) for x in batches])


def compare(unfolded, folded, batches, labels):
    """Logit and accuracy differences of folded vs unfolded on the same batches."""
    a, b = logits_of(unfolded, batches), logits_of(folded, batches)
    diff = float(np.abs(a - b).max())
    pa, pb = a.argmax(1), b.argmax(1)
    return {"max_abs_logit_diff": diff, "max_rel_logit_diff": diff / float(np.abs(a).max()),
            "test_acc_unfolded": float((pa == labels).mean()), "test_acc_folded": float((pb == labels).mean()),
            "changed_predictions": int((pa != pb).sum()), "n_test": int(len(labels))}


def time_pair(unfolded, folded, x, repeats):
    """Median seconds per forward pass of each on x, timed alternately (one warm-up each)."""
    times = {"unfolded": [], "folded": []}
    models = {"unfolded": unfolded, "folded": folded}
    with tg.no_grad():
        for m in models.values():
            m(x)
        for r in range(repeats):
            order = ("unfolded", "folded") if r % 2 == 0 else ("folded", "unfolded")
            for name in order:
                start = time.perf_counter()
                models[name](x).numpy()
                times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}, times


# ---- the run -------------------------------------------------------------------------------
_TRAINED = {}  # (seed, training settings) -> trained state: the dtype configurations share it


def trained_model(config, seed, ctx):
    key = (seed, json.dumps({k: config[k] for k in TRAINING_KEYS}, sort_keys=True), ctx.device)
    train, test = R.shapes10(seed, config["train_size"], config["test_size"], config["image_size"],
                             config["batch_size"], device=ctx.device)
    model = resnet(config["depth"], "post", "BatchNorm2d", image_size=config["image_size"]).to(ctx.device)
    if key in _TRAINED:
        model.load_state_dict(_TRAINED[key]["state"])
        return model, test, _TRAINED[key]["losses"]
    optimizer = tg.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    trained = R.train_steps(model, optimizer, R.batches(train), config["steps"], ctx)
    _TRAINED[key] = {"state": copy.deepcopy(model.state_dict()), "losses": trained["losses"]}
    return model, test, trained["losses"]


def run(config, seed, ctx):
    model, test, losses = trained_model(config, seed, ctx)
    model.eval()
    if config["dtype"] == "float64":
        model = model.double()
    cast = (lambda x: x.double()) if config["dtype"] == "float64" else (lambda x: x)
    xs, ys = [], []
    for x, y in test:
        xs.append(cast(x))
        ys.append(y.numpy())
    labels = np.concatenate(ys)
    folded, n_folded = fold(model, xs[0][:2])
    result = compare(model, folded, xs, labels)
    example = xs[0]
    timing, raw = time_pair(model, folded, example, config["repeats"])
    nodes_u, nodes_f = graph_nodes(model, example[:2]), graph_nodes(folded, example[:2])
    flops_u, flops_f = flops(model, example[:1]), flops(folded, example[:1])
    buffers = lambda m: sum(b.numel() for _, b in m.named_buffers())  # noqa: E731
    result.update({
        "bns_folded": n_folded,
        "time_unfolded_s": timing["unfolded"], "time_folded_s": timing["folded"],
        "time_ratio": timing["folded"] / timing["unfolded"], "time_batch": int(example.shape[0]),
        "times_unfolded_s": raw["unfolded"], "times_folded_s": raw["folded"],
        "flops_unfolded": flops_u, "flops_folded": flops_f, "flops_ratio": flops_f / flops_u,
        "nodes_unfolded": sum(nodes_u.values()), "nodes_folded": sum(nodes_f.values()),
        "node_types_unfolded": nodes_u, "node_types_folded": nodes_f,
        "params_unfolded": count_parameters(model), "params_folded": count_parameters(folded),
        "buffers_unfolded": buffers(model), "buffers_folded": buffers(folded),
        "final_train_loss": float(np.mean(losses[-10:])), "losses": losses})
    return result


# ---- verdict and plot ----------------------------------------------------------------------
def verdict(results):
    parts, fail, success = [], False, True
    for dtype, tol in TOLERANCE.items():
        runs = results[dtype]
        worst = max(r["max_rel_logit_diff"] for r in runs)
        acc_ok = all(abs(r["test_acc_unfolded"] - r["test_acc_folded"]) * r["n_test"] <= 1 + 1e-9
                     for r in runs)
        fewer = all(r["flops_folded"] < r["flops_unfolded"] and r["nodes_folded"] < r["nodes_unfolded"]
                    for r in runs)
        side = R.separated(R.column(results, dtype, "time_ratio"), [1.0] * len(runs))
        parts.append(f"{dtype}: worst relative logit difference {worst:.2g} (tolerance {tol:g}), "
                     f"accuracy {'same' if acc_ok else 'differs'}, fewer FLOPs and nodes {fewer}, "
                     f"time ratio vs 1 {side}")
        fail |= worst > tol or not acc_ok or not fewer or side == "greater"
        success &= side == "less"
    reason = "; ".join(parts)
    if fail:
        return "not reproduced", reason
    return ("reproduced" if success else "inconclusive"), reason


def plot(results, summary):
    fig, axes = R.figure(3, "BN folding at inference: folded == unfolded to rounding, with fewer "
                            "FLOPs and graph nodes and a shorter forward pass (post-activation ResNet, "
                            "Shapes10)", width=4.6)
    dtypes = list(TOLERANCE)
    xpos = np.arange(len(dtypes))
    for j, dtype in enumerate(dtypes):
        runs = results[dtype]
        for k, r in enumerate(runs):
            axes[0].scatter([j], [max(r["max_rel_logit_diff"], 1e-20)], color=R.COLORS[j],
                            label=f"{dtype} (each seed)" if k == 0 else None)
        axes[0].hlines(TOLERANCE[dtype], j - 0.3, j + 0.3, color=R.COLORS[j], ls="--",
                       label=f"{dtype} tolerance {TOLERANCE[dtype]:g}")
        for i, (key, label) in enumerate((("time_unfolded_s", "unfolded"), ("time_folded_s", "folded"))):
            vals = [r[key] * 1e3 for r in runs]
            axes[1].bar(j + (i - 0.5) * 0.35, np.mean(vals), 0.35, yerr=np.std(vals, ddof=1) if len(vals) > 1 else 0,
                        color=R.COLORS[i + 2], alpha=0.8, capsize=4, label=label if j == 0 else None)
    axes[0].set(xticks=xpos, xticklabels=dtypes, yscale="log", ylabel="max |logit diff| / max |logit|",
                title="folded vs unfolded logits (whole test set)")
    batch = results[dtypes[0]][0]["time_batch"]
    axes[1].set(xticks=xpos, xticklabels=[f"{d}\nratio {summary[d]['time_ratio']['mean']:.2f}" for d in dtypes],
                ylabel=f"ms per forward pass (batch {batch}, median)",
                title="inference time (mean ± std over seeds)")
    r0 = results[dtypes[0]][0]
    labels = ["FLOPs / 1e6 (1 image)", "graph nodes", "parameters / 1e3", "buffers / 1e2"]
    before = [r0["flops_unfolded"] / 1e6, r0["nodes_unfolded"], r0["params_unfolded"] / 1e3, r0["buffers_unfolded"] / 1e2]
    after = [r0["flops_folded"] / 1e6, r0["nodes_folded"], r0["params_folded"] / 1e3, r0["buffers_folded"] / 1e2]
    ypos = np.arange(len(labels))
    axes[2].barh(ypos + 0.2, before, 0.4, color=R.COLORS[2], label="unfolded")
    axes[2].barh(ypos - 0.2, after, 0.4, color=R.COLORS[3], label="folded")
    axes[2].set(yticks=ypos, yticklabels=labels, title="compute and size (counted, seed 0)")
    return R.finish(fig, axes)


def main(argv=None):
    return R.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
