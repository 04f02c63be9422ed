"""Load each hostile file in this (child) process and report, as JSON on stdout, what was raised
and the peak memory the load allocated (tracemalloc: NumPy's buffers included, touched or not).

    python -m tests.data.hostile.probe CATALOGUE_DIR NAME...

It runs under an address-space limit (2 GiB beyond what its imports mapped), so a regression
fails fast with MemoryError instead of taking the machine's memory."""
import json
import os
import sys
import tracemalloc

from tests.data.hostile.build import CASES


def load(loader, path):
    if loader == "cifar10":
        from tinygrad_bn.data import CIFAR10
        return CIFAR10(path, train=True, format="python")
    if loader == "mnist":
        from tinygrad_bn.data import MNIST
        return MNIST(path, train=True)
    import tinygrad_bn as tg
    return tg.load(path)


def file_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


ADDRESS_SPACE_HEADROOM = 2 << 30  # beyond what the imports mapped (CUDA maps a lot; be relative)


def _limit_address_space(headroom):
    """From here on, allocations past headroom fail with MemoryError (Linux; elsewhere no limit)."""
    try:
        import resource
        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (ImportError, OSError, ValueError):
        return
    resource.setrlimit(resource.RLIMIT_AS, (mapped + headroom, resource.getrlimit(resource.RLIMIT_AS)[1]))


def main(folder, names):
    import tinygrad_bn.data  # noqa: F401  (imports outside the measurement)
    import tinygrad_bn.checkpoint  # noqa: F401
    _limit_address_space(ADDRESS_SPACE_HEADROOM)
    report = {}
    tracemalloc.start()
    for name in names:
        loader = CASES[name][0]
        path = os.path.join(folder, name)
        if loader == "checkpoint":
            path = os.path.join(path, "checkpoint.npz")
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        try:
            load(loader, path)
            error = None
        except BaseException as e:  # MemoryError included: that is a failure to report
            error = (type(e).__name__, str(e))
        peak = tracemalloc.get_traced_memory()[1] - base
        report[name] = {"error": error, "peak": peak, "size": file_bytes(path)}
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
