"""Train one model: a CIFAR ResNet (pre- or post-activation) or a small CNN.

    python -m examples.train --model small-cnn            # ~83% test accuracy on the embedded set in ~1 min
    python -m examples.train --block post --depth 32 --norm GroupNorm --optimizer adamw --lr 2e-3
    python -m examples.train --dataset mnist --data-dir ~/data/mnist --model small-cnn

The same data, normalizer, schedule, checkpoint and --resume machinery as examples.resnet (see
examples/_common.py), for one model, with a choice of optimizer (sgd, adam, adamw) and schedule
(cosine, step, multistep, constant). Every epoch: one pass over the training set with a progress
bar, evaluation in eval mode, a checkpoint. Writes metrics.csv, metrics.json, curves.png and
checkpoint.npz to --out and prints the final numbers.
"""
import os

# One BLAS thread unless OPENBLAS_NUM_THREADS says otherwise (see examples/resnet.py for why).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys  # noqa: E402
import time  # noqa: E402

import tinygrad_bn as tg  # noqa: E402
import tinygrad_bn.distributed as dist  # noqa: E402

from examples import _common as C  # noqa: E402
from examples import models  # noqa: E402

DEFAULTS = {"model": "small-cnn", "depth": 20, "train_size": 10000, "test_size": 1000,
            "image_size": 16, "epochs": None, "batch_size": 64, "lr": None, "warmup_epochs": 0.0,
            "out": "results/train-<model>-<dataset>"}
EPOCHS = {"small-cnn": 8, "resnet": 5}
LR = {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3}
TRAJECTORY = ("dataset", "train_size", "test_size", "image_size", "augment", "model", "block", "depth",
              "norm", "optimizer", "nesterov", "epochs", "batch_size", "lr", "momentum",
              "weight_decay", "schedule", "step_size", "milestones", "gamma", "warmup_epochs", "seed",
              "sync_bn")


def build_parser():
    parser = C.OneLineParser(
        prog="python -m examples.train",
        description="Train one model (a CIFAR ResNet or a small CNN) and write metrics, a plot and "
                    "a checkpoint.",
        epilog=f"--epochs defaults to {EPOCHS['small-cnn']} for small-cnn and {EPOCHS['resnet']} "
               f"for resnet; --lr to 0.1 for sgd and 1e-3 for adam/adamw. Errors in the options "
               f"are reported in one line naming the option.")
    C.add_data_options(parser, DEFAULTS)
    C.add_model_options(parser, DEFAULTS, with_block=True, with_model=True)
    C.add_optim_options(parser, DEFAULTS, with_optimizer=True)
    C.add_run_options(parser, DEFAULTS)
    return parser


def build_model(args, in_channels, image_size, num_classes):
    tg.manual_seed(args.seed)
    try:
        if args.model == "small-cnn":
            model = models.SmallCNN(num_classes, in_channels, args.norm, image_size)
        else:
            model = models.ResNet(args.depth, args.block, args.norm, num_classes, in_channels,
                                  image_size)
    except ValueError as e:
        C.fail("--norm", str(e))
    return model.to(args.device)


def variant_name(args):
    if args.model == "small-cnn":
        return "small-cnn"
    return f"resnet{args.depth}-{args.block}"


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    args.epochs = EPOCHS[args.model] if args.epochs is None else args.epochs
    args.lr = LR[args.optimizer] if args.lr is None else args.lr
    comm, log = C.start_run(args, DEFAULTS, lambda a: f"results/train-{variant_name(a)}-{a.dataset}")
    wall = time.perf_counter()

    train, test = C.load_data(args)
    in_channels, image_size, num_classes = C.data_shape(train)
    train_loader, test_loader = C.make_loaders(args, train, test, comm)
    model = C.wrap_model(args, build_model(args, in_channels, image_size, num_classes), comm)
    optimizer = C.make_optimizer(args, model)
    scheduler = C.make_scheduler(args, optimizer, len(train_loader))
    name = variant_name(args)
    params = {name: models.count_parameters(C.bare(model))}
    config = {key: getattr(args, key) for key in TRAJECTORY}
    run = C.Run({name: (model, optimizer, scheduler)}, train_loader, test_loader, args, config)
    if args.resume:
        log(f"resuming from {run.checkpoint_path} after epoch {run.resume()}")
    log(f"{name} ({args.norm}, {params[name]:,} parameters) on {args.dataset}: {len(train)} "
          f"training / {len(test)} test images of {in_channels}x{image_size}x{image_size}, "
          f"{args.epochs} epochs of {len(train_loader)} steps (batch {train_loader.batch_size}), "
          f"{args.optimizer} lr {args.lr} {args.schedule}, seed {args.seed}, device {args.device}"
        + (f", {args.world_size} ranks{' with SyncBatchNorm' if args.sync_bn else ''}"
           if comm is not None else ""))

    def write(epoch, finished=False):  # after every epoch, so an interrupted run has its metrics
        if not args.main:
            return
        C.write_metrics(args.out, run.rows, run.step_losses, C.summary(run.rows, [name], params),
                        config, {"params": params, "finished": finished})

    finished = run.train(log=log, on_epoch=write)
    write(None, finished)
    final = C.summary(run.rows, [name], params)
    if not args.main:
        return final
    C.plot_curves(os.path.join(args.out, "curves.png"), run.rows, run.step_losses, {},
                  f"{name} ({args.norm}) on {args.dataset}, {args.optimizer} lr {args.lr} "
                  f"{args.schedule}, seed {args.seed}")
    print()
    print(C.format_table(final))
    print(f"\n{'finished' if finished else 'stopped (continue with --resume)'}; wall time "
          f"{time.perf_counter() - wall:.1f} s; results in {args.out}/")
    return final


if __name__ == "__main__":
    dist.run(main)  # under --distributed: an error on one rank ends every rank (not a hang)
    sys.exit(0)
