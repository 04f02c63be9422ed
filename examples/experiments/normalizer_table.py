"""Which normalizer for which batch size? Every conv normalizer of the registry, one small CNN,
batch 2, 8 and 64: normalizers that use batch statistics (BatchNorm and kin) lose accuracy as the
batch shrinks, batch-independent ones (GroupNorm, LayerNorm, ...) do not.

Protocol: every entry of tinygrad_bn.norms.REGISTRY with a make_for_conv (read from the registry
when the experiment runs, so a new normalizer file joins the table with no code change) is put
into examples.models.SmallCNN (three conv-norm-ReLU-maxpool stages) on the embedded Shapes10 and
trained at each batch size for the same number of epochs (the same number of samples seen), with
SGD (momentum 0.9) and the learning rate scaled linearly with the batch size (lr = base_lr * B /
64, Goyal et al. 2017; the protocol of Wu & He 2018's batch-size study). Per (normalizer, batch
size, seed) we record:
- the test accuracy in eval mode;
- the time per training step against BatchNorm2d's, as the median ratio of interleaved steps of
  the trained model and of a BatchNorm2d SmallCNN on the same batch, in the same run;
- the parameter count of the whole model;
- whether the eval output of a sample depends on the other samples of its batch (measured: one
  sample alone against the same sample among seven others, on the trained model);
- the memory one layer keeps for backward: every array its graph nodes save (a view counted as
  the array it views, each once), for a (B, C, hw, hw) float32 input of the middle stage, in
  bytes and as a multiple of that input's size.
The table (OUT/normalizer_table.md, and with --docs FILE the top of FILE) is sorted by the
accuracy at the smallest batch size; the plot is a heat map of the accuracy (normalizer x batch
size) beside one of the time ratio.

Verdict rule (RULE below, word for word):
with b the smallest and B the largest batch size, reproduced when BatchNorm2d's test accuracy at b is below GroupNorm's at b beyond the spread across seeds, and below BatchNorm2d's own at B beyond the spread, while GroupNorm's at b is not below its own at B beyond the spread; not reproduced when BatchNorm2d's accuracy at b is above GroupNorm's at b, or above its own at B, beyond the spread; inconclusive otherwise.
"""
import os
import sys
import time

import numpy as np

import tinygrad_bn as tg
from tinygrad_bn.norms import REGISTRY

from examples.experiments import _runner as R
from examples.models import SmallCNN, conv_norm_names, make_norm

NAME = "normalizer_table"
CLAIM = ("Normalizers that use batch statistics (BatchNorm and kin) lose accuracy as the batch "
         "shrinks towards 2, while batch-independent ones (GroupNorm, LayerNorm, ...) do not: the "
         "right normalizer depends on the batch size.")
SOURCE = ("Wu & He 2018, 'Group Normalization', Fig. 1 and section 4.1; Ioffe 2017 (Batch "
          "Renorm), section 1; the chapter's section 6.3 and practical guidance")
RULE = __doc__.split("word for word):\n", 1)[1].strip()
BUDGET = {"quick": "~10 s", "default": "~2 min", "full": "~2 h"}
TABLE_KEYS = ["test_acc", "time_ratio_vs_bn", "params", "eval_batch_dependent", "saved_x_input"]
REFERENCE = "BatchNorm2d"   # the time ratios are against it
BATCH_FREE = "GroupNorm"    # the batch-independent normalizer of the verdict

SCALES = {"quick": dict(batch_sizes=(2, 8, 64), train_size=128, test_size=128, image_size=8,
                        widths=(4, 8, 8), epochs=1, timing_reps=2),
          "default": dict(batch_sizes=(2, 8, 64), train_size=512, test_size=500, image_size=16,
                          widths=(8, 16, 32), epochs=3, timing_reps=3),
          "full": dict(batch_sizes=(2, 8, 64), train_size=10000, test_size=2000, image_size=32,
                       widths=(32, 64, 128), epochs=10, timing_reps=10)}
BASE_LR = 0.1  # at batch 64; lr = BASE_LR * B / 64


def add_arguments(parser):
    parser.add_argument("--docs", default=None, metavar="FILE",
                        help="also write the table into FILE (docs/normalizers.md) between the "
                             "normalizer_table markers, at its top if they are missing")


def config_name(norm, batch_size):
    return f"{norm} b{batch_size}"


def configs(scale):
    base = dict(SCALES[scale])
    sizes = base.pop("batch_sizes")
    return {config_name(norm, b): dict(base, norm=norm, batch_size=b, lr=BASE_LR * b / 64, momentum=0.9)
            for norm in conv_norm_names() for b in sizes}


# ---- what one run measures besides accuracy --------------------------------------------------
def saved_for_backward(layer, x):
    """Bytes of every array the graph of layer(x) saves for backward, each memory block once (a
    saved view counts as the array it views); the walk stops at leaves (x, the parameters)."""
    y = layer(x)
    seen_nodes, owners, total = set(), {}, 0
    stack = [y.grad_fn] if y.grad_fn is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        for array in (node._saved or {}).values():
            if array is None or not hasattr(array, "nbytes"):
                continue  # an absent weight, or a Python scalar
            owner = array
            while getattr(owner, "base", None) is not None:
                owner = owner.base
            owners[id(owner)] = owner
        for edge in node.next_edges or ():
            if edge is not None and edge[0] is not None:
                stack.append(edge[0])
    for owner in owners.values():
        total += int(owner.nbytes)
    return total


def layer_memory(norm, batch_size, channels, hw, seed=0):
    """(bytes saved for backward, that / input bytes) for one training-mode layer of `norm` on a
    (batch_size, channels, hw, hw) float32 input that requires grad."""
    layer = make_norm(norm, channels, hw)
    layer.train()
    x = tg.tensor(np.random.default_rng(seed).standard_normal((batch_size, channels, hw, hw))
                  .astype(np.float32), requires_grad=True)
    nbytes = saved_for_backward(layer, x)
    return nbytes, nbytes / x.data.nbytes


def eval_batch_dependence(model, x):
    """max |f(x0 alone) - f(x0 among the others)| / max |f(x0 among the others)|, eval mode."""
    model.eval()
    with tg.no_grad():
        together = model(x).numpy()[0]
        alone = model(x[0:1]).numpy()[0]
    model.train()
    return float(np.abs(together - alone).max() / max(np.abs(together).max(), 1e-12))


def step_times(models, optimizers, x, y, reps):
    """Median seconds per training step of each model, steps interleaved (a b a b ...)."""
    times = [[] for _ in models]
    for _ in range(reps):
        for i, (model, optimizer) in enumerate(zip(models, optimizers)):
            start = time.perf_counter()
            R.train_steps(model, optimizer, iter([(x, y)]), 1)
            times[i].append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times]


def make_model(config):
    return SmallCNN(image_size=config["image_size"], widths=tuple(config["widths"]), norm=config["norm"])


def run(config, seed, ctx):
    b = config["batch_size"]
    train, test = R.shapes10(seed, config["train_size"], config["test_size"], config["image_size"], b,
                             device=ctx.device)
    model = make_model(config).to(ctx.device)
    optimizer = tg.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    steps = config["epochs"] * len(train)
    trained = R.train_steps(model, optimizer, R.batches(train), steps, ctx, desc=f"b{b}")
    _, acc = R.evaluate(model, test)
    probe = next(iter(test))[0][:8]
    dependence = eval_batch_dependence(model, probe)
    # timing, after the accuracy is taken: the trained model against a BatchNorm2d twin, interleaved
    x, y = next(R.batches(train))
    reference = make_model(dict(config, norm=REFERENCE)).to(ctx.device)
    ref_optimizer = tg.optim.SGD(reference.parameters(), lr=config["lr"], momentum=config["momentum"])
    step_times([model, reference], [optimizer, ref_optimizer], x, y, 1)  # warm-up, not timed
    t_model, t_ref = step_times([model, reference], [optimizer, ref_optimizer], x, y, config["timing_reps"])
    channels, hw = config["widths"][1], config["image_size"] // 2
    saved_bytes, saved_ratio = layer_memory(config["norm"], b, channels, hw, seed)
    return {"test_acc": acc, "final_train_loss": float(np.mean(trained["losses"][-20:])),
            "diverged": trained["diverged"], "steps": trained["steps"],
            "time_per_step_s": t_model, "bn_time_per_step_s": t_ref, "time_ratio_vs_bn": t_model / t_ref,
            "params": sum(p.numel() for p in model.parameters()),
            "eval_dependence": dependence, "eval_batch_dependent": dependence > 1e-4,
            "saved_bytes": saved_bytes, "saved_x_input": saved_ratio,
            "registry_batch_independent_eval": bool(REGISTRY[config["norm"]].batch_independent_eval),
            "memory_probe_shape": [b, channels, hw, hw]}


# ---- verdict, table, plot --------------------------------------------------------------------
def _layout(results):
    """(normalizers, batch sizes) present in results (config names 'norm bB'), in order."""
    norms, sizes = [], []
    for name in results:
        norm, b = name.rsplit(" b", 1)
        if norm not in norms:
            norms.append(norm)
        if int(b) not in sizes:
            sizes.append(int(b))
    return norms, sorted(sizes)


def _acc(results, norm, b):
    return R.column(results, config_name(norm, b), "test_acc")


def verdict(results):
    norms, sizes = _layout(results)
    if REFERENCE not in norms or BATCH_FREE not in norms:
        return "inconclusive", f"the registry lacks {REFERENCE} or {BATCH_FREE}"
    small, large = sizes[0], sizes[-1]
    bn_vs_gn = R.separated(_acc(results, REFERENCE, small), _acc(results, BATCH_FREE, small))
    bn_drop = R.separated(_acc(results, REFERENCE, small), _acc(results, REFERENCE, large))
    gn_drop = R.separated(_acc(results, BATCH_FREE, small), _acc(results, BATCH_FREE, large))
    reason = (f"at batch {small}: {REFERENCE} vs {BATCH_FREE} {bn_vs_gn}; {REFERENCE} at {small} vs "
              f"at {large}: {bn_drop}; {BATCH_FREE} at {small} vs at {large}: {gn_drop}")
    if bn_vs_gn == "greater" or bn_drop == "greater":
        return "not reproduced", reason
    if bn_vs_gn == "less" and bn_drop == "less" and gn_drop != "less":
        return "reproduced", reason
    return "inconclusive", reason


def _mean_std(values):
    s = R.mean_std(values)
    return s["mean"], s["std"]


def _rows(results):
    """One dict per normalizer, sorted by mean accuracy at the smallest batch (best first)."""
    norms, sizes = _layout(results)
    rows = []
    for norm in norms:
        runs = {b: results[config_name(norm, b)] for b in sizes}
        row = {"norm": norm, "acc": {b: _mean_std([r["test_acc"] for r in runs[b]]) for b in sizes},
               "time": {b: _mean_std([r["time_ratio_vs_bn"] for r in runs[b]]) for b in sizes},
               "params": runs[sizes[0]][0]["params"],
               "dependent": any(r["eval_batch_dependent"] for b in sizes for r in runs[b]),
               "registry_independent": runs[sizes[0]][0]["registry_batch_independent_eval"],
               "saved": {b: runs[b][0]["saved_x_input"] for b in sizes}}
        rows.append(row)
    rows.sort(key=lambda row: -(row["acc"][sizes[0]][0] if row["acc"][sizes[0]][0] is not None else -1))
    return rows, sizes


def _pm(mean_std, digits=3):
    mean, std = mean_std
    return "–" if mean is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(metrics):
    """The table of a finished run's metrics (a metrics.json dict), as Markdown."""
    results = {}
    for run in metrics["runs"]:
        results.setdefault(run["config_name"], []).append(run["result"])
    rows, sizes = _rows(results)
    n_seeds = len(metrics["config"]["seeds"])
    some = next(iter(metrics["config"]["configurations"].values()))
    head = (["normalizer"] + [f"test acc, batch {b}" for b in sizes]
            + [f"time/step vs BN, batch {b}" for b in sizes]
            + ["params", "eval depends on batch", "saved for backward (× layer input)"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        saved = " / ".join(f"{row['saved'][b]:.2f}" for b in sizes)
        dependent = "yes" if row["dependent"] else "no"
        if row["dependent"] == row["registry_independent"]:
            dependent += " (registry says otherwise)"
        cells = ([row["norm"]] + [_pm(row["acc"][b]) for b in sizes]
                 + [_pm(row["time"][b], 2) for b in sizes] + [f"{row['params']:,}", dependent, saved])
        lines.append("| " + " | ".join(cells) + " |")
    prov = metrics["provenance"]
    commit = (prov.get("git_commit") or "unknown")[:8]
    lines.append("")
    lines.append(f"Mean ± std over {n_seeds} seed(s); `{metrics['scale']}` scale: SmallCNN widths "
                 f"{tuple(some['widths'])} on Shapes10 at {some['image_size']}×{some['image_size']}, "
                 f"{some['train_size']} training images, {some['epochs']} epoch(s) at every batch size, "
                 f"SGD momentum 0.9, lr = {BASE_LR} × B / 64; test accuracy on {some['test_size']} "
                 f"images in eval mode. Time per step: median of interleaved steps against a "
                 f"BatchNorm2d twin in the same run. Saved for backward: one layer on a "
                 f"(B, {some['widths'][1]}, {some['image_size'] // 2}, {some['image_size'] // 2}) "
                 f"float32 input, at batch {' / '.join(map(str, sizes))}. Verdict: "
                 f"**{metrics['verdict']}** ({metrics['verdict_reason']}).")
    lines.append("")
    lines.append(f"Generated by `{metrics['command']}` at commit `{commit}` "
                 f"(modified files: {prov.get('git_dirty')}), {metrics['wall_time_s']:.0f} s on "
                 f"{prov['machine']['cpu_count']} CPU cores.")
    return "\n".join(lines)


BEGIN, END = "<!-- normalizer_table:begin -->", "<!-- normalizer_table:end -->"


def write_into(path, table):
    """Put `table` between the markers of the file at `path` (inserted after its first heading
    when the markers are missing), leaving the rest of the file as it was."""
    text = open(path).read() if os.path.exists(path) else ""
    block = (f"{BEGIN}\n## Which normalizer for which batch size? (measured)\n\n{table}\n\n"
             f"A small-scale measurement (the setting is in the note above): see [the "
             f"experiment's page](experiments/{NAME}.md) for the protocol, the caveats and the "
             f"reading. Regenerate with `python -m examples.experiments.{NAME} --docs "
             f"docs/normalizers.md`.\n{END}")
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        text = before + block + rest.split(END, 1)[1]
    else:
        lines = text.split("\n")
        at = next((i + 1 for i, line in enumerate(lines) if line.startswith("# ")), 0)
        text = "\n".join(lines[:at] + ["", block, ""] + lines[at:])
    with open(path, "w") as f:
        f.write(text)


def plot(results, summary):
    rows, sizes = _rows(results)
    fig, axes = R.figure(2, "Which normalizer for which batch size: test accuracy and time per step "
                            "of every conv normalizer in the registry, SmallCNN on Shapes10",
                         width=6.0, height=0.45 * len(rows) + 2.0)
    for ax, key, title, cmap in ((axes[0], "acc", "test accuracy (mean over seeds)", "viridis"),
                                 (axes[1], "time", "time per step / BatchNorm2d's", "magma_r")):
        grid = np.array([[row[key][b][0] if row[key][b][0] is not None else np.nan for b in sizes]
                         for row in rows])
        image = ax.imshow(grid, aspect="auto", cmap=cmap)
        fig.colorbar(image, ax=ax)
        for i, row in enumerate(rows):
            for j, b in enumerate(sizes):
                shade = image.norm(grid[i, j]) if np.isfinite(grid[i, j]) else 0.5
                dark = shade < 0.5 if key == "acc" else shade > 0.6  # viridis dark low, magma_r dark high
                ax.text(j, i, _pm(row[key][b], 2).replace(" ± ", "\n± "), ha="center", va="center",
                        fontsize=6, color="white" if dark else "black")
        ax.set_xticks(range(len(sizes)), [str(b) for b in sizes])
        ax.set_yticks(range(len(rows)), [row["norm"] for row in rows], fontsize=7)
        ax.set(xlabel="batch size", title=title)
    fig.tight_layout()
    return fig


def main(argv=None):
    metrics = R.main(sys.modules[__name__], argv)
    args = R.build_parser(sys.modules[__name__]).parse_args(argv)
    out = args.out or os.path.join("results", "experiments", NAME)
    table = markdown_table(metrics)
    with open(os.path.join(out, f"{NAME}.md"), "w") as f:
        f.write(table + "\n")
    print(f"table: {os.path.join(out, NAME + '.md')}")
    if args.docs:
        write_into(args.docs, table)
        print(f"table written into {args.docs}")
    return metrics


if __name__ == "__main__":
    main()
