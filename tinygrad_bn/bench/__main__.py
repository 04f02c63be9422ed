"""python -m tinygrad_bn.bench [--quick] [--filter TEXT] [--json PATH] [--device cpu|cuda] [--threads N]

Prints a table of medians and ratios (ours / reference) and writes them as JSON."""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

from tinygrad_bn.bench import core_cases, gpu_cases, nn_cases
from tinygrad_bn.bench.timing import median_time, paired_median_times


def _torch():
    try:
        import torch
        return torch
    except ImportError:
        return None


def machine_description():
    info = {"python": platform.python_version(), "numpy": np.__version__,
            "machine": platform.machine(), "cpus": os.cpu_count(), "platform": platform.platform()}
    torch = _torch()
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    from tinygrad_bn.norms._kernels import worker_threads
    info["normalizer_kernel_threads"] = worker_threads()
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu"] = models[0] if models else "unknown"
    except OSError:
        info["cpu"] = "unknown"
    return info


def run(args):
    torch = _torch()
    rows = []

    def record(group, name, ours, ref, ref_name, unit_scale=1e6, unit="us", paired=False, **timing):
        if args.filter and args.filter not in name:
            return
        if paired:  # heavy cases: alternate ours and the reference (see paired_median_times)
            t_ours, t_ref = paired_median_times(ours, ref, repeat=timing.get("repeat", 9))
        else:
            t_ours = median_time(ours, **timing)
            t_ref = median_time(ref, **timing) if ref is not None else None
        row = {"group": group, "case": name, "ours_s": t_ours, "reference": ref_name,
               "reference_s": t_ref, "ratio": (t_ours / t_ref) if t_ref else None}
        rows.append(row)
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] else "n/a"
        ref_txt = f"{t_ref * unit_scale:10.2f}" if t_ref else "       n/a"
        print(f"{group:10s} {name:34s} {t_ours * unit_scale:10.2f} {ref_txt} {unit:>3s}  {ratio:>7s}  vs {ref_name}",
              flush=True)
        return row

    print(f"{'group':10s} {'case':34s} {'ours':>10s} {'reference':>10s}       ratio")
    if args.device == "cuda":  # the GPU half: ours on CuPy against PyTorch CUDA eager
        rows += gpu_cases.run(record, torch, args.quick)
        return rows
    repeat = 5 if args.quick else 9
    if torch is not None:
        for name, ours, ref in core_cases.tiny_op_cases(torch):
            record("overhead", name, ours, ref, "torch eager", repeat=repeat, min_time=0.02 if args.quick else 0.1)
    else:
        print("overhead: PyTorch is not installed; per-op overhead cases skipped (pip install torch==2.13.0)")
    n = 1_000_000 if args.quick else 10_000_000
    for name, ours, ref in core_cases.large_cases(n):
        record("large", name, ours, ref, "bare numpy", unit_scale=1e3, unit="ms", repeat=repeat, number=3)
    if torch is None:
        print("layers: PyTorch is not installed; the side-by-side layer cases are skipped")
        return rows
    heavy = {"repeat": 3 if args.quick else 9, "paired": True}
    for name, ours, ref in nn_cases.matmul_cases(torch, 256 if args.quick else 512):
        record("matmul", name, ours, ref, "torch", unit_scale=1e3, unit="ms", **heavy)
    for name, ours, ref in nn_cases.conv_cases(torch, args.quick):
        record("conv", name, ours, ref, "torch", unit_scale=1e3, unit="ms", **heavy)
    for name, ours, ref in nn_cases.norm_cases(torch, args.quick):
        record("norm", name, ours, ref, "torch", unit_scale=1e3, unit="ms", **heavy)
    if not args.quick:
        steps = nn_cases.resnet_step_cases(torch)
        if steps:  # depth scaling: ResNet-56 has 2.8x the convolutions at the same shapes
            steps += nn_cases.resnet_step_cases(torch, depth=56)
        if not steps:
            print("resnet: examples.models is not importable; run from the repository root")
        for name, ours, ref in steps:
            record("resnet", name, ours, ref, "torch", unit_scale=1e3, unit="ms", repeat=7, paired=True)
        if steps and (not args.filter or args.filter in "peak memory"):
            peak = nn_cases.peak_memory()
            if peak is None:
                print("memory: could not measure the peak (subprocess failed)")
            else:
                ours_mib, torch_mib = peak
                rows.append({"group": "memory", "case": "ResNet-20 train step peak RSS increase",
                             "ours_s": None, "ours_mib": ours_mib, "reference": "torch",
                             "reference_mib": torch_mib, "ratio": ours_mib / torch_mib if torch_mib else None})
                print(f"{'memory':10s} {'ResNet-20 step peak RSS increase':34s} {ours_mib:10.1f} "
                      f"{torch_mib:10.1f} MiB  {ours_mib / torch_mib:6.2f}x  vs torch")
    return rows


class _OneLineParser(argparse.ArgumentParser):
    """Errors as one line on stderr (no usage block), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())}\n")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _check_json_path(parser, path):
    """Before the (long) run: the results must be writable where --json says."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        parser.error(f"--json: the folder {folder!r} does not exist")
    if os.path.isdir(path):
        parser.error(f"--json: {path!r} is a folder; give a file name")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        parser.error(f"--json: cannot write {path!r} (permission denied)")


def main(argv=None):
    parser = _OneLineParser(prog="python -m tinygrad_bn.bench",
                            description="tinygrad_bn benchmarks, side by side with PyTorch/NumPy")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (< 1 minute)")
    parser.add_argument("--filter", default="", help="only cases whose name contains this text")
    parser.add_argument("--json", default="bench_results.json", help="where to write the results")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device to benchmark")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="threads for PyTorch and for our normalizer kernels (default: every core; "
                             "NumPy's BLAS reads OPENBLAS_NUM_THREADS at start-up instead)")
    args = parser.parse_args(argv)
    _check_json_path(parser, args.json)
    torch = _torch()
    if args.device == "cuda":
        from tinygrad_bn import cuda
        if not cuda.is_available():
            sys.exit("bench --device cuda: CuPy with a CUDA GPU is needed (pip install -e \".[cuda]\")")
        if torch is None or not torch.cuda.is_available():
            sys.exit("bench --device cuda: PyTorch with CUDA is needed for the side-by-side cases")
    threads = args.threads or os.cpu_count() or 1
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)  # our normalizer kernels' worker threads
    if torch is not None:
        # both frameworks get the same cores: NumPy's BLAS and our kernels use them all by default
        torch.set_num_threads(threads)
    start = time.time()
    rows = run(args)
    result = {"machine": machine_description(), "quick": args.quick, "device": args.device,
              "device_description": gpu_cases.device_description(args.device),
              "threads": threads,
              "seconds": round(time.time() - start, 1), "cases": rows}
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.json} ({len(rows)} cases, {result['seconds']} s)")


if __name__ == "__main__":
    main()
