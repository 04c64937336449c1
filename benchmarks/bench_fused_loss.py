"""Speed of per-example sampled softmax steps: the fused loss op against TensorFlow.

One SGD step of a linear softmax layer (logits = h W^T + b) at C = 1M,
d = 128, B = 256, for S = 16 and 64, timed side by side in one process:

  (a) tf.nn.sampled_softmax_loss + tf.random.log_uniform_candidate_sampler
      (batch-shared, unique): TensorFlow's baseline;
  (f) per-example uniform draws (free sampler) + tfs.nn.sampled_softmax_loss
      composed of TensorFlow ops (fused=False, the reference);
  (g) the same draws + the fused op (the default);
  (h) per-example KernelSampler draws + the fused op + sampler.refresh(ids)
      of the rows the step touched (what a training loop that keeps the tree
      fresh runs).

Each is timed twice: applying its sparse gradients with Variable.scatter_sub
(TensorFlow's single-threaded ResourceScatterSub, what Keras' SGD runs) and
with tf_sampled's multi-threaded SparseApplySgd op (what
`tfs.optimizers.SparseSGD` runs), suffix "+op".

Also the parts of (h) timed alone: the sample op, the fused loss step with
fixed candidates, refresh(ids); k = mean distinct leaves per query; and the
machine's read bandwidth (a reduce_sum over a table-sized tensor), to turn
bytes moved per step into a time bound.

Every function is a tf.function, warmed up, then timed in interleaved rounds
(median). Run from the repository root (about 5 minutes):

  python -m benchmarks.bench_fused_loss
  python -m benchmarks.bench_fused_loss --num_classes=100000 --num_sampled=16
"""
import argparse
import datetime
import math
import os
import platform

import numpy as np
import tensorflow as tf

import tf_sampled as tfs
from benchmarks.timing import bench, fmt_c, fmt_ms, fmt_ratio, mem_available_gb, parse_int_list
from benchmarks.training_steps import apply_sgd, make_batch, make_table, mean_distinct_leaves

TARGETS = {16: 2.0, 64: 4.0}  # (g) / (a) at most


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_classes", type=int, default=1_000_000)
    parser.add_argument("--num_sampled", type=parse_int_list, default=[16, 64])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--num_features", type=int, default=128)
    parser.add_argument("--leaf_size", type=int,
                        default=tfs.samplers.kernel.DEFAULT_LEAF_SIZE)
    parser.add_argument("--reps", type=int, default=25)
    parser.add_argument("--min_reps", type=int, default=5)
    parser.add_argument("--budget_s", type=float, default=15.0)
    return parser.parse_args(argv)


def read_bandwidth_gbs(num_bytes, args):
    """GB/s of a multi-threaded reduce_sum over a num_bytes float32 tensor."""
    big = tf.random.stateless_uniform([num_bytes // 4], seed=[0, 9])
    fn = tf.function(lambda: tf.reduce_sum(big))
    ms, _ = bench({"read": fn}, args, log=lambda m: None)
    return num_bytes / (ms["read"] * 1e-3) / 1e9


def step_functions(w, b, sampler, h, labels, num_classes, num_sampled):
    """The timed step functions of one S: each update method's, then the parts."""
    steps = {}
    for suffix, use_op in (("", False), ("+op", True)):
        for name, fn in update_step_functions(w, b, sampler, h, labels, num_classes,
                                              num_sampled, use_op).items():
            steps[name + suffix] = fn
    parts, fixed = part_functions(w, b, sampler, h, labels, num_sampled)
    steps.update(parts)
    return steps, fixed


def _train_step(w, b, labels2, h, cands, fused, use_op):
    variables = (w, b)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tfs.nn.sampled_softmax_loss(w, b, labels2, h, cands,
                                                          fused=fused))
    apply_sgd(variables, tape.gradient(loss, variables), use_op)
    return loss


def update_step_functions(w, b, sampler, h, labels, num_classes, num_sampled, use_op):
    """Steps (a), (f), (g), (h), applying their gradients by scatter_sub or the op."""
    labels2 = labels[:, None]
    variables = (w, b)
    batch = h.shape[0]

    def uniform_candidates():
        ids = tf.random.uniform([batch, num_sampled], 0, num_classes, tf.int64)
        log_q = tf.fill([batch, num_sampled], -math.log(num_classes))
        return tfs.samplers.SampledCandidates(ids, log_q, tf.fill([batch, 1], log_q[0, 0]))

    def tfs_step(cands, fused):
        return _train_step(w, b, labels2, h, cands, fused, use_op)

    @tf.function
    def step_a():
        sampled = tf.random.log_uniform_candidate_sampler(labels2, 1, num_sampled, True,
                                                          num_classes)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sampled_softmax_loss(
                weights=w, biases=b, labels=labels2, inputs=h, num_sampled=num_sampled,
                num_classes=num_classes, sampled_values=sampled))
        apply_sgd(variables, tape.gradient(loss, variables), use_op)
        return loss

    @tf.function
    def step_f():
        return tfs_step(uniform_candidates(), fused=False)

    @tf.function
    def step_g():
        return tfs_step(uniform_candidates(), fused=True)

    @tf.function
    def step_h():
        cands = sampler.sample(h, num_sampled, true_classes=labels2)
        loss = tfs_step(cands, fused=True)
        sampler.refresh(tf.concat([labels, tf.reshape(cands.ids, [-1])], 0))
        return loss

    return {"a": step_a, "f": step_f, "g": step_g, "h": step_h}


def part_functions(w, b, sampler, h, labels, num_sampled):
    """The parts of (h) timed alone (the loss step with the op's update)."""
    labels2 = labels[:, None]
    fixed = sampler.sample(h, num_sampled, true_classes=labels2)
    fixed_ids = tf.concat([labels, tf.reshape(fixed.ids, [-1])], 0)

    @tf.function
    def part_sample():
        return sampler.sample(h, num_sampled, true_classes=labels2).ids

    @tf.function
    def part_loss():
        return _train_step(w, b, labels2, h, fixed, True, True)

    @tf.function
    def part_refresh():
        sampler.refresh(fixed_ids)
        return tf.constant(0)

    return {"h:sample": part_sample, "h:loss": part_loss, "h:refresh": part_refresh}, fixed


def main(argv=None):
    args = parse_args(argv)
    log = lambda m: print(m, flush=True)  # noqa: E731
    c, d, batch = args.num_classes, args.dim, args.batch
    header = (f"date {datetime.datetime.now().isoformat(timespec='seconds')}, "
              f"nproc {os.cpu_count()}, TF {tf.__version__}, Python "
              f"{platform.python_version()}, MemAvailable {mem_available_gb():.1f} GB; "
              f"C={fmt_c(c)} d={d} B={batch} F={args.num_features} "
              f"leaf_size={args.leaf_size}")
    log(header)
    w, b = make_table(c, d, seed=0)
    h, labels = make_batch(c, d, batch, seed=1)
    sampler = tfs.samplers.KernelSampler(
        w, feature_map=tfs.features.PositiveRandom(args.num_features, seed=0),
        leaf_size=args.leaf_size, biases=b)
    bandwidth = read_bandwidth_gbs(c * d * 4, args)
    log(f"read bandwidth (reduce_sum over {c * d * 4 / 1e9:.2f} GB): {bandwidth:.1f} GB/s")

    rows = []
    for s in args.num_sampled:
        log(f"\n=== S = {s} ===")
        steps, fixed = step_functions(w, b, sampler, h, labels, c, s)
        medians, reps = bench(steps, args, log=log)
        k = mean_distinct_leaves(fixed.ids.numpy(), args.leaf_size)
        # The batched in-leaf step reads each leaf a batch reaches once (its
        # draws' leaves and its labels', for their log q).
        batch_leaves = len(np.unique(np.concatenate(
            [fixed.ids.numpy().ravel(), np.asarray(labels).ravel()]) // args.leaf_size))
        row = dict(S=s, k=k, batch_leaves=batch_leaves, reps=reps, **medians)
        rows.append(row)
        log("  " + ", ".join(f"{n} {fmt_ms(v)} ms" for n, v in medians.items())
            + f"; k = {k:.1f}")

    lines = [header, f"read bandwidth {bandwidth:.1f} GB/s", "",
             "ms per step (median); sparse updates by scatter_sub, or by the "
             "SparseApplySgd op (+op):", "",
             "| S | update | (a) TF log-uniform shared | (f) per-ex unfused, free draws | "
             "(g) per-ex fused, free draws | (h) kernel per-ex fused + refresh | "
             "(f)/(a) | (g)/(a) | (h)/(g) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for suffix, update in (("", "scatter_sub"), ("+op", "op")):
            a, f, g, hh = (r[n + suffix] for n in "afgh")
            lines.append(f"| {r['S']} | {update} | {fmt_ms(a)} | {fmt_ms(f)} | {fmt_ms(g)} | "
                         f"{fmt_ms(hh)} | {fmt_ratio(f / a)} | {fmt_ratio(g / a)} | "
                         f"{fmt_ratio(hh / g)} |")
    lines += ["", "Parts of (h), timed alone (ms; share of their sum), k = distinct leaves "
              "per query, U = distinct leaves per batch, and the bytes the sampler's "
              "in-leaf step reads (each of the U leaves once):", "",
              "| S | sample | fused loss + SGD | refresh(ids) | k | U | in-leaf bytes/step | "
              "at the read bandwidth | loss rows bytes/step |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        parts = [r["h:sample"], r["h:loss"], r["h:refresh"]]
        total = sum(parts)
        leaf_bytes = r["batch_leaves"] * args.leaf_size * d * 4
        loss_bytes = batch * (r["S"] + 1) * d * 4
        lines.append(
            f"| {r['S']} | " + " | ".join(f"{fmt_ms(p)} ({p / total:.0%})" for p in parts)
            + f" | {r['k']:.1f} | {r['batch_leaves']} | {leaf_bytes / 1e6:.0f} MB | "
            f"{leaf_bytes / (bandwidth * 1e9) * 1e3:.1f} ms | {loss_bytes / 1e6:.1f} MB |")
    lines += ["", "Targets:", ""]
    for r in rows:
        if r["S"] in TARGETS:
            for what, g_a in (("both by scatter_sub", r["g"] / r["a"]),
                              ("both by the op", r["g+op"] / r["a+op"]),
                              ("(g) by the op, (a) by scatter_sub", r["g+op"] / r["a"])):
                lines.append(f"- (g)/(a) at S={r['S']}, {what}: {fmt_ratio(g_a)} (target <= "
                             f"{TARGETS[r['S']]:g}): "
                             f"{'met' if g_a <= TARGETS[r['S']] else 'MISSED'}")
        h_g = r["h+op"] / r["g+op"]
        lines.append(f"- (h)/(g) at S={r['S']}: {fmt_ratio(h_g)} (target <= 2): "
                     f"{'met' if h_g <= 2 else 'MISSED'}")
    lines.append("Repetitions: " + "; ".join(
        f"S={r['S']}: " + ", ".join(f"{k} {v}" for k, v in r["reps"].items()) for r in rows))
    log("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
