"""Timing helpers: medians of repeated runs, so a noisy shared machine still gives usable ratios."""
import statistics
import time


def median_time(fn, repeat=7, number=None, min_time=0.05, warmup=1, sync=None):
    """Median seconds per call of fn(). `number` calls per repetition (auto-chosen if None)."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    if number is None:  # enough calls that one repetition takes at least min_time
        number, elapsed = 1, 0.0
        while True:
            start = time.perf_counter()
            for _ in range(number):
                fn()
            if sync:
                sync()
            elapsed = time.perf_counter() - start
            if elapsed >= min_time or number >= 1_000_000:
                break
            number *= 2 if elapsed == 0 else max(2, min(10, int(min_time / elapsed) + 1))
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        if sync:
            sync()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


def paired_median_times(fn_a, fn_b, repeat=9, block=3):
    """Median seconds per call of fn_a and fn_b, measured in alternating turns (a, b, a, b, ...).

    Heavy cases interleave, so both frameworks run under the same machine state (on a shared
    machine it drifts). Each turn starts with one untimed call and then times `block` calls:
    right after a switch, the other framework's state is still around - PyTorch's idle OpenMP
    threads keep spinning on the cores for a while, and the heap holds the other framework's
    freed memory - and timing that first call would charge one framework for the other's
    leftovers. About `repeat` calls of each are timed."""
    rounds = max(1, -(-repeat // block))
    times_a, times_b = [], []
    for _ in range(rounds):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            fn()
            for _ in range(block):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
    return statistics.median(times_a), statistics.median(times_b)
