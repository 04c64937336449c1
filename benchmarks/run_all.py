"""Runs the speed benchmarks of every issue in a quick mode and prints one table.

  python -m benchmarks.run_all                 # all, about 15 minutes on 2 cores
  python -m benchmarks.run_all --only=bench_fused_loss,wordnet_step_time
  python -m benchmarks.run_all --full          # each benchmark's own defaults (hours)

Each benchmark runs as `python -m benchmarks.NAME ARGS` in its own process (a
fresh TensorFlow, as when run alone); its full output goes to
--log_dir/NAME.log. The table gives, per benchmark, the command, its time, and
its headline: the rows of the first table it prints, the lines where it
checks a target ("...: met" / "MISSED") and the timings it prints as JSON.
Quick mode means fewer classes and repetitions: the ratios are indicative,
benchmarks/RESULTS.md has the careful runs.
"""

import argparse
import datetime
import importlib.util
import os
import platform
import re
import subprocess
import sys
import time

# (module, quick arguments). New benchmarks join here; one whose module is not in
# this checkout is listed as missing. bench_cuda needs a GPU: run it alone.
BENCHMARKS = (
    ("bench_kernel_sampler", "--quick --num_classes=10000,100000 --max_full_classes=100000 "
                             "--budget_s=3 --reps=3 --leaf_sizes=32,128"),
    ("bench_fused_loss", "--num_classes=100000 --num_sampled=16,64 --reps=5 --min_reps=3 "
                         "--budget_s=3"),
    ("bench_keras_layer", "--parts=optimizers,fit --num_classes=100000 --rounds=2 --steps=3 "
                          "--reps=5 --budget_s=3"),
    ("bench_lsh_sampler", "--quick --num_classes=100000,1000000 --step_classes=100000 "
                          "--budget_s=3"),
    ("wordnet_step_time", "--objectives=log_uniform,kernel,kernel_unfused --rounds=3 "
                          "--round_steps=10"),
    ("bench_adversarial", "--fit_sizes=62500x12500 --classes=10000,100000"),
    ("bench_distribute", "--num_classes=100000 --steps=5 --dense_reps=1"),
    ("bench_parameter_server", "--classes=100000 --cluster_classes=100000 --steps=5"),
    ("adversarial_quality", "--num_classes=20000 --num_train=60000 --num_val=500 "
                            "--time_budget_s=15 --eval_growth=3"),
)
_TARGET_LINE = re.compile(r"^\s*-\s.*\b(met|MISSED)\b")
_TABLE_ROW = re.compile(r"^\|(.*)\|\s*$")
_RULE = re.compile(r"^[|\s:-]+$")  # a table's header rule


def headline(output):
    """A benchmark's main figures: the rows of its first table, its target checks,
    and the `"ms": {...}` timings of a benchmark that prints JSON."""
    lines = output.splitlines()
    table = []
    for ln in lines:
        m = _TABLE_ROW.match(ln)
        if m and not _RULE.match(ln):
            table.append(" ".join(c.strip() for c in m.group(1).split("|")))
        elif not m and table:
            break
    targets = [ln.strip().lstrip("- ") for ln in lines if _TARGET_LINE.match(ln)]
    timings = [", ".join(f"{name} {float(ms):.1f} ms" for name, ms in
                         re.findall(r'"([^"]+)": ([0-9.]+)', block))
               for block in re.findall(r'"ms": \{([^}]*)\}', output)]
    return table + targets + timings


def run_benchmark(name, args, log_dir, timeout_s):
    """(seconds, exit status, headline lines) of `python -m benchmarks.NAME ARGS`."""
    if importlib.util.find_spec(f"benchmarks.{name}") is None:
        return 0.0, "missing", []
    cmd = [sys.executable, "-m", f"benchmarks.{name}"] + args.split()
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
        output, status = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        output, status = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (
            e.stdout or ""), "timeout"
    with open(os.path.join(log_dir, f"{name}.log"), "w") as f:
        f.write(output)
    return time.perf_counter() - start, status, headline(output)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--only", default=None, help="comma-separated benchmark names")
    parser.add_argument("--full", action="store_true", help="each benchmark's own defaults")
    parser.add_argument("--log_dir", default="/tmp/tf_sampled_benchmarks")
    parser.add_argument("--timeout_s", type=float, default=1800,
                        help="per benchmark")
    args = parser.parse_args(argv)
    chosen = [b for b in BENCHMARKS if args.only is None or b[0] in args.only.split(",")]
    if args.only and len(chosen) != len(args.only.split(",")):
        parser.error(f"--only: choose from {', '.join(b[0] for b in BENCHMARKS)}")
    os.makedirs(args.log_dir, exist_ok=True)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top  (only for its version)
    print(f"date {datetime.date.today().isoformat()}, nproc {os.cpu_count()}, TF "
          f"{tf.__version__}, Python {platform.python_version()}, "
          f"{'full' if args.full else 'quick'} mode; logs in {args.log_dir}", flush=True)
    rows = []
    for name, quick_args in chosen:
        bench_args = "" if args.full else quick_args
        print(f"running python -m benchmarks.{name} {bench_args}", flush=True)
        seconds, status, lines = run_benchmark(name, bench_args, args.log_dir,
                                               args.timeout_s)
        rows.append((name, bench_args, seconds, status, lines))
    print("\n| benchmark | arguments | s | exit | headline |")
    print("|---|---|---|---|---|")
    for name, bench_args, seconds, status, lines in rows:
        print(f"| {name} | `{bench_args}` | {seconds:.0f} | {status} | "
              f"{'<br>'.join(lines) or '(see log)'} |")
    return 0 if all(r[3] in (0, "missing") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
