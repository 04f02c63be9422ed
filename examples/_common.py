"""What examples/resnet.py, train.py and draw_graph.py share: the command-line options and their
one-line errors, datasets and loaders, optimizers and schedules, the training loop with
checkpoints and --resume, and the results files (metrics.csv, metrics.json, curves.png).

A run trains one or more "variants" (resnet.py: post- and pre-activation; train.py: one model)
on the same batches in the same order: every epoch, each variant makes one pass over the
training set (the loader is set to that epoch, so the batches are identical), then each is
evaluated in eval mode on the test set. After every epoch everything needed to continue is
saved atomically to OUT/checkpoint.npz; --resume continues from it, bit for bit on the CPU.
"""
import argparse
import csv
import json
import math
import os
import sys
import time

import numpy as np

import tinygrad_bn as tg
import tinygrad_bn.nn.functional as F
from tinygrad_bn import backend
from tinygrad_bn.data import CIFAR10, MNIST, DataLoader, DatasetFileError, Shapes10, transforms

from examples import models

CHECKPOINT = "checkpoint.npz"
CHECKPOINT_FORMAT = "tinygrad_bn examples checkpoint"


# ---- command line ---------------------------------------------------------------------------
_PROG = ["examples"]  # the running script's name for error lines, set by its parser


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (no usage block), exit status 2."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _PROG[0] = self.prog

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())}\n")


def fail(option, message):
    """Exit with status 2 and one line on stderr naming the option; no traceback."""
    text = " ".join(f"{option}: {message}".split())  # one line, whatever the message held
    sys.stderr.write(f"{_PROG[0]}: error: {text}\n")
    raise SystemExit(2)


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}") from None
    if not value >= 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}")
    return value


def add_data_options(parser, defaults):
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", choices=("embedded", "cifar10", "mnist"), default="embedded",
                   help="embedded: Shapes10, the 10-class image set generated in-process (no files); "
                        "cifar10 / mnist: read from local files in --data-dir (never downloaded) "
                        "(default: %(default)s)")
    g.add_argument("--data-dir", default=None,
                   help="folder holding the CIFAR-10 batches (cifar-10-batches-py/ or -bin/) or the "
                        "MNIST IDX files; required for --dataset cifar10 and mnist")
    g.add_argument("--train-size", type=positive_int, default=None,
                   help=f"training images: generated for embedded, the first N of the file set "
                        f"otherwise (default: {defaults['train_size']} for embedded, all for files)")
    g.add_argument("--test-size", type=positive_int, default=None,
                   help=f"test images, likewise (default: {defaults['test_size']} for embedded, "
                        f"all for files)")
    g.add_argument("--image-size", type=positive_int, default=None,
                   help=f"side of the embedded images in pixels, >= 8 (default: "
                        f"{defaults['image_size']}); CIFAR-10 is 32 and MNIST 28")
    g.add_argument("--augment", choices=("auto", "none", "crop-flip"), default="auto",
                   help="training augmentation: random crop after zero padding (size/8 pixels) and "
                        "horizontal flip; auto = crop-flip for cifar10, none otherwise "
                        "(default: %(default)s)")


def add_model_options(parser, defaults, with_block=False, with_model=False):
    g = parser.add_argument_group("model")
    if with_model:
        g.add_argument("--model", choices=("resnet", "small-cnn"), default=defaults.get("model", "resnet"),
                       help="resnet: the CIFAR ResNet of --depth and --block; small-cnn: three "
                            "conv-norm-ReLU-maxpool stages and a linear layer (default: %(default)s)")
    if with_block:
        g.add_argument("--block", choices=("post", "pre"), default="pre",
                       help="post: conv-BN-ReLU-conv-BN, add, ReLU (He et al. 2016a); pre: "
                            "BN-ReLU-conv-BN-ReLU-conv, add (He et al. 2016b) (default: %(default)s)")
    g.add_argument("--depth", type=int, default=defaults["depth"],
                   help="ResNet depth, of the form 6n+2: 8, 14, 20, 32, 44, 56, 110, ... "
                        "(default: %(default)s)")
    g.add_argument("--norm", default=models.DEFAULT_NORM,
                   help="the normalizer after each conv: any name in tinygrad_bn.norms.REGISTRY "
                        "that can normalize conv feature maps (now: "
                        + ", ".join(models.conv_norm_names()).replace("%", "%%")
                        + ") (default: %(default)s)")


def add_optim_options(parser, defaults, with_optimizer=False):
    g = parser.add_argument_group("optimization")
    if with_optimizer:
        g.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="sgd",
                       help="sgd (with --momentum, --nesterov), adam or adamw (default: %(default)s)")
        g.add_argument("--nesterov", action="store_true", help="Nesterov momentum for sgd")
    g.add_argument("--epochs", type=positive_int, default=defaults["epochs"],
                   help="passes over the training set (default: %(default)s)")
    g.add_argument("--batch-size", type=positive_int, default=defaults["batch_size"],
                   help="training batch size; the last incomplete batch is dropped (default: %(default)s)")
    g.add_argument("--lr", type=positive_float, default=defaults["lr"],
                   help="peak learning rate (default: %(default)s)")
    g.add_argument("--momentum", type=non_negative_float, default=0.9,
                   help="SGD momentum (default: %(default)s)")
    g.add_argument("--weight-decay", type=non_negative_float, default=defaults.get("weight_decay", 5e-4),
                   help="L2 weight decay (decoupled for adamw) (default: %(default)s)")
    g.add_argument("--no-wd-norm-bias", action="store_true",
                   help="no weight decay on normalization parameters and biases (two optimizer "
                        "parameter groups; the rest keeps --weight-decay)")
    g.add_argument("--schedule", choices=("cosine", "step", "multistep", "constant"),
                   default="cosine",
                   help="learning-rate schedule, updated after every step: cosine annealing to 0 over "
                        "the run; step: x --gamma every --step-size epochs; multistep: x --gamma at "
                        "--milestones (default: %(default)s)")
    g.add_argument("--step-size", type=positive_float, default=None,
                   help="epochs between decays for --schedule step (default: a third of --epochs)")
    g.add_argument("--milestones", default=None,
                   help="comma-separated epochs (fractions allowed) for --schedule multistep "
                        "(default: 50%%,75%% of --epochs, as He et al.'s 32k/48k of 64k iterations)")
    g.add_argument("--gamma", type=positive_float, default=0.1,
                   help="decay factor for step and multistep (default: %(default)s)")
    g.add_argument("--warmup-epochs", type=non_negative_float, default=defaults.get("warmup_epochs", 0.0),
                   help="linear warm-up from lr/10 over this many epochs (fractions allowed) before "
                        "the schedule (He et al. warm up ResNet-110) (default: %(default)s)")


def add_run_options(parser, defaults):
    g = parser.add_argument_group("run")
    g.add_argument("--device", default="cpu",
                   help="cpu, cuda, cuda:N (needs CuPy and a GPU), or fakegpu (the CPU stand-in "
                        "accelerator used in tests) (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0,
                   help="seeds the initialisation, the data order and the embedded images "
                        "(default: %(default)s)")
    g.add_argument("--out", default=None,
                   help=f"results folder, created if needed (default: {defaults['out']})")
    g.add_argument("--resume", action="store_true",
                   help=f"continue the run whose {CHECKPOINT} is in --out, from its last finished "
                        f"epoch; the other options must match that run's")
    g.add_argument("--overwrite", action="store_true",
                   help=f"start afresh in an --out that already holds a run (its {CHECKPOINT}, "
                        f"metrics and curves are removed first)")
    g.add_argument("--stop-after", type=positive_int, default=None, metavar="EPOCHS",
                   help="stop after this many epochs as if interrupted (the checkpoint stays; "
                        "--resume continues the run)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("--distributed", action="store_true",
                   help="data-parallel training over MPI: start with `mpiexec -n N python -m ...`; "
                        "each rank trains on its share of every batch (--batch-size is the global "
                        "batch) and rank 0 writes the results (see docs/distributed.md)")
    g.add_argument("--sync-bn", action="store_true",
                   help="with --distributed: BatchNorm statistics over the whole global batch "
                        "(SyncBatchNorm) instead of each rank's share")
    return g


# ---- validating options (each failure: one line naming the option) ---------------------------
def validate(args, parser_defaults):
    """Check the options before any work; fills in dataset-dependent defaults."""
    if args.seed < 0:
        fail("--seed", f"must be a non-negative integer, got {args.seed}")
    if getattr(args, "model", "resnet") == "resnet":
        try:
            models.check_depth(args.depth)
        except ValueError as e:
            fail("--depth", str(e))
    names = models.conv_norm_names()
    if args.norm not in names:
        fail("--norm", f"unknown normalizer {args.norm!r}; valid names: {', '.join(names)}")
    check_device(args.device)
    if args.dataset == "embedded":
        if args.data_dir is not None:
            fail("--data-dir", "is only used with --dataset cifar10 or mnist")
        args.image_size = parser_defaults["image_size"] if args.image_size is None else args.image_size
        args.train_size = parser_defaults["train_size"] if args.train_size is None else args.train_size
        args.test_size = parser_defaults["test_size"] if args.test_size is None else args.test_size
        if not 8 <= args.image_size <= MAX_IMAGE_SIZE:
            fail("--image-size", f"must be in 8..{MAX_IMAGE_SIZE}, got {args.image_size}")
        need = (args.train_size + args.test_size) * 3 * args.image_size ** 2 * 4  # float32 RGB
        if need > _physical_memory() // 2:
            fail("--image-size", f"{args.image_size} with --train-size {args.train_size} and "
                                 f"--test-size {args.test_size} needs {need / 2 ** 30:.1f} GiB for the "
                                 f"images alone, more than half of this machine's memory")
    else:
        if args.image_size is not None:
            fail("--image-size", f"only applies to --dataset embedded ({args.dataset} images have a "
                                 f"fixed size)")
        if args.data_dir is None:
            fail("--data-dir", f"is required with --dataset {args.dataset} (a folder with the "
                               f"{args.dataset} files; nothing is downloaded)")
        if not os.path.isdir(args.data_dir):
            fail("--data-dir", f"{args.data_dir!r} is not an existing folder")
    if hasattr(args, "milestones") and args.milestones is not None:
        try:
            args.milestone_epochs = [float(m) for m in args.milestones.split(",") if m.strip()]
        except ValueError:
            fail("--milestones", f"expected comma-separated numbers of epochs, got {args.milestones!r}")
        if not args.milestone_epochs or any(m <= 0 for m in args.milestone_epochs):
            fail("--milestones", f"expected positive numbers of epochs, got {args.milestones!r}")
    if args.stop_after is not None and args.stop_after > args.epochs:
        fail("--stop-after", f"{args.stop_after} is more than --epochs {args.epochs}")


MAX_IMAGE_SIZE = 1024  # the embedded Shapes10 images; larger is surely a typo


def _physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume plenty, the cap still holds
        return 1 << 62


def check_device(device):
    try:
        dev = backend.as_device(device)
    except (ValueError, TypeError) as e:
        fail("--device", str(e))
    if dev.type == "cuda":
        if not backend.cuda_is_available():
            fail("--device", f"{device!r} needs CuPy and an NVIDIA GPU, and none is available here; "
                             f"use --device cpu")
        if dev.index >= backend.cuda_device_count():
            fail("--device", f"{device!r}: only {backend.cuda_device_count()} GPU(s) are visible")
    return dev


def start_run(args, defaults, default_out):
    """Check the options, join the MPI job with --distributed, and create --out (or
    default_out(args)) on rank 0. Returns (communicator or None, log): log prints on rank 0 only."""
    validate(args, defaults)
    comm = setup_distributed(args)
    args.out = args.out or default_out(args)
    if args.main:
        prepare_out(args.out, args.resume, getattr(args, "overwrite", False))
    if comm is not None:
        comm.barrier()  # the folder exists before any rank reads a checkpoint from it
    return comm, (print if args.main else (lambda *a, **k: None))


RESULT_FILES = (CHECKPOINT, "metrics.csv", "metrics.json", "curves.png")


def prepare_out(out, resume, overwrite=False):
    """Create the results folder and prove it is writable (one-line error otherwise). An --out
    that holds a run is continued (--resume), emptied of its results (--overwrite), or refused:
    a fresh run there would replace its checkpoint and metrics and leave its old curves."""
    if resume and overwrite:
        fail("--overwrite", "cannot be combined with --resume (continue the run, or start afresh)")
    has_run = os.path.isfile(os.path.join(out, CHECKPOINT))
    if resume and not has_run:
        fail("--resume", f"no {CHECKPOINT} in {out!r} to resume from")
    if has_run and not resume and not overwrite:
        fail("--out", f"{out!r} already holds a run ({CHECKPOINT}); pass --resume to continue it, "
                      f"--overwrite to replace it, or another --out")
    if overwrite:
        for name in RESULT_FILES:
            try:
                os.unlink(os.path.join(out, name))
            except FileNotFoundError:
                pass
            except OSError as e:
                fail("--overwrite", f"cannot remove {os.path.join(out, name)!r}: {e.strerror or e}")
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".write-test")
        with open(probe, "w") as f:
            f.write("ok")
        os.unlink(probe)
    except OSError as e:
        fail("--out", f"cannot write to {out!r}: {e.strerror or e}")


# ---- distributed (--distributed) ------------------------------------------------------------
def setup_distributed(args):
    """Join the MPI job for --distributed (else: one process). Sets args.world_size, args.rank and
    args.main (rank 0: the one that prints and writes files); returns the communicator or None."""
    args.world_size, args.rank, args.main = 1, 0, True
    if not args.distributed:
        if args.sync_bn:
            fail("--sync-bn", "only applies with --distributed")
        return None
    import tinygrad_bn.distributed as dist
    comm = dist.init()
    args.world_size, args.rank, args.main = comm.world_size, comm.rank, comm.rank == 0
    if comm.world_size > 1:
        # ranks usually share the machine's cores: one normalizer worker thread each, unless
        # OMP_NUM_THREADS says otherwise (torchrun makes the same choice)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.batch_size % comm.world_size:
        fail("--batch-size", f"{args.batch_size} is the global batch and must be divisible by the "
                             f"{comm.world_size} ranks")
    return comm


def wrap_model(args, model, comm):
    """--sync-bn: BatchNorm -> SyncBatchNorm; --distributed: DistributedDataParallel (which
    broadcasts rank 0's parameters and buffers)."""
    if args.sync_bn:
        model = tg.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if comm is not None:
        from tinygrad_bn.distributed import DistributedDataParallel
        model = DistributedDataParallel(model, communicator=comm)
    return model


def bare(model):
    """The model inside a DistributedDataParallel wrapper (checkpoints hold its state)."""
    return getattr(model, "module", model)


# ---- data -----------------------------------------------------------------------------------
def load_data(args):
    """(train set, test set) for the options; one-line errors for unreadable files."""
    if args.dataset == "embedded":
        train = Shapes10(train=True, n=args.train_size, seed=args.seed, image_size=args.image_size)
        test = Shapes10(train=False, n=args.test_size, seed=args.seed, image_size=args.image_size)
        return train, test
    cls = CIFAR10 if args.dataset == "cifar10" else MNIST
    try:
        train, test = cls(args.data_dir, train=True), cls(args.data_dir, train=False)
    except (FileNotFoundError, DatasetFileError, OSError, ValueError) as e:
        fail("--data-dir", str(e))
    return _subset(train, args.train_size), _subset(test, args.test_size)


def _subset(dataset, n):
    if n is None or n >= len(dataset):
        return dataset
    from tinygrad_bn.data import ImageDataset
    sub = ImageDataset(dataset.data[:n], dataset.targets[:n])
    sub.classes = dataset.classes
    return sub


def channel_stats(dataset):
    """Per-channel mean and std of the training images (for Normalize)."""
    data = dataset.data
    return data.mean(axis=(0, 2, 3)), data.std(axis=(0, 2, 3)) + 1e-6


def make_loaders(args, train, test, comm=None):
    mean, std = channel_stats(train)
    normalize = transforms.Normalize(mean, std)
    augment = args.augment
    if augment == "auto":
        augment = "crop-flip" if args.dataset == "cifar10" else "none"
    if augment == "crop-flip":
        side = train.data.shape[-1]
        train_tf = transforms.Compose([transforms.RandomCrop(side, padding=max(1, side // 8)),
                                       transforms.RandomHorizontalFlip(), normalize])
    else:
        train_tf = normalize
    batch = min(args.batch_size, len(train))
    if comm is not None and comm.world_size > 1:
        # each rank: a disjoint share of every epoch's permutation, batch/ranks at a time; the
        # ranks' k-th batches together are the one-process k-th batch
        from tinygrad_bn.distributed import DistributedSampler
        sampler = DistributedSampler(train, comm.world_size, comm.rank, shuffle=True, seed=args.seed)
        train_loader = DataLoader(train, batch_size=max(1, batch // comm.world_size), sampler=sampler,
                                  drop_last=True, seed=args.seed, device=args.device,
                                  transform=train_tf)
    else:
        train_loader = DataLoader(train, batch_size=batch, shuffle=True, drop_last=True,
                                  seed=args.seed, device=args.device, transform=train_tf)
    test_loader = DataLoader(test, batch_size=max(256, args.batch_size), shuffle=False,
                             seed=args.seed, device=args.device, transform=normalize)
    return train_loader, test_loader


def data_shape(train):
    """(in_channels, image_size, num_classes)."""
    _, c, h, _ = train.data.shape
    return c, h, max(len(train.classes), int(train.targets.max()) + 1)


# ---- optimizers and schedules ---------------------------------------------------------------
def is_norm_or_bias(module, name, param):
    """A parameter that --no-wd-norm-bias exempts from weight decay: any parameter of a
    normalization layer (a class of tinygrad_bn.norms: BatchNorm's weight, FRN's tau), a bias, or
    any 0-d/1-d parameter (the usual rule for scales and offsets)."""
    return type(module).__module__.startswith("tinygrad_bn.norms.") or name == "bias" or param.ndim <= 1


def weight_decay_groups(args, model):
    """The model's parameters as optimizer parameter groups: one group with --weight-decay, and
    with --no-wd-norm-bias a second with weight_decay=0 for normalization parameters and biases."""
    if not getattr(args, "no_wd_norm_bias", False):
        return list(model.parameters())
    decay, no_decay, seen = [], [], set()
    for module in bare(model).modules():
        for name, p in module._parameters.items():
            if p is None or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if is_norm_or_bias(module, name, p) else decay).append(p)
    groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def make_optimizer(args, params):
    """The optimizer of --optimizer; `params` is a model (then --no-wd-norm-bias applies) or an
    iterable of parameters or parameter groups."""
    if isinstance(params, tg.nn.Module):
        params = weight_decay_groups(args, params)
    name = getattr(args, "optimizer", "sgd")
    if name == "sgd":
        return tg.optim.SGD(params, lr=args.lr, momentum=args.momentum,
                            weight_decay=args.weight_decay,
                            nesterov=getattr(args, "nesterov", False) and args.momentum > 0)
    if name == "adam":
        return tg.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
    return tg.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)


def make_scheduler(args, optimizer, steps_per_epoch):
    """A scheduler stepped after every optimizer step; epochs in the options become steps."""
    from tinygrad_bn.optim import lr_scheduler as S
    total = args.epochs * steps_per_epoch
    warmup = min(int(round(args.warmup_epochs * steps_per_epoch)), max(total - 1, 0))
    rest = max(total - warmup, 1)
    if args.schedule == "cosine":
        main = S.CosineAnnealingLR(optimizer, T_max=rest)
    elif args.schedule == "step":
        size = args.step_size if args.step_size is not None else max(args.epochs / 3, 1e-9)
        main = S.StepLR(optimizer, step_size=max(1, int(round(size * steps_per_epoch))), gamma=args.gamma)
    elif args.schedule == "multistep":
        epochs = getattr(args, "milestone_epochs", None) or [0.5 * args.epochs, 0.75 * args.epochs]
        steps = sorted({max(1, int(round(m * steps_per_epoch)) - warmup) for m in epochs})
        main = S.MultiStepLR(optimizer, milestones=steps, gamma=args.gamma)
    else:
        main = S.ExponentialLR(optimizer, gamma=1.0)
    if warmup == 0:
        return main
    ramp = S.LinearLR(optimizer, start_factor=0.1, end_factor=1.0, total_iters=warmup)
    return S.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


# ---- training and evaluation ----------------------------------------------------------------
def progress(iterable, total, desc, disable):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional: plain iteration
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=True, disable=disable, dynamic_ncols=True,
                unit="step", file=sys.stderr)


def train_epoch(model, loader, optimizer, scheduler, desc, disable_progress):
    """One pass over loader; returns dict(loss, acc, lr, time_s, steps, images, step_losses)."""
    model.train()
    total_loss, correct, seen, step_losses = 0.0, 0, 0, []
    lr = optimizer.param_groups[0]["lr"]
    bar = progress(loader, len(loader), desc, disable_progress)
    comm = getattr(model, "comm", None)  # DistributedDataParallel's
    if comm is not None and comm.world_size == 1:
        comm = None
    start = time.perf_counter()
    for x, y in bar:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        if hasattr(model, "sync_gradients"):  # DistributedDataParallel: average over the ranks
            model.sync_gradients()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        value = float(loss.item())
        n = int(y.shape[0])
        hits = int((logits.argmax(1) == y).sum().item())
        if comm is not None:  # the global batch's loss and hits, the same on every rank
            value_n, hits, n = comm.all_reduce(np.array([value * n, hits, n], dtype=np.float64))
            value, hits, n = float(value_n / n), int(hits), int(n)
        if not math.isfinite(value):
            raise FloatingPointError(f"{desc}: the training loss became {value} (lower --lr?)")
        step_losses.append(value)
        total_loss += value * n
        correct += hits
        seen += n
        if hasattr(bar, "set_postfix"):
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}",
                            img_s=f"{seen / max(elapsed, 1e-9):.0f}", refresh=False)
    elapsed = time.perf_counter() - start
    steps = len(step_losses)
    return {"loss": total_loss / max(seen, 1), "acc": correct / max(seen, 1), "lr": lr,
            "time_s": elapsed, "steps": steps, "images": seen,
            "step_ms": 1000 * elapsed / max(steps, 1), "images_per_s": seen / max(elapsed, 1e-9),
            "step_losses": step_losses}


def evaluate(model, loader):
    """(mean loss, accuracy) over loader in eval mode, without recording a graph."""
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    with tg.no_grad():
        for x, y in loader:
            logits = model(x)
            n = int(y.shape[0])
            total_loss += float(F.cross_entropy(logits, y).item()) * n
            correct += int((logits.argmax(1) == y).sum().item())
            seen += n
    model.train()
    return total_loss / max(seen, 1), correct / max(seen, 1)


class Run:
    """Train named variants side by side with per-epoch checkpoints; see the module docstring.

    variants: {name: (model, optimizer, scheduler)}; config: the options that determine the
    trajectory (a resumed run must match them)."""

    def __init__(self, variants, train_loader, test_loader, args, config):
        self.variants, self.args, self.config = variants, args, config
        self.train_loader, self.test_loader = train_loader, test_loader
        self.rows, self.step_losses, self.start_epoch = [], {name: [] for name in variants}, 0
        self.checkpoint_path = os.path.join(args.out, CHECKPOINT)
        if not _PROVENANCE:  # recorded before training starts, once per process
            _PROVENANCE.append(provenance())

    # -- checkpoints --
    def save(self, epoch):
        state = {"format": CHECKPOINT_FORMAT, "config": self.config, "epoch": epoch,
                 "rng": backend.get_rng_state(), "rows": self.rows, "step_losses": self.step_losses,
                 "variants": {name: {"model": dict(bare(m).state_dict()), "optimizer": o.state_dict(),
                                     "scheduler": s.state_dict() if s is not None else None}
                              for name, (m, o, s) in self.variants.items()}}
        tg.save(state, self.checkpoint_path)

    def resume(self):
        try:
            state = tg.load(self.checkpoint_path, map_location=self.args.device)
        except (ValueError, OSError) as e:
            fail("--resume", f"cannot read {self.checkpoint_path}: {e}")
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            fail("--resume", f"{self.checkpoint_path} is not a checkpoint of these examples")
        try:
            return self._restore(state)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            fail("--resume", f"{self.checkpoint_path} is damaged: {type(e).__name__}: {e}")

    def _restore(self, state):
        saved = state["config"]
        for key, value in self.config.items():
            if saved.get(key) != value:
                option = "--" + key.replace("_", "-")
                fail("--resume", f"the checkpoint in {self.args.out!r} was made with {option} "
                                 f"{saved.get(key)!r}, not {value!r}; use the same options or "
                                 f"another --out")
        for name, (model, optimizer, scheduler) in self.variants.items():
            v = state["variants"][name]
            bare(model).load_state_dict(v["model"])
            optimizer.load_state_dict(v["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(v["scheduler"])
        backend.set_rng_state(state["rng"])
        self.rows = list(state["rows"])
        self.step_losses = {k: list(v) for k, v in state["step_losses"].items()}
        self.start_epoch = int(state["epoch"])
        return self.start_epoch

    # -- the loop --
    def train(self, log=print, on_epoch=None):
        """Run the remaining epochs; on_epoch(epoch) after each one's checkpoint. Returns True when
        all --epochs are done, False after --stop-after. Ctrl-C: one line, exit status 130."""
        try:
            return self._train(log, on_epoch)
        except KeyboardInterrupt:
            done = self.rows[-1]["epoch"] if self.rows else 0
            sys.stderr.write(f"\ninterrupted; the checkpoint after epoch {done} is in "
                             f"{self.args.out!r}: continue with the same options and --resume\n")
            raise SystemExit(130)
        except FloatingPointError as e:
            sys.stderr.write(f"{_PROG[0]}: error: {e}\n")
            raise SystemExit(1)

    def _train(self, log, on_epoch):
        args = self.args
        stop = args.epochs if args.stop_after is None else min(args.epochs, args.stop_after)
        for epoch in range(self.start_epoch, stop):
            for name, (model, optimizer, scheduler) in self.variants.items():
                self.train_loader.set_epoch(epoch)
                desc = f"epoch {epoch + 1}/{args.epochs} {name}"
                stats = train_epoch(model, self.train_loader, optimizer, scheduler, desc,
                                    args.no_progress or not getattr(args, "main", True))
                if hasattr(model, "sync_buffers"):  # every rank evaluates with rank 0's statistics
                    model.sync_buffers()
                test_loss, test_acc = evaluate(model, self.test_loader)
                self.step_losses[name].extend(stats.pop("step_losses"))
                row = {"epoch": epoch + 1, "variant": name, "lr": stats["lr"],
                       "train_loss": stats["loss"], "train_acc": stats["acc"],
                       "test_loss": test_loss, "test_acc": test_acc, "epoch_time_s": stats["time_s"],
                       "step_time_ms": stats["step_ms"], "images_per_s": stats["images_per_s"],
                       "steps": stats["steps"], "images": stats["images"]}
                self.rows.append(row)
                log(f"epoch {epoch + 1}/{args.epochs} {name:>5}: train loss {row['train_loss']:.4f} "
                    f"acc {row['train_acc']:.4f} | test loss {test_loss:.4f} acc {test_acc:.4f} | "
                    f"{row['step_time_ms']:.0f} ms/step, {row['images_per_s']:.0f} img/s")
            if getattr(args, "main", True):  # rank 0 writes; the others hold the same state
                self.save(epoch + 1)
            if on_epoch is not None:
                on_epoch(epoch + 1)
        return stop == args.epochs  # finished (not stopped early)


# ---- results --------------------------------------------------------------------------------
CSV_FIELDS = ["epoch", "variant", "lr", "train_loss", "train_acc", "test_loss", "test_acc",
              "epoch_time_s", "step_time_ms", "images_per_s", "steps"]


def summary(rows, variants, params):
    """Per variant: final epoch's numbers plus the mean time per step over all epochs."""
    out = {}
    for name in variants:
        mine = [r for r in rows if r["variant"] == name]
        if not mine:
            continue
        last = mine[-1]
        steps = sum(r["steps"] for r in mine)
        time_s = sum(r["epoch_time_s"] for r in mine)
        out[name] = {"params": params[name], "epochs": last["epoch"],
                     "train_loss": last["train_loss"], "train_acc": last["train_acc"],
                     "test_loss": last["test_loss"], "test_acc": last["test_acc"],
                     "best_test_acc": max(r["test_acc"] for r in mine),
                     "step_time_ms": 1000 * time_s / max(steps, 1),
                     "images_per_s": sum(r["images"] for r in mine) / max(time_s, 1e-9),
                     "train_time_s": time_s}
    return out


def format_table(final, labels=None):
    labels = labels or {}
    head = (f"{'variant':<24} {'params':>9} {'train loss':>10} {'train acc':>9} {'test loss':>9} "
            f"{'test acc':>8} {'best acc':>8} {'ms/step':>8} {'img/s':>7}")
    lines = [head, "-" * len(head)]
    for name, s in final.items():
        lines.append(f"{labels.get(name, name):<24} {s['params']:>9,} {s['train_loss']:>10.4f} "
                     f"{s['train_acc']:>9.4f} {s['test_loss']:>9.4f} {s['test_acc']:>8.4f} "
                     f"{s['best_test_acc']:>8.4f} {s['step_time_ms']:>8.1f} {s['images_per_s']:>7.0f}")
    return "\n".join(lines)


def provenance():
    """What produced the numbers: versions, and the git commit of the working tree (with the
    files that differ from it), because results move when the library's arithmetic does."""
    import platform
    import subprocess
    info = {"tinygrad_bn": tg.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS")}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                            text=True, timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "tinygrad_bn", "examples"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout
        info["git_modified"] = [line[3:] for line in dirty.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


_PROVENANCE = []


def write_metrics(out, rows, step_losses, final, config, extra=None):
    with open(os.path.join(out, "metrics.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row[k] for k in CSV_FIELDS})
    doc = {"config": config, "final": final, "epochs": rows, "step_losses": step_losses,
           "provenance": _PROVENANCE[0] if _PROVENANCE else provenance()}
    doc.update(extra or {})
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(doc, f, indent=1)


def plot_curves(path, rows, step_losses, labels, title):
    """Loss and accuracy per epoch (train solid, test dashed; one colour per variant, shared
    axes) and the per-step training loss (running mean over ~1/4 epoch)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = ["tab:blue", "tab:red", "tab:green", "tab:purple"]
    for i, name in enumerate(step_losses):
        mine = [r for r in rows if r["variant"] == name]
        if not mine:
            continue
        c, label = colors[i % len(colors)], labels.get(name, name)
        epochs = [r["epoch"] for r in mine]
        for ax, key in ((axes[0], "loss"), (axes[1], "acc")):
            ax.plot(epochs, [r["train_" + key] for r in mine], "-o", color=c, ms=3, label=f"{label} train")
            ax.plot(epochs, [r["test_" + key] for r in mine], "--s", color=c, ms=3, label=f"{label} test")
        losses = np.asarray(step_losses[name], dtype=np.float64)
        if losses.size:
            per_epoch = max(1, mine[0]["steps"])
            window = max(1, per_epoch // 4)
            smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
            steps = np.arange(window, losses.size + 1) / per_epoch
            axes[2].plot(np.arange(1, losses.size + 1) / per_epoch, losses, color=c, alpha=0.15, lw=0.8)
            axes[2].plot(steps, smooth, color=c, label=f"{label} (mean of {window} steps)")
    axes[0].set(title="cross-entropy loss per epoch", xlabel="epoch", ylabel="loss")
    axes[1].set(title="accuracy per epoch", xlabel="epoch", ylabel="accuracy")
    axes[2].set(title="training loss per step", xlabel="epoch", ylabel="loss")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
