"""How the benchmarks time, measure memory and print their numbers.

Every timed function is a zero-argument callable (usually a tf.function),
warmed up once, then timed in interleaved rounds (all variants take turns,
so machine noise hits them alike); the median is reported. Slow functions
get fewer repetitions (`args.budget_s` per function, at least
`args.min_reps`, at most `args.reps`).
"""
import math
import resource
import statistics
import time

import tensorflow as tf


def parse_int_list(text):
    """"10000,1e6" -> [10000, 1000000] (an argparse type)."""
    return [int(float(x)) for x in text.split(",") if x.strip()]


# ----------------------------------------------------------------------------
# Timing.


def block(result):
    """Fetches every output to the host (forces completion)."""
    for t in tf.nest.flatten(result):
        if hasattr(t, "numpy"):
            t.numpy()


def timed(fn):
    """Seconds of one call of fn, its outputs fetched."""
    start = time.perf_counter()
    block(fn())
    return time.perf_counter() - start


def bench(fns, args, log=print):
    """Median ms of each zero-argument function; interleaved rounds.

    Args:
      fns: {name: zero-argument function}.
      args: with reps (most timed calls), min_reps (fewest) and budget_s
        (seconds per function).
      log: called with a line per warm-up.

    Returns ({name: median ms}, {name: repetitions}).
    """
    for name, fn in fns.items():  # warm-up (traces)
        t0 = time.perf_counter()
        block(fn())
        log(f"    warm-up {name}: {time.perf_counter() - t0:.2f} s")
    times = {name: [] for name in fns}
    reps = {}
    for name, fn in fns.items():  # first timed round sets each repetition count
        times[name].append(timed(fn))
        reps[name] = max(args.min_reps,
                         min(args.reps, int(args.budget_s / max(times[name][0], 1e-6))))
    for _ in range(1, max(reps.values())):
        for name, fn in fns.items():
            if len(times[name]) < reps[name]:
                times[name].append(timed(fn))
    return ({name: 1e3 * statistics.median(ts) for name, ts in times.items()},
            {name: len(ts) for name, ts in times.items()})


def time_once(fn):
    """Seconds of one call (for work too slow to repeat)."""
    return timed(fn)


# ----------------------------------------------------------------------------
# Memory.


def mem_available_gb():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ----------------------------------------------------------------------------
# Formatting.


def fmt_ms(x):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fmt_c(c):
    for unit, div in (("M", 1_000_000), ("k", 1_000)):
        if c >= div and c % div == 0:
            return f"{c // div}{unit}"
    return str(c)


def fmt_bytes(n):
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}" if n < 10 * div else f"{n / div:.1f} {unit}"
    return f"{n} B"


def fmt_ratio(x):
    return "-" if x is None else (f"{x:.0f}" if x >= 100 else f"{x:.2f}" if x < 10 else f"{x:.1f}")
