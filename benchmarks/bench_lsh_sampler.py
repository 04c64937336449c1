"""Speed of the LSH sampler: per-query sampling across C, rebuild, training step.

Same table and batch as bench_kernel_sampler (W ~ N(0, 0.1^2) [C, d], b = 0,
d = 128, B = 256, S = 64, h with logits of standard deviation about 1), LSH
tables at fixed K, L and bucket size for every C. Prints, from one process:

1. Sampling (ms per call and us per query) for each C, timed side by side:
   per-example LSH-Embedding (hash h), LSH-Label (hash w_y), the batch-shared
   lsh_candidate_sampler, and TensorFlow's log_uniform_candidate_sampler.
   The target: per-query time flat in C (<= 1.5x from 100k to 10M).
2. Table maintenance at --step_classes (default 1M): full rebuild (refresh()),
   re-insertion of the B (S + 1) rows one step touches (refresh(ids)), and
   the constructor.
3. One SGD step of a linear softmax layer at --step_classes, side by side:
   (a)  tf.nn.sampled_softmax_loss + tf.random.log_uniform_candidate_sampler
        (unique=True), TensorFlow's baseline;
   (b)  the same loss with tfs.random.lsh_candidate_sampler (batch-shared);
   (c)  per-example LSHSampler.sample + tfs.nn.sampled_softmax_loss;
   (c0) per-example uniform draws (a free sampler) + the same loss, so the
        sampler's own share of (c) is visible;
   (c+) (c) plus refresh(ids) of the rows the step touched.

Every timed function is a tf.function, warmed up, then timed in interleaved
rounds (benchmarks.timing.bench); medians are reported.

Run from the repository root:
  python -m benchmarks.bench_lsh_sampler                      # C = 100k, 1M, 10M
  python -m benchmarks.bench_lsh_sampler --num_classes=100000,1000000 --quick
"""
import argparse
import copy
import datetime
import gc
import json
import os
import platform
import statistics
import time

import tensorflow as tf

import tf_sampled as tfs
from benchmarks.timing import (bench, block, fmt_bytes, fmt_c, fmt_ms, fmt_ratio,
                               mem_available_gb, parse_int_list, peak_rss_gb, time_once)
from benchmarks.training_steps import build_functions, make_batch, make_table


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_classes", type=parse_int_list,
                        default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--step_classes", type=int, default=1_000_000,
                        help="C of the maintenance and training-step measurements")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--num_sampled", type=int, default=64)
    parser.add_argument("--num_tables", type=int, default=16)
    parser.add_argument("--num_hashes", type=int, default=12)
    parser.add_argument("--bucket_size", type=int, default=64)
    parser.add_argument("--family", default="simhash")
    parser.add_argument("--reps", type=int, default=None,
                        help="max timed repetitions per function (default 15; --quick: 5)")
    parser.add_argument("--min_reps", type=int, default=3)
    parser.add_argument("--budget_s", type=float, default=10.0)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.reps is None:
        args.reps = 5 if args.quick else 15
    return args


def make_sampler(w, args):
    return tfs.samplers.LSHSampler(w, num_tables=args.num_tables, num_hashes=args.num_hashes,
                                   bucket_size=args.bucket_size, family=args.family, seed=0)


def sampling_functions(sampler, h, labels, num_classes, s):
    labels2 = labels[:, None]
    label_sampler = copy.copy(sampler)  # same state, w_y as the query
    label_sampler.query = "label"

    @tf.function
    def embedding():
        return sampler.sample(h, s, true_classes=labels2).ids

    @tf.function
    def label():
        return label_sampler.sample(h, s, true_classes=labels2).ids

    @tf.function
    def shared():
        return tfs.random.lsh_candidate_sampler(labels2, 1, s, True, num_classes, inputs=h,
                                                sampler=sampler)[0]

    @tf.function
    def logu():
        return tf.random.log_uniform_candidate_sampler(labels2, 1, s, True, num_classes)[0]

    return {"emb": embedding, "label": label, "shared": shared, "logu": logu}


def run_one(num_classes, args, log):
    row = {"C": num_classes}
    d, s = args.dim, args.num_sampled
    log(f"\n=== C = {num_classes:,} (MemAvailable {mem_available_gb():.1f} GB) ===")
    w, b = make_table(num_classes, d, seed=0)
    h, labels = make_batch(num_classes, d, args.batch, seed=1)
    t0 = time.perf_counter()
    sampler = make_sampler(w, args)
    block(sampler.codes)
    row["build_s"] = time.perf_counter() - t0
    mem = sampler.memory_bytes()
    row.update(buckets_bytes=mem["buckets"], codes_bytes=mem["codes"],
               table_bytes=num_classes * d * 4)
    counts = sampler.counts.numpy()
    row["mean_bucket"] = float(counts.mean())
    row["stored_fraction"] = float(counts.sum() / (num_classes * args.num_tables))
    log(f"  constructor {row['build_s']:.1f} s; buckets {fmt_bytes(mem['buckets'])}, codes "
        f"{fmt_bytes(mem['codes'])}; mean bucket {row['mean_bucket']:.1f}, "
        f"{row['stored_fraction']:.1%} of (class, table) pairs stored")

    fns = sampling_functions(sampler, h, labels, num_classes, s)
    if num_classes == args.step_classes:
        # The kernel benchmark's steps (a), (b), (c), (c0), (c+), with this sampler.
        steps, _, refresh_ids, refresh_full, step_ids = build_functions(
            w, b, sampler, h, labels, num_classes, s, with_full=False)
        touched = step_ids(sampler.sample(h, s, true_classes=labels[:, None]))
        row["touched"] = int(touched.shape[0])
        row["touched_unique"] = int(tf.size(tf.unique(touched)[0]))
        time_once(refresh_full)  # traces
        row["refresh_s"] = statistics.median(time_once(refresh_full) for _ in range(3))
        log(f"  refresh() {row['refresh_s']:.2f} s (median of 3)")
        fns.update(steps)
        fns["upd"] = lambda: refresh_ids[0](touched)
    medians, reps = bench(fns, args, log=lambda m: None)
    row.update(medians)
    row["reps"] = reps
    row["peak_rss_gb"] = peak_rss_gb()
    log("  " + ", ".join(f"{k} {fmt_ms(v)} ms (x{reps[k]})" for k, v in medians.items()))
    del fns, sampler, w, b
    gc.collect()
    return row


def report(rows, args):
    us = lambda r, k: 1e3 * r[k] / args.batch  # noqa: E731
    lines = ["Sampling, B = {} queries x S = {} draws per call (median ms per call; "
             "us per query):".format(args.batch, args.num_sampled), "",
             "| C | LSH-Embedding | LSH-Label | shared (drop-in) | TF log-uniform (shared) | "
             "us/query Embedding | us/query Label | constructor s | buckets | codes | "
             "stored (class, table) pairs |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {fmt_c(r['C'])} | {fmt_ms(r['emb'])} | {fmt_ms(r['label'])} | "
            f"{fmt_ms(r['shared'])} | {fmt_ms(r['logu'])} | {us(r, 'emb'):.1f} | "
            f"{us(r, 'label'):.1f} | {r['build_s']:.1f} | {fmt_bytes(r['buckets_bytes'])} | "
            f"{fmt_bytes(r['codes_bytes'])} | {r['stored_fraction']:.1%} |")
    by_c = {r["C"]: r for r in rows}
    lines.append("")
    if 100_000 in by_c and max(by_c) > 100_000:
        top = by_c[max(by_c)]
        for key, label in (("emb", "LSH-Embedding"), ("label", "LSH-Label")):
            g = top[key] / by_c[100_000][key]
            lines.append(f"- per-query sampling {fmt_c(top['C'])} / 100k, {label}: {g:.2f}x "
                         f"(target <= 1.5): {'met' if g <= 1.5 else 'MISSED'}")
    r = by_c.get(args.step_classes)
    if r is not None and "a" in r:
        lines += ["", f"At C = {fmt_c(r['C'])}: full rebuild refresh() {r['refresh_s']:.2f} s; "
                  f"refresh(ids) of one step's {r['touched']} ids ({r['touched_unique']} "
                  f"distinct) {fmt_ms(r['upd'])} ms.", "",
                  "ms per SGD training step (median), side by side:", "",
                  "| (a) TF log-uniform | (b) LSH shared | (c) LSH per-ex | (c0) uniform per-ex "
                  "| (c+) (c)+refresh(ids) | (b)/(a) | (c)/(a) | (c0)/(a) | (c+)/(a) |",
                  "|---|---|---|---|---|---|---|---|---|",
                  f"| {fmt_ms(r['a'])} | {fmt_ms(r['b'])} | {fmt_ms(r['c'])} | "
                  f"{fmt_ms(r['c0'])} | {fmt_ms(r['c+'])} | {fmt_ratio(r['b'] / r['a'])} | "
                  f"{fmt_ratio(r['c'] / r['a'])} | {fmt_ratio(r['c0'] / r['a'])} | "
                  f"{fmt_ratio(r['c+'] / r['a'])} |"]
    lines.append("")
    lines.append("Repetitions: " + "; ".join(
        f"{fmt_c(r['C'])}: " + ", ".join(f"{k} {v}" for k, v in r["reps"].items())
        for r in rows))
    lines.append("Peak RSS (GB, cumulative): " + ", ".join(
        f"{fmt_c(r['C'])} {r['peak_rss_gb']:.1f}" for r in rows))
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    tf.random.set_seed(0)
    log = lambda m: print(m, flush=True)  # noqa: E731
    header = (f"date {datetime.datetime.now().isoformat(timespec='seconds')}, "
              f"nproc {os.cpu_count()}, TF {tf.__version__}, Python {platform.python_version()}; "
              f"d={args.dim} B={args.batch} S={args.num_sampled} family={args.family} "
              f"L={args.num_tables} K={args.num_hashes} bucket_size={args.bucket_size}")
    log(header)
    rows = [run_one(c, args, log) for c in args.num_classes]
    text = report(rows, args)
    log("\n" + header + "\n")
    log(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
