"""Draw the backward (or forward) computation graph of an example model, or of one residual unit.

    python -m examples.draw_graph --out resnet20-pre.svg                      # whole ResNet-20, pre-act
    python -m examples.draw_graph --block post --max-depth 2 --out post.png   # stages/units as boxes
    python -m examples.draw_graph --fold --out folded.svg                     # repeated units folded
    python -m examples.draw_graph --what block --unit layer2.0 --block pre --out unit.svg
    python -m examples.draw_graph --model small-cnn --direction forward --out cnn.pdf

The graph is the one recorded by one training-mode forward pass on a random batch (and the
cross-entropy loss, with --output loss), drawn by tinygrad_bn.viz.draw_graph with the model's
parameter names and module clusters. The format follows --out's suffix (svg, png, pdf, or dot
for the DOT text alone); without Graphviz's `dot` program the .dot file is written and one line
says how to render it.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see examples/resnet.py

import sys  # noqa: E402

import numpy as np  # noqa: E402

import tinygrad_bn as tg  # noqa: E402
import tinygrad_bn.nn as nn  # noqa: E402
import tinygrad_bn.nn.functional as F  # noqa: E402

from examples import _common as C  # noqa: E402
from examples import models  # noqa: E402

FORMATS = ("svg", "png", "pdf", "dot")


def build_parser():
    p = C.OneLineParser(prog="python -m examples.draw_graph",
                        description="Draw the backward or forward graph of an example model or of "
                                    "one of its residual units to a file.",
                        epilog="Errors in the options are reported in one line naming the option.")
    p.add_argument("--model", choices=("resnet", "small-cnn"), default="resnet",
                   help="which example model (default: %(default)s)")
    p.add_argument("--depth", type=int, default=20, help="ResNet depth, 6n+2 (default: %(default)s)")
    p.add_argument("--block", choices=("pre", "post"), default="pre",
                   help="pre- or post-activation residual units (default: %(default)s)")
    p.add_argument("--norm", default=models.DEFAULT_NORM,
                   help="normalizer, any conv-capable name in tinygrad_bn.norms.REGISTRY (now: "
                        + ", ".join(models.conv_norm_names()) + ") (default: %(default)s)")
    p.add_argument("--what", choices=("model", "block"), default="model",
                   help="model: the whole network; block: one residual unit (--unit) applied to a "
                        "leaf input (default: %(default)s)")
    p.add_argument("--unit", default="layer1.1",
                   help="with --what block: which unit, layerS.I (layer2.0 has the projection "
                        "shortcut) (default: %(default)s)")
    p.add_argument("--direction", choices=("backward", "forward"), default="backward",
                   help="backward: one node per op, as autograd walks it; forward: ops in the order "
                        "they ran with the tensors between them (default: %(default)s)")
    p.add_argument("--output", choices=("loss", "logits"), default="loss",
                   help="with --what model: draw from the cross-entropy loss or from the logits "
                        "(default: %(default)s)")
    p.add_argument("--max-depth", type=int, default=None,
                   help="collapse modules deeper than this many levels into one node each "
                        "(0: every top-level module is one node) (default: no limit)")
    p.add_argument("--max-nodes", type=C.positive_int, default=None,
                   help="draw at most this many ops, those nearest the output (default: all)")
    p.add_argument("--fold", action="store_true",
                   help="fold runs of identical units (layer1.1, layer1.2, ...) into one node")
    p.add_argument("--show-saved", action="store_true",
                   help="show what each op saved for backward (names and shapes)")
    p.add_argument("--rankdir", choices=("TB", "LR", "BT", "RL"), default="TB",
                   help="layout direction (default: %(default)s)")
    p.add_argument("--image-size", type=C.positive_int, default=32,
                   help="side of the random input images (default: %(default)s)")
    p.add_argument("--batch", type=C.positive_int, default=2,
                   help="batch size of the random input (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or fakegpu (default: %(default)s)")
    p.add_argument("--out", default=None,
                   help="output file; its suffix picks the format: .svg, .png, .pdf or .dot "
                        "(default: results/graphs/<model>-<direction>.svg)")
    return p


def resolve_unit(model, spec):
    """("layer2", 0, unit) for spec "layer2.0", or a one-line error naming --unit."""
    stage, _, index = spec.partition(".")
    container = getattr(model, stage, None) if stage.startswith("layer") else None
    if not isinstance(container, nn.Sequential) or not index.isdigit() or int(index) >= len(container):
        units = [f"{s}.{i}" for s in ("layer1", "layer2", "layer3") for i in range(len(getattr(model, s)))]
        C.fail("--unit", f"no residual unit {spec!r} in this ResNet; choose one of "
                         f"{units[0]} .. {units[-1]} (e.g. {', '.join(units[:3])})")
    return stage, int(index), container[int(index)]


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.model == "resnet":
        try:
            models.check_depth(args.depth)
        except ValueError as e:
            C.fail("--depth", str(e))
    if args.norm not in models.conv_norm_names():
        C.fail("--norm", f"unknown normalizer {args.norm!r}; valid names: "
                         f"{', '.join(models.conv_norm_names())}")
    if args.max_depth is not None and args.max_depth < 0:
        C.fail("--max-depth", f"must be >= 0, got {args.max_depth}")
    if args.what == "block" and args.model != "resnet":
        C.fail("--what", "block needs --model resnet (the small CNN has no residual units)")
    if args.image_size < 8:
        C.fail("--image-size", f"must be at least 8, got {args.image_size}")
    C.check_device(args.device)
    name = (f"resnet{args.depth}-{args.block}" if args.model == "resnet" else "small-cnn")
    if args.what == "block":
        name += "-" + args.unit
    out = args.out or os.path.join("results", "graphs", f"{name}-{args.direction}.svg")
    fmt = os.path.splitext(out)[1].lstrip(".").lower()
    if fmt not in FORMATS:
        C.fail("--out", f"{out!r} must end in one of {', '.join('.' + f for f in FORMATS)}")
    directory = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(directory, exist_ok=True)
        probe = os.path.join(directory, ".write-test")
        open(probe, "w").close()
        os.unlink(probe)
    except OSError as e:
        C.fail("--out", f"cannot write to {directory!r}: {e.strerror or e}")

    from tinygrad_bn.viz import draw_graph, render_graph
    tg.manual_seed(0)
    try:
        if args.model == "resnet":
            model = models.ResNet(args.depth, args.block, args.norm, image_size=args.image_size)
        else:
            model = models.SmallCNN(norm=args.norm, image_size=args.image_size)
    except ValueError as e:
        C.fail("--norm", str(e))
    model.to(args.device)
    rng = np.random.default_rng(0)
    if args.what == "block":
        stage, index, unit = resolve_unit(model, args.unit)
        holder = models.NamedUnit(stage, index, unit)
        side = models.unit_input_size(args.image_size, stage, index)
        shape = (args.batch, unit.conv1.in_channels, side, side)
        x = tg.tensor(rng.standard_normal(shape).astype(np.float32), device=args.device,
                      requires_grad=True)
        output, params = holder(x), holder
        title = f"{args.block}-activation unit {args.unit} of ResNet-{args.depth} ({args.direction})"
    else:
        x = tg.tensor(rng.standard_normal((args.batch, 3, args.image_size, args.image_size))
                      .astype(np.float32), device=args.device)
        logits = model(x)
        if args.output == "loss":
            y = tg.tensor(rng.integers(0, 10, args.batch), device=args.device)
            output = F.cross_entropy(logits, y)
        else:
            output = logits
        params = model
        title = f"{name} ({args.norm}): {args.direction} graph of the {args.output}"
    try:
        graph = draw_graph(output, params=params, direction=args.direction,
                           show_saved=args.show_saved, max_depth=args.max_depth,
                           max_nodes=args.max_nodes, rankdir=args.rankdir, fold_repeats=args.fold,
                           title=title)
    except ImportError as e:  # the Python package graphviz is missing
        C.fail("graphviz", str(e))
    written = render_graph(graph, out, format=fmt)
    print(f"wrote {written}")
    return written


if __name__ == "__main__":
    main()
    sys.exit(0)
