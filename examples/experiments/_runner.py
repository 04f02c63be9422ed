"""The runner every experiment shares: options, seeding, outputs, metrics.json, plots, the table.

An experiment is a module of examples/experiments that declares

    NAME    = "my_claim"                      # the module's name; results/experiments/NAME/
    CLAIM   = "one sentence: what the texts claim"
    SOURCE  = "the paper, section / figure; the seed text's section"
    RULE    = "the verdict rule, in words, stated before anything runs"
    BUDGET  = {"quick": "~15 s", "default": "~3 min", "full": "~1 h"}   # on 2 CPU cores

    def configs(scale):            # scale: "quick" | "default" | "full"
        return {"bn": {...settings...}, "plain": {...}}   # configuration name -> JSON-able dict
    def run(config, seed, ctx):    # one (configuration, seed) run -> dict of raw numbers
        ...                        # (scalars and lists; JSON-able); ctx: see Context
    def verdict(results):          # {config name: [one run's dict per seed]} -> (word, reason)
        ...                        # word: "reproduced" | "not reproduced" | "inconclusive"
    def plot(results, summary):    # -> a matplotlib Figure (use figure() and band() below)
        ...

and optionally SEEDS (default 3 seeds: 0, 1, 2), TABLE_KEYS (the scalar result keys the table
shows; default: all) and add_arguments(parser) for options of its own (then declare
configs(scale, args): it is called with the parsed options when it takes two arguments).
Helpers for run(): the shapes10() and digits() loaders, dataset_loaders() for the options of
add_dataset_options() (--dataset digits|mnist --data-dir), batches(), train_steps() (k steps,
divergence recorded, never raised), evaluate(); for verdict(): column(), mean_std(),
separated(); for plot(): figure(), band(), finish(). Its last lines are

    def main(argv=None):
        return _runner.main(sys.modules[__name__], argv)
    if __name__ == "__main__":
        main()

main() parses the common options, runs every (configuration, seed) pair (each run seeded the
same way, each result written atomically to OUT/runs/ as soon as it finishes, so --resume skips
finished runs), then writes OUT/metrics.json and OUT/NAME.png and prints one row per
configuration with the verdict. Fewer than 3 seeds always gives "inconclusive": a comparison
needs a spread.
"""
import argparse
import inspect
import json
import math
import os
import platform
import sys
import tempfile
import textwrap
import time

import numpy as np

import tinygrad_bn as tg
from tinygrad_bn import backend

from examples import _common as C

VERDICTS = ("reproduced", "not reproduced", "inconclusive")
METRICS_KEYS = ("name", "claim", "source", "rule", "scale", "config", "provenance", "runs",
                "summary", "verdict", "verdict_reason", "wall_time_s")
MIN_SEEDS = 3
RUN_FORMAT = "tinygrad_bn experiment run 1"


# ---- options --------------------------------------------------------------------------------
def seed_list(text):
    """"0,1,2" or "3" -> [0, 1, 2] / [3]: non-negative integers, no repeats."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated non-negative integers, got "
                                         f"{text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct non-negative integers, got {text!r}")
    return seeds


def build_parser(exp):
    parser = C.OneLineParser(
        prog=f"python -m examples.experiments.{exp.NAME}",
        description=f"{exp.CLAIM} ({exp.SOURCE})",
        epilog=f"Verdict rule: {exp.RULE} Budget on 2 CPU cores: "
               + ", ".join(f"{k} {v}" for k, v in exp.BUDGET.items()) + ".")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--quick", action="store_true", help=f"the smallest setting ({exp.BUDGET['quick']}); "
                                                            f"the tests use it")
    scale.add_argument("--full", action="store_true", help=f"closer to the paper's setting "
                                                           f"({exp.BUDGET['full']})")
    parser.add_argument("--seeds", type=seed_list, default=None,
                        help="comma-separated seeds, one run per configuration each (default: "
                             f"{','.join(map(str, default_seeds(exp)))}); fewer than {MIN_SEEDS} "
                             f"makes the verdict inconclusive")
    parser.add_argument("--device", default="cpu",
                        help="cpu, cuda, cuda:N or fakegpu (default: %(default)s)")
    parser.add_argument("--out", default=None,
                        help=f"results folder (default: results/experiments/{exp.NAME})")
    parser.add_argument("--resume", action="store_true",
                        help="skip the runs already finished in --out (same configuration and seed)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in an --out that already holds a finished experiment "
                             "(its metrics.json, plot and runs are replaced)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    if hasattr(exp, "add_arguments"):
        exp.add_arguments(parser)
    return parser


def _check_out(out, resume, overwrite):
    """An --out that holds a finished experiment (its metrics.json) is continued (--resume),
    replaced (--overwrite) or refused: a plain rerun would silently replace committed-looking
    results, as the examples refuse to (examples._common.prepare_out)."""
    if resume and overwrite:
        C.fail("--overwrite", "cannot be combined with --resume (continue the runs, or start afresh)")
    finished = os.path.isfile(os.path.join(out, "metrics.json"))
    if finished and not resume and not overwrite:
        C.fail("--out", f"{out!r} already holds a finished experiment (metrics.json); pass --resume to "
                        f"reuse its finished runs, --overwrite to replace it, or another --out")
    runs = os.path.join(out, "runs")
    if overwrite and os.path.isdir(runs):
        for name in os.listdir(runs):
            if name.endswith(".json"):
                try:
                    os.unlink(os.path.join(runs, name))
                except OSError as e:
                    C.fail("--overwrite", f"cannot remove {os.path.join(runs, name)!r}: {e.strerror or e}")


def default_seeds(exp):
    return list(getattr(exp, "SEEDS", range(MIN_SEEDS)))


def scale_of(args):
    return "quick" if args.quick else "full" if args.full else "default"


def get_configs(exp, scale, args):
    if len(inspect.signature(exp.configs).parameters) >= 2:
        return exp.configs(scale, args)
    return exp.configs(scale)


# ---- seeding and the context a run gets -----------------------------------------------------
def seed_everything(seed):
    """Seed tinygrad_bn's generators (init, dropout, shuffling) and NumPy's global one."""
    tg.manual_seed(int(seed))
    np.random.seed(int(seed) % 2**32)


class Context:
    """What one run gets besides its configuration and seed: the device, the scale, the seed,
    and step progress bars (ctx.steps(n, desc) yields 0..n-1 with a bar unless --no-progress)."""

    def __init__(self, args, scale, seed, label):
        self.device, self.scale, self.seed, self.label = args.device, scale, seed, label
        self.no_progress, self.args = args.no_progress, args

    def steps(self, n, desc=""):
        return C.progress(range(n), n, f"{self.label} {desc}".strip(), self.no_progress)


# ---- shared pieces of runs: data, training for k steps --------------------------------------
def shapes10(seed, train_size, test_size, image_size, batch_size, device="cpu", augment="none"):
    """(train loader, test loader) of the embedded Shapes10, normalized per channel like the
    examples (examples/_common.py's load_data and make_loaders)."""
    args = argparse.Namespace(dataset="embedded", train_size=train_size, test_size=test_size,
                              image_size=image_size, seed=seed, batch_size=batch_size,
                              device=device, augment=augment)
    train, test = C.load_data(args)
    return C.make_loaders(args, train, test)


def digits(seed, batch_size=64, device="cpu"):
    """(train loader, test loader) of tinygrad_bn.data.Digits, scikit-learn's handwritten digits
    (1,797 real 8x8 images shipped with the package, no download; a fixed stratified split of
    1,438 train / 359 test), (N, 1, 8, 8), standardized with the training set's mean and std.
    The training loader reshuffles with `seed` and drops the last partial batch."""
    from tinygrad_bn.data import Digits
    return image_loaders(Digits(train=True), Digits(train=False), seed, batch_size, device)


def image_loaders(train, test, seed, batch_size, device="cpu"):
    """(train loader, test loader) of two ImageDatasets, standardized per channel with the
    training set's statistics (examples/_common.py's channel_stats)."""
    from tinygrad_bn.data import DataLoader, transforms
    normalize = transforms.Normalize(*C.channel_stats(train))
    return (DataLoader(train, batch_size=min(batch_size, len(train)), shuffle=True, drop_last=True,
                       seed=seed, device=device, transform=normalize),
            DataLoader(test, batch_size=512, shuffle=False, seed=seed, device=device,
                       transform=normalize))


DATASETS = ("digits", "mnist")


def add_dataset_options(parser, default="digits"):
    """--dataset digits|mnist and --data-dir: the embedded real digits, or MNIST's IDX files
    from a local folder (never downloaded)."""
    parser.add_argument("--dataset", choices=DATASETS, default=default,
                        help="digits: scikit-learn's 1,797 8x8 handwritten digits, shipped with "
                             "the package; mnist: the IDX files in --data-dir (default: %(default)s)")
    parser.add_argument("--data-dir", default=None,
                        help="folder holding the MNIST IDX files (required for --dataset mnist)")


def dataset_loaders(args, seed, batch_size, device="cpu"):
    """(train loader, test loader) for --dataset/--data-dir (see add_dataset_options); a
    one-line error, naming the option, when MNIST's files are missing or bad."""
    dataset = getattr(args, "dataset", "digits")
    if dataset == "digits":
        if getattr(args, "data_dir", None) is not None:
            C.fail("--data-dir", "is only used with --dataset mnist")
        return digits(seed, batch_size, device)
    from tinygrad_bn.data import MNIST, DatasetFileError
    if args.data_dir is None:
        C.fail("--data-dir", "is required with --dataset mnist (a folder holding the MNIST IDX "
                             "files; nothing is downloaded)")
    try:
        train, test = MNIST(args.data_dir, train=True), MNIST(args.data_dir, train=False)
    except (FileNotFoundError, DatasetFileError, OSError, ValueError) as e:
        C.fail("--data-dir", str(e))
    return image_loaders(train, test, seed, batch_size, device)


def batches(loader):
    """The loader's batches forever, epoch after epoch (each epoch reshuffled by its number)."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def train_steps(model, optimizer, batch_iter, steps, ctx=None, desc="train", on_step=None,
                loss_fn=None, diverge_above=None):
    """Train for `steps` optimizer steps on batches from batch_iter; never raises on divergence.

    on_step(step, x, y, loss_value) runs after each update (step counts from 1). Returns
    dict(losses=[per-step training loss], diverged=bool, steps=steps done): the run stops, with
    diverged=True, when the loss becomes non-finite or exceeds diverge_above."""
    import tinygrad_bn.nn.functional as F
    loss_fn = loss_fn or F.cross_entropy
    model.train()
    losses, diverged = [], False
    it = ctx.steps(steps, desc) if ctx is not None else range(steps)
    for step in it:
        x, y = next(batch_iter)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        value = float(loss.item())
        losses.append(value)
        if not math.isfinite(value) or (diverge_above is not None and value > diverge_above):
            diverged = True
            break
        if on_step is not None:
            on_step(step + 1, x, y, value)
    return {"losses": losses, "diverged": diverged, "steps": len(losses)}


def evaluate(model, loader):
    """(mean loss, accuracy) in eval mode without a graph (examples/_common.py's evaluate);
    a non-finite loss comes back as nan rather than an error."""
    with np.errstate(all="ignore"):
        loss, acc = C.evaluate(model, loader)
    return (loss if math.isfinite(loss) else float("nan")), acc


# ---- statistics -----------------------------------------------------------------------------
def mean_std(values):
    """{"mean", "std" (sample std, ddof=1; 0 for one value), "n", "min", "max"} of finite values;
    "n_nonfinite" counts the rest."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return {"mean": None, "std": None, "n": 0, "min": None, "max": None,
                "n_nonfinite": int(arr.size)}
    std = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    return {"mean": float(finite.mean()), "std": std, "n": int(finite.size),
            "min": float(finite.min()), "max": float(finite.max()),
            "n_nonfinite": int(arr.size - finite.size)}


def summarize(results):
    """Per configuration, per scalar (number or bool) result key: mean_std over the seeds."""
    summary = {}
    for name, runs in results.items():
        keys = [k for k, v in runs[0].items() if _is_scalar(v)] if runs else []
        summary[name] = {k: mean_std([float(r[k]) if r.get(k) is not None else float("nan")
                                      for r in runs]) for k in keys}
    return summary


def _is_scalar(v):
    return isinstance(v, (bool, int, float, np.floating, np.integer)) or v is None


def separated(a, b):
    """How a (list over seeds) compares with b: "greater", "less" or "overlap". Greater means
    mean(a) - mean(b) exceeds the larger of the two seed spreads (sample std): a difference
    smaller than the spread across seeds does not count."""
    sa, sb = mean_std(a), mean_std(b)
    if sa["n"] == 0 or sb["n"] == 0:
        return "overlap"
    spread = max(sa["std"], sb["std"])
    diff = sa["mean"] - sb["mean"]
    if diff > spread and diff > 0:
        return "greater"
    if -diff > spread and diff < 0:
        return "less"
    return "overlap"


def column(results, config, key):
    """[run[key] for each seed of a configuration]."""
    return [r[key] for r in results[config]]


# ---- plots ----------------------------------------------------------------------------------
COLORS = ["tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown",
          "tab:pink", "tab:gray", "tab:olive", "tab:cyan"]


def figure(ncols, title, nrows=1, width=5.0, height=4.0):
    """(fig, flat list of axes) on the Agg backend, with the claim as a wrapped title."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows + 0.6), squeeze=False)
    fig.suptitle(textwrap.fill(title, 40 + 30 * ncols), fontsize=10)
    return fig, list(axes.ravel())


def band(ax, x, runs, label, color=None, spread="std", marker=None, **kwargs):
    """The mean over seeds as a line, and a band across seeds: mean +- std ("std") or min..max
    ("range"). runs: one sequence per seed (equal lengths; non-finite values ignored)."""
    arr = np.asarray(runs, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    with np.errstate(all="ignore"), _quiet():
        mean = np.nanmean(arr, axis=0)
        if spread == "range":
            lo, hi = np.nanmin(arr, axis=0), np.nanmax(arr, axis=0)
        else:
            std = np.nanstd(arr, axis=0, ddof=1) if arr.shape[0] > 1 else np.zeros_like(mean)
            lo, hi = mean - std, mean + std
    n = arr.shape[0]
    what = "min-max" if spread == "range" else "±1 std"
    line, = ax.plot(x, mean, color=color, marker=marker, label=f"{label} (mean of {n} seeds)", **kwargs)
    if n > 1:
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0,
                        label=f"{label}: {what} over seeds")
    return line


class _quiet:
    """Silence numpy's 'mean of empty slice' warnings inside a with-block."""

    def __enter__(self):
        import warnings
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


def finish(fig, axes):
    """Grid and legend on every axis that has labelled artists, tight layout."""
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save_figure(fig, path):
    import matplotlib.pyplot as plt
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


# ---- files ----------------------------------------------------------------------------------
def write_json_atomic(path, doc):
    """Write JSON to path via a temporary file in the same folder and os.replace (never half a file)."""
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_jsonable(doc), f, indent=1, allow_nan=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None  # JSON has no nan/inf: null
    return value


def run_path(out, config_name, seed):
    return os.path.join(out, "runs", f"{config_name}__seed{seed}.json")


def load_finished(path, config, seed):
    """The stored result of a finished run with the same configuration and seed, or None."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    if doc.get("format") != RUN_FORMAT or doc.get("seed") != seed or doc.get("config") != _jsonable(config):
        return None
    return doc


def _with_changes_during_run(started, ended):
    """The provenance of the start; where the commit or the modified files changed while the run
    went on, also what they were at the end (then the code that ran may not be what is committed)."""
    keys = ("git_commit", "git_modified")
    if any(started.get(k) != ended.get(k) for k in keys):
        started = dict(started, at_end={k: ended.get(k) for k in keys})
    return started


def provenance(device):
    info = C.provenance()
    info["git_dirty"] = bool(info.get("git_modified"))
    info["machine"] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                       "cpu_count": os.cpu_count()}
    from tinygrad_bn.norms import _kernels
    info["threads"] = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                       "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
                       "normalizer_worker_threads": _kernels.worker_threads()}
    info["device"] = device
    try:
        import matplotlib
        info["matplotlib"] = matplotlib.__version__
    except ImportError:
        pass
    return info


# ---- the table ------------------------------------------------------------------------------
def format_table(exp, summary, verdict, reason):
    keys = list(getattr(exp, "TABLE_KEYS", None) or
                sorted({k for s in summary.values() for k in s}))
    width = max([13] + [len(n) for n in summary])
    head = f"{'configuration':<{width}} " + " ".join(f"{k:>22}" for k in keys)
    lines = [head, "-" * len(head)]
    for name, stats in summary.items():
        cells = []
        for k in keys:
            s = stats.get(k)
            if s is None or s["mean"] is None:
                cells.append(f"{'-':>22}")
            else:
                cells.append(f"{_num(s['mean']) + ' ± ' + _num(s['std']):>22}")
        lines.append(f"{name:<{width}} " + " ".join(cells))
    lines.append(f"verdict: {verdict} ({reason})")
    return "\n".join(lines)


def _num(x):
    return f"{x:.3g}" if (abs(x) < 1e-3 or abs(x) >= 1e4) and x != 0 else f"{x:.4f}".rstrip("0").rstrip(".") or "0"


# ---- main -----------------------------------------------------------------------------------
def main(exp, argv=None):
    """Run experiment module `exp` with command-line argv; returns the metrics dict."""
    wall = time.perf_counter()
    parser = build_parser(exp)
    args = parser.parse_args(argv)
    C.check_device(args.device)
    scale = scale_of(args)
    seeds = args.seeds if args.seeds is not None else default_seeds(exp)
    configs = get_configs(exp, scale, args)
    started = provenance(args.device)  # the code that runs is the code at the start
    out = args.out or os.path.join("results", "experiments", exp.NAME)
    _check_out(out, args.resume, args.overwrite)
    try:
        os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    except OSError as e:
        C.fail("--out", f"cannot create {out!r}: {e.strerror or e}")
    print(f"{exp.NAME} ({scale}): {exp.CLAIM}\nrule: {exp.RULE}\n"
          f"{len(configs)} configurations x {len(seeds)} seeds -> {out}/")

    pairs = [(name, seed) for name in configs for seed in seeds]
    results = {name: [] for name in configs}
    runs, skipped = [], 0
    bar = C.progress(pairs, len(pairs), "runs", args.no_progress)
    for name, seed in bar:
        path = run_path(out, name, seed)
        done = load_finished(path, configs[name], seed) if args.resume else None
        if done is None:
            seed_everything(seed)
            start = time.perf_counter()
            result = exp.run(configs[name], seed, Context(args, scale, seed, f"{name} seed {seed}"))
            done = {"format": RUN_FORMAT, "config_name": name, "config": configs[name], "seed": seed,
                    "result": result, "wall_time_s": time.perf_counter() - start}
            write_json_atomic(path, done)
            done = json.loads(json.dumps(_jsonable(done)))  # what a resumed run would read
        else:
            skipped += 1
        results[name].append(done["result"])
        runs.append({k: done[k] for k in ("config_name", "seed", "wall_time_s", "result")})
    if skipped:
        print(f"--resume: {skipped} of {len(pairs)} runs were already finished in {out}/ (skipped)")

    summary = summarize(results)
    word, reason = exp.verdict(results)
    if word not in VERDICTS:
        raise ValueError(f"{exp.NAME}.verdict returned {word!r}; expected one of {VERDICTS}")
    if len(seeds) < MIN_SEEDS and word != "inconclusive":
        reason = (f"only {len(seeds)} seed(s), fewer than {MIN_SEEDS}: no spread to compare "
                  f"against (the rule alone would say {word!r}: {reason})")
        word = "inconclusive"
    png = os.path.join(out, f"{exp.NAME}.png")
    fig = exp.plot(results, summary)
    save_figure(fig, png)
    metrics = {"name": exp.NAME, "claim": exp.CLAIM, "source": exp.SOURCE, "rule": exp.RULE,
               "scale": scale, "command": "python -m examples.experiments." + exp.NAME
               + ("" if argv is None and len(sys.argv) <= 1 else " " + " ".join(
                   argv if argv is not None else sys.argv[1:])),
               "config": {"seeds": seeds, "device": args.device, "configurations": configs},
               "provenance": _with_changes_during_run(started, provenance(args.device)), "runs": runs, "summary": summary,
               "verdict": word, "verdict_reason": reason, "skipped_runs": skipped,
               "wall_time_s": time.perf_counter() - wall}
    write_json_atomic(os.path.join(out, "metrics.json"), metrics)
    print(format_table(exp, summary, word, reason))
    print(f"wall time {metrics['wall_time_s']:.1f} s; {out}/metrics.json, {png}")
    return metrics
