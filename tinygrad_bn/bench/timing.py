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


def paired_median_times(fn_a, fn_b, repeat=9, warmup=1):
    """Median seconds per call of fn_a and fn_b, measured alternately (a, b, a, b, ...).

    Heavy cases interleave: each framework then runs in the same machine and heap state as the
    other (one run's freed memory decides whether the next one page-faults), instead of all of
    one framework's repetitions and then all of the other's."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    times_a, times_b = [], []
    for _ in range(repeat):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times_a), statistics.median(times_b)
