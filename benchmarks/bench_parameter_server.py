"""Parameter-server training (tfs.distribute.ParameterServerTrainer): bytes, compute, step time.

Three parts:

1. One process, the table's K shards on this CPU (`--classes`, default
   C = 1M, dim 128, K = 4, B = 256 examples per step, S = 64, SparseAdagrad):
   ms per whole step, and the parts that run on the parameter servers in a
   cluster, timed alone: the sharded kernel sampler's draw (the shard
   choice and every shard's draws), and one shard's guarded sparse
   update + touched-row tree refresh. The distinct rows a step touches (U)
   are counted, and from them and the shapes the bytes a worker exchanges
   with the servers per step: queries h [B, dim] to every shard and at most
   [B, S] ids + log q back from each (sampling), U ids out and U rows (dim +
   bias floats) back (the gather), U ids + U gradient rows out (the update).
2. Local clusters (chief + 1 or 2 workers + 2 ps tasks on this machine,
   TF_CONFIG on localhost ports, `--cluster_classes`): ms per step from the
   chief's history, steps scheduled by the ClusterCoordinator.
3. A worked estimate of 4 ps x 64 workers at 10M classes from the measured
   bytes and compute (assumptions printed with it).

Run from the repository root:
  python -m benchmarks.bench_parameter_server
  python -m benchmarks.bench_parameter_server --classes=100000 --cluster_classes=100000
"""
import argparse
import functools
import json
import math
import os
import sys
import time

import numpy as np

from benchmarks.bench_distribute import run_cluster

_RESULT = "BENCH_PARAMETER_SERVER_RESULT "


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=1_000_000, help="C of the in-process part")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256, help="examples per step")
    parser.add_argument("--num_sampled", type=int, default=64)
    parser.add_argument("--features", type=int, default=128, help="PositiveRandom features F")
    parser.add_argument("--leaf_size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--cluster_classes", type=int, default=1_000_000)
    parser.add_argument("--cluster_workers", default="1,2", help="local cluster sizes (0: skip)")
    parser.add_argument("--cluster_steps", type=int, default=40, help="timed cluster steps")
    parser.add_argument("--estimate_ps", type=int, default=4)
    parser.add_argument("--estimate_workers", type=int, default=64)
    parser.add_argument("--estimate_classes", type=int, default=10_000_000)
    parser.add_argument("--ps_cores", type=int, default=16,
                        help="cores per parameter server in the estimate (this machine: 2)")
    parser.add_argument("--link_gbps", default="10,100",
                        help="network bandwidth per machine (Gbit/s) for the estimate")
    parser.add_argument("--rtt_us", type=float, default=100.0,
                        help="one worker-server round trip, for the estimate")
    parser.add_argument("--timeout_s", type=float, default=900.0)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--task", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _data(args, num_classes, n):
    rng = np.random.default_rng(0)
    h = rng.normal(size=(n, args.dim)).astype(np.float32) / math.sqrt(args.dim)
    # Log-uniform (Zipf-like) labels.
    y = (np.exp(rng.uniform(0, math.log(num_classes + 1), n)) - 1).astype(np.int64)
    return h, np.minimum(y, num_classes - 1)


def _trainer(args, num_classes, strategy=None, num_shards=None):
    # pylint: disable=import-outside-toplevel
    import tf_sampled as tfs
    return tfs.distribute.ParameterServerTrainer(
        num_classes, args.dim, strategy=strategy, num_shards=num_shards,
        num_sampled=args.num_sampled, optimizer=tfs.optimizers.SparseAdagrad(0.1), seed=0,
        sampler_options={"leaf_size": args.leaf_size,
                         "feature_map": tfs.features.PositiveRandom(args.features, seed=1)},
        verbose=False)


def _time(fn, reps):
    fn(0)  # traced
    fn(1)  # traced again for shapes that vary (reduce_retracing)
    start = time.perf_counter()
    for i in range(reps):
        fn(i + 2)
    return 1000.0 * (time.perf_counter() - start) / reps


def in_process(args, log):
    """Step and server-side times with the shards in this process; the bytes of a step."""
    # pylint: disable=import-outside-toplevel,protected-access
    import tensorflow as tf
    import tf_sampled as tfs
    from tf_sampled.distribute import parameter_server
    start = time.perf_counter()
    trainer = _trainer(args, args.classes, num_shards=args.shards)
    built_s = time.perf_counter() - start
    h, y = _data(args, args.classes, 64 * args.batch)
    dataset = tf.data.Dataset.from_tensor_slices((h, y)).repeat().batch(args.batch, True)
    trainer.fit(dataset, args.warmup, log_every=0)
    history = trainer.fit(dataset, args.warmup + args.steps, log_every=args.steps)
    step_ms = history["train"][-1]["ms_per_step"]

    batches = [(tf.constant(h[i * args.batch:(i + 1) * args.batch]),
                tf.constant(y[i * args.batch:(i + 1) * args.batch])) for i in range(8)]
    sample = tf.function(lambda hb, yb, step: trainer.sampler.sample_at(
        hb, args.num_sampled, yb[:, None], parameter_server._STEP_SEED, trainer.seed, step))
    sample_ms = _time(lambda i: sample(*batches[i % 8], tf.constant(10_000 + i, tf.int64))
                      .ids.numpy(), args.steps)

    @tf.function
    def touched(hb, yb, step):
        drawn = sample(hb, yb, step)
        return tf.unique(tf.concat([yb, tf.reshape(drawn.ids, [-1])], 0))[0]

    counts = [int(touched(*batches[i], tf.constant(20_000 + i, tf.int64)).shape[0])
              for i in range(8)]
    rows = int(np.mean(counts))

    # The worker's part: the loss and its gradients on the gathered rows.
    def worker_inputs(i):
        hb, yb = batches[i]
        drawn = sample(hb, yb, tf.constant(40_000 + i, tf.int64))
        unique, position = tf.unique(tf.concat([yb, tf.reshape(drawn.ids, [-1])], 0))
        table, bias = trainer._gather(unique)
        return (hb, table, bias, position[:args.batch][:, None],
                tf.reshape(position[args.batch:], [args.batch, args.num_sampled]),
                drawn.log_q, drawn.true_log_q)

    @functools.partial(tf.function, reduce_retracing=True)
    def loss_and_gradients(hb, table, bias, labels, candidates, log_q, true_log_q):
        with tf.GradientTape() as tape:
            tape.watch([table, bias])
            losses = tfs.nn.sampled_softmax_loss(
                table, bias, labels, hb,
                tfs.samplers.SampledCandidates(candidates, log_q, true_log_q))
            loss = tf.reduce_mean(losses)
        return [tf.convert_to_tensor(g) for g in tape.gradient(loss, [table, bias])]

    inputs = [worker_inputs(i) for i in range(8)]
    worker_ms = _time(lambda i: loss_and_gradients(*inputs[i % 8])[0].numpy(), args.steps)

    # A server's part: one shard's guarded update and tree refresh of U / K rows.
    shard = trainer.shards[0]
    per_shard = max(rows // args.shards, 1)
    rng = np.random.default_rng(1)
    updates = [(tf.constant(np.sort(rng.choice(shard.rows, per_shard, replace=False))),
                tf.constant(1e-3 * rng.normal(size=(per_shard, args.dim)), tf.float32),
                tf.constant(1e-3 * rng.normal(size=per_shard), tf.float32)) for _ in range(8)]

    @functools.partial(tf.function, reduce_retracing=True)
    def apply(local, grad, bias_grad, step):
        return trainer._apply_rows(shard, local, [grad, bias_grad], step)

    apply_ms = _time(lambda i: apply(*updates[i % 8], tf.constant(30_000 + i, tf.int64)).numpy(),
                     args.steps)
    B, S, d, K, F = args.batch, args.num_sampled, args.dim, args.shards, args.features
    sizes = {
        # per shard: h out, true ids out, [B, S] ids + log q back, [B] true log q, the root row
        "sampling": K * (B * d * 4 + B * 8 + B * S * (8 + 4) + B * 4 + F * 8),
        "gather": rows * 8 + rows * (d + 1) * 4,
        "update": rows * 8 + rows * (d + 1) * 4,
    }
    log(f"In one process, {K} shards of C = {args.classes:,} on this CPU (built in "
        f"{built_s:.1f} s), B = {B}, S = {S}, dim {d}, SparseAdagrad:")
    log(f"- whole step: {step_ms:.1f} ms; timed alone: the sharded draw (all {K} shards) "
        f"{sample_ms:.1f} ms, the loss and its gradients {worker_ms:.1f} ms, one shard's "
        f"guarded update + tree refresh of {per_shard:,} rows {apply_ms:.1f} ms")
    log(f"- distinct rows per step U = {rows:,} (of B (S + 1) = {B * (S + 1):,})")
    log(f"- bytes a worker exchanges with the servers per step: sampling "
        f"{sizes['sampling'] / 1e6:.2f} MB, gather {sizes['gather'] / 1e6:.2f} MB, update "
        f"{sizes['update'] / 1e6:.2f} MB, total {sum(sizes.values()) / 1e6:.2f} MB")
    return {"step_ms": step_ms, "sample_ms": sample_ms, "apply_ms": apply_ms,
            "worker_ms": worker_ms,
            "apply_rows": per_shard, "rows": rows, "bytes": sizes, "built_s": built_s}


def run_task(args):
    """One task of a local cluster: the chief trains and prints its timings."""
    # pylint: disable=import-outside-toplevel
    import tf_sampled as tfs
    strategy = tfs.distribute.make_parameter_server_strategy(chief_gone_s=2)
    import tensorflow as tf
    start = time.perf_counter()
    trainer = _trainer(args, args.cluster_classes, strategy=strategy)
    built_s = time.perf_counter() - start

    def dataset():
        h, y = _data(args, args.cluster_classes, 16 * args.batch)
        return tf.data.Dataset.from_tensor_slices((h, y)).repeat().batch(args.batch, True)

    trainer.fit(dataset, args.warmup * 4, log_every=0)
    history = trainer.fit(dataset, args.warmup * 4 + args.cluster_steps,
                          log_every=args.cluster_steps)
    print(_RESULT + json.dumps({"ms_per_step": history["train"][-1]["ms_per_step"],
                                "built_s": built_s, **trainer.shard_counts()}), flush=True)


def clusters(args, log):
    argv = [sys.executable, "-m", "benchmarks.bench_parameter_server", "--task",
            f"--cluster_classes={args.cluster_classes}", f"--dim={args.dim}",
            f"--batch={args.batch}", f"--num_sampled={args.num_sampled}",
            f"--features={args.features}", f"--leaf_size={args.leaf_size}",
            f"--warmup={args.warmup}", f"--cluster_steps={args.cluster_steps}"]
    runs = {workers: run_cluster(argv, workers, _RESULT, args.timeout_s, num_ps=2)
            for workers in [int(w) for w in args.cluster_workers.split(",") if int(w)]}
    if runs:
        log(f"\nLocal clusters: chief + workers + 2 ps tasks on this machine, C = "
            f"{args.cluster_classes:,} in 2 shards, B = {args.batch} per step:\n")
        log("| workers | ms/step (chief's view) | examples/s | run in all |")
        log("|---|---|---|---|")
        for workers, run in runs.items():
            log(f"| {workers} | {run['ms_per_step']:.1f} | "
                f"{args.batch / run['ms_per_step'] * 1000:,.0f} | {run['wall_s']:.0f} s |")
    return runs


def estimate(args, measured, log):
    """Throughput of a large cluster from the measured bytes and compute."""
    P, W, C, d = args.estimate_ps, args.estimate_workers, args.estimate_classes, args.dim
    B, S, K = args.batch, args.num_sampled, args.shards
    upper = B * (S + 1)
    # Per worker step, with P shards (one per server):
    sampling = P * (B * d * 4 + B * 8 + B * S * 12 + B * 4 + args.features * 8)
    row_bytes = 2 * (upper * 8 + upper * (d + 1) * 4)  # gather + update, upper bound on U
    worker_bytes = sampling + row_bytes
    server_bytes = sampling / P + row_bytes / P  # what one server moves per worker step
    # Server compute per worker step: a shard's draw (every shard draws S per
    # query: the measured draw over K shards / K) and its update of U / P rows.
    core_scale = 2.0 / args.ps_cores
    server_ms = (measured["sample_ms"] / K
                 + measured["apply_ms"] * (upper / P) / measured["apply_rows"]) * core_scale
    # The worker's share: the whole step less the servers' parts (the loss,
    # the id bookkeeping and the row gathers), at least the loss alone.
    worker_ms = max(measured["step_ms"] - measured["sample_ms"]
                    - K * measured["apply_ms"], measured["worker_ms"])
    log(f"\nEstimate: {P} ps x {W} workers, C = {C:,} ({C // P:,} per server), dim {d}, "
        f"B = {B} per worker step, S = {S}, upper bound U = B (S + 1) = {upper:,} rows")
    log(f"- worker compute per step: {worker_ms:.1f} ms (the whole step less the servers' "
        f"draw and updates, measured on this machine at C = {args.classes:,}: the loss "
        f"{measured['worker_ms']:.1f} ms, the rest the ids' bookkeeping and the row gathers; "
        f"O(B (S + 1) dim), not O(C))")
    log(f"- server compute per worker step: {server_ms:.2f} ms (one shard's draw "
        f"{measured['sample_ms'] / K:.1f} ms + update/refresh of U / {P} rows, measured on "
        f"2 cores, scaled to {args.ps_cores} cores per server; the tree descent grows as "
        f"log(C / leaf_size))")
    log(f"- bytes per worker step: {worker_bytes / 1e6:.2f} MB per worker, "
        f"{server_bytes / 1e6:.2f} MB per server")
    memory = C / P * (d + 1) * 4 * 3 / 1e9
    log(f"- memory per server: its shard's rows + Adagrad slots + tree row snapshot = "
        f"{memory:.2f} GB (one worker of MultiWorkerMirroredStrategy holds "
        f"{C * (d + 1) * 4 * 3 / 1e9:.1f} GB: table + LazyAdam's two slots)")
    log("\n| link | worker step (compute + transfer + 3 round trips) | server load at that "
        "rate | cluster steps/s | cluster examples/s | bound | servers for the workers' rate |")
    log("|---|---|---|---|---|---|---|")
    out = []
    for gbps in [float(g) for g in args.link_gbps.split(",")]:
        bytes_per_ms = gbps * 1e9 / 8 / 1000
        step_ms = worker_ms + worker_bytes / bytes_per_ms + 3 * args.rtt_us / 1000
        rate = W * 1000 / step_ms  # steps/s if the servers keep up
        server_rate_net = bytes_per_ms * 1000 / server_bytes
        server_rate_cpu = 1000 / server_ms
        limit = min(rate, server_rate_net, server_rate_cpu)
        bound = ("workers" if limit == rate else
                 "server network" if limit == server_rate_net else "server CPU")
        load = rate / min(server_rate_net, server_rate_cpu)
        servers = math.ceil(P * load) if load > 1 else P
        out.append({"gbps": gbps, "worker_step_ms": step_ms, "steps_per_s": limit,
                    "bound": bound, "server_load": load, "servers_to_keep_up": servers})
        log(f"| {gbps:g} Gbit/s | {step_ms:.1f} ms | {100 * load:.0f}% | {limit:,.0f} | "
            f"{limit * B:,.0f} | {bound} | {servers} |")
    return {"worker_ms": worker_ms, "server_ms": server_ms, "worker_bytes": worker_bytes,
            "server_bytes": server_bytes, "memory_gb_per_server": memory, "links": out}


def main(argv=None):
    args = parse_args(argv)
    if args.task:
        run_task(args)
        return 0
    log = print
    log(f"bench_parameter_server: nproc = {os.cpu_count()}; a local cluster shares these "
        f"cores, so more workers give no speed-up here")
    measured = in_process(args, log)
    runs = clusters(args, log)
    result = {"args": vars(args), "in_process": measured, "clusters": runs,
              "estimate": estimate(args, measured, log)}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
