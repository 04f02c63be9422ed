"""Pre-activation vs post-activation ResNets, trained side by side.

    python -m examples.resnet                      # the default comparison (a few minutes on 2 CPU cores)
    python -m examples.resnet --depth 56 --epochs 4 --out results/d56
    python -m examples.resnet --norm GroupNorm     # any conv normalizer in tinygrad_bn.norms.REGISTRY
    python -m examples.resnet --dataset cifar10 --data-dir ~/data --device cuda --epochs 160 \\
        --train-size 50000 --batch-size 128 --schedule multistep

Builds a post-activation (He et al. 2016a) and a pre-activation (He et al. 2016b) CIFAR ResNet of
the same depth and normalizer (see examples/models.py), and trains both with the same seed, the
same batches in the same order and the same learning-rate schedule: SGD with momentum 0.9,
weight decay 5e-4, cross-entropy. Every epoch each network makes one pass over the training set
(a progress bar shows loss, accuracy and images/s) and is evaluated in eval mode on the test
set; then both, with their optimizers, schedules, the RNG state and the metrics so far, are
checkpointed to OUT/checkpoint.npz (--resume continues from there, identically).

Writes to --out:
    metrics.csv, metrics.json   per epoch and variant: lr, train/test loss and accuracy, time per
                                step, images/s (json: also the config, the final summary and
                                every step's training loss)
    curves.png                  loss and accuracy of both variants on shared axes, and the
                                per-step training loss
    graphs/block-{post,pre}-{backward,forward}.{svg,png}, graphs/blocks-{backward,forward}.png
                                one residual unit of each variant (layer1.1, the second unit of the
                                first stage), its backward and forward graph; the blocks-*.png put
                                post and pre side by side. Without Graphviz's `dot`: the .dot
                                files and a one-line hint.
    checkpoint.npz              for --resume
and prints a table of both variants: parameters, final loss and accuracy, time per step.
"""
import os

# One BLAS thread unless you say otherwise: the convolutions here are many small matrix products,
# and on a busy machine OpenBLAS's spinning worker threads made a step ~10x slower (measured:
# 0.2 s vs 3.8 s per ResNet-20 step on 2 shared cores). Set OPENBLAS_NUM_THREADS to override.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import copy  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import tinygrad_bn as tg  # noqa: E402
import tinygrad_bn.distributed as dist  # noqa: E402

from examples import _common as C  # noqa: E402
from examples import models  # noqa: E402

DEFAULTS = {"depth": 20, "train_size": 5000, "test_size": 1000, "image_size": 16, "epochs": 5,
            "batch_size": 64, "lr": 0.1, "warmup_epochs": 0.0,
            "out": "results/resnet-<dataset>-d<depth>-<norm>"}
VARIANTS = ("post", "pre")
LABELS = {"post": "post-activation", "pre": "pre-activation"}
#: the options that determine a run's trajectory: a resumed run must repeat them
TRAJECTORY = ("dataset", "train_size", "test_size", "image_size", "augment", "depth", "norm",
              "epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule", "step_size",
              "milestones", "gamma", "warmup_epochs", "seed", "sync_bn")


def build_parser():
    parser = C.OneLineParser(
        prog="python -m examples.resnet",
        description="Train a post-activation and a pre-activation CIFAR-style ResNet side by side "
                    "(same seed, batches and schedule) and write metrics, plots and block graphs.",
        epilog="Errors in the options are reported in one line naming the option.")
    C.add_data_options(parser, DEFAULTS)
    C.add_model_options(parser, DEFAULTS)
    C.add_optim_options(parser, DEFAULTS)
    run = C.add_run_options(parser, DEFAULTS)
    run.add_argument("--graph-format", choices=("svg", "png", "pdf"), default="svg",
                     help="format of the four block renderings (a PNG of each is made too, for "
                          "the side-by-side images) (default: %(default)s)")
    run.add_argument("--no-graphs", action="store_true",
                     help="skip drawing the residual units (graphs/)")
    return parser


def default_out(args):
    return f"results/resnet-{args.dataset}-d{args.depth}-{args.norm}"


def build_variants(args, in_channels, image_size, num_classes, steps_per_epoch, comm=None):
    """{"post": (model, optimizer, scheduler), "pre": ...}, each model initialised from --seed."""
    variants = {}
    for block in VARIANTS:
        tg.manual_seed(args.seed)  # each variant's initialisation depends on the seed alone
        try:
            model = models.ResNet(args.depth, block, args.norm, num_classes, in_channels, image_size)
        except ValueError as e:
            C.fail("--norm", str(e))
        model = C.wrap_model(args, model.to(args.device), comm)
        optimizer = C.make_optimizer(args, model)
        variants[block] = (model, optimizer, C.make_scheduler(args, optimizer, steps_per_epoch))
    return variants


# ---- drawing one residual unit of each variant ----------------------------------------------
def unit_to_draw(model):
    """(stage, index): the second unit of stage 1 (an identity-shortcut unit whose pre-act
    variant has the bare identity path), or the first when a stage has one unit (depth 8)."""
    return "layer1", (1 if len(model.layer1) > 1 else 0)


def block_graphs(model, block, device, seed=0):
    """(backward graph, forward graph) of one unit of `model`, applied to a leaf input x."""
    from tinygrad_bn.viz import draw_graph
    stage, index = unit_to_draw(model)
    unit = copy.deepcopy(getattr(model, stage)[index])  # a copy: the model's BN statistics stay put
    holder = models.NamedUnit(stage, index, unit)
    channels = unit.conv1.in_channels
    # an input of the unit's own size (some normalizers' shapes depend on it), from NumPy's own
    # generator: drawing must not move the global RNG
    side = models.unit_input_size(model.image_size, stage, index)
    x_np = np.random.default_rng(seed).standard_normal((2, channels, side, side)).astype(np.float32)
    x = tg.tensor(x_np, device=device, requires_grad=True)
    # drawing is local to this rank: SyncBatchNorm in the copy must not message the others
    with dist.use_communicator(dist.SingleProcess()):
        y = holder(x)
    name = f"{stage}.{index}"
    kind = LABELS[block]
    rule = ("conv-BN-ReLU-conv-BN, add, ReLU" if block == "post"
            else "BN-ReLU-conv-BN-ReLU-conv, add: the identity path x -> add carries no op")
    graphs = {}
    for direction in ("backward", "forward"):
        graphs[direction] = draw_graph(y, params=holder, direction=direction,
                                       title=f"{kind} unit {name} ({direction} graph)\n{rule}")
    return graphs


def write_block_graphs(variants, out, device, fmt="svg"):
    """Render both directions of both variants' unit; then post|pre side by side as PNG.
    Returns the list of files written. Never raises for a missing `dot`."""
    from tinygrad_bn.viz import render_graph
    folder = os.path.join(out, "graphs")
    os.makedirs(folder, exist_ok=True)
    written, pngs, hinted = [], {}, False
    for block, (model, _, _) in variants.items():
        for direction, graph in block_graphs(C.bare(model), block, device).items():
            base = os.path.join(folder, f"block-{block}-{direction}")
            path = render_graph(graph, f"{base}.{fmt}", quiet=hinted)  # the hint once, not 4 times
            hinted = hinted or path.endswith(".dot")
            written.append(path)
            if fmt != "png" and not path.endswith(".dot"):
                png = render_graph(graph, f"{base}.png", quiet=True)
                if png.endswith(".png"):
                    written.append(png)
                    pngs[(block, direction)] = png
            elif path.endswith(".png"):
                pngs[(block, direction)] = path
    for direction in ("backward", "forward"):
        pair = [pngs.get((block, direction)) for block in variants]
        if all(pair):
            target = os.path.join(folder, f"blocks-{direction}.png")
            side_by_side(pair, target)
            written.append(target)
    return written


def side_by_side(images, path):
    """Put PNG images next to each other at their own resolution (matplotlib, Agg)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt
    arrays = [mpimg.imread(p) for p in images]
    dpi = 100
    height = max(a.shape[0] for a in arrays)
    width = sum(a.shape[1] for a in arrays)
    fig, axes = plt.subplots(1, len(arrays), figsize=(width / dpi, height / dpi), dpi=dpi,
                             gridspec_kw={"width_ratios": [a.shape[1] for a in arrays]})
    for ax, a in zip(np.atleast_1d(axes), arrays):
        ax.imshow(a)
        ax.axis("off")
    fig.subplots_adjust(left=0, right=1, top=1, bottom=0, wspace=0.02)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


# ---- main -----------------------------------------------------------------------------------
def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    comm, log = C.start_run(args, DEFAULTS, default_out)
    wall = time.perf_counter()

    train, test = C.load_data(args)
    in_channels, image_size, num_classes = C.data_shape(train)
    train_loader, test_loader = C.make_loaders(args, train, test, comm)
    variants = build_variants(args, in_channels, image_size, num_classes, len(train_loader), comm)
    params = {name: models.count_parameters(C.bare(m)) for name, (m, _, _) in variants.items()}
    config = {key: getattr(args, key) for key in TRAJECTORY}
    run = C.Run(variants, train_loader, test_loader, args, config)
    if args.resume:
        done = run.resume()
        log(f"resuming from {run.checkpoint_path} after epoch {done}")

    log(f"ResNet-{args.depth} ({args.norm}), post- vs pre-activation on {args.dataset}: "
          f"{len(train)} training / {len(test)} test images of {in_channels}x{image_size}x{image_size}, "
          f"{args.epochs} epochs of {len(train_loader)} steps (batch {train_loader.batch_size}), "
          f"lr {args.lr} {args.schedule}, seed {args.seed}, device {args.device}")
    log("parameters: " + ", ".join(f"{LABELS[k]} {v:,}" for k, v in params.items()))
    graphs = []
    if not args.no_graphs and args.main:
        try:
            graphs = write_block_graphs(variants, args.out, args.device, args.graph_format)
        except ImportError as e:  # the Python package graphviz is missing: train anyway
            print(f"block graphs skipped: {' '.join(str(e).split())}")

    extra = {"params": params, "graphs": [os.path.relpath(p, args.out) for p in graphs],
             "labels": LABELS}

    def write(epoch, finished=False):  # after every epoch, so an interrupted run has its metrics
        if not args.main:
            return
        C.write_metrics(args.out, run.rows, run.step_losses, C.summary(run.rows, variants, params),
                        config, dict(extra, finished=finished))

    finished = run.train(log=log, on_epoch=write)
    write(None, finished)
    final = C.summary(run.rows, variants, params)
    if not args.main:
        return final
    title = (f"ResNet-{args.depth} ({args.norm}) post- vs pre-activation, {args.dataset} "
             f"{len(train)}/{len(test)} images {image_size}px, {args.epochs} epochs, seed {args.seed}")
    C.plot_curves(os.path.join(args.out, "curves.png"), run.rows, run.step_losses, LABELS, title)

    print()
    print(C.format_table(final, LABELS))
    state = "finished" if finished else f"stopped after epoch {run.rows[-1]['epoch'] if run.rows else 0} " \
                                        f"(continue with --resume)"
    print(f"\n{state}; wall time {time.perf_counter() - wall:.1f} s; results in {args.out}/ "
          f"(metrics.csv, metrics.json, curves.png, graphs/, {C.CHECKPOINT})")
    return final


if __name__ == "__main__":
    dist.run(main)  # under --distributed: an error on one rank ends every rank (not a hang)
    sys.exit(0)
