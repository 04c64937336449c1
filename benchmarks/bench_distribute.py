"""Multi-worker training with tfs.distribute.Trainer: bytes per step and step time.

Starts local clusters of 1 and 2 worker processes (MultiWorkerMirroredStrategy,
TF_CONFIG on localhost ports) that train Input(64) -> Dense(dim, tanh) ->
SampledSoftmax(C) (default C = 1M, dim = 128, per-example log-uniform
negatives, S = 64, 256 examples per worker and step, LazyAdam) and reports:

- bytes per step, from the gradients of a real step on every replica: the
  class table's and biases' IndexedSlices as produced (a row per label and
  negative) and after summing duplicate ids (what the trainer all-gathers:
  rows x (dim x 4 + 8) bytes per replica), the dense trunk gradients, and the
  touched ids gathered for the sampler's refresh; against a dense all-reduce
  of the same gradients densified ([C, dim] + [C] floats). Sent per worker
  with ring collectives: all-gather (R - 1) x payload (TensorFlow pads each
  replica's rows to the longest replica's), all-reduce 2 (R - 1) / R x size;
- the collectives of the traced step (none carries a [C, dim] tensor);
- ms/step with 1 and 2 workers on this machine, and the time of one dense
  all-reduce of a [C, dim] float32 tensor between the 2 workers;
- a worked estimate for 16 workers at 10M classes from the measured bytes
  and the measured 1-worker compute time.

Run from the repository root:
  python -m benchmarks.bench_distribute
  python -m benchmarks.bench_distribute --num_classes=100000 --steps=5
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

_RESULT = "BENCH_DISTRIBUTE_RESULT "


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="cluster sizes to run, in turn")
    parser.add_argument("--num_classes", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--input_dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256, help="examples per worker and step")
    parser.add_argument("--num_sampled", type=int, default=64)
    parser.add_argument("--sampler", default="log_uniform")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (tracing)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--dense_reps", type=int, default=2,
                        help="timed dense [C, dim] all-reduces with 2+ workers (0: skip)")
    parser.add_argument("--estimate_workers", type=int, default=16)
    parser.add_argument("--estimate_classes", type=int, default=10_000_000)
    parser.add_argument("--link_gbps", default="10,100",
                        help="network bandwidths (Gbit/s per worker) for the estimate")
    parser.add_argument("--latency_us", type=float, default=50.0,
                        help="per ring hop, for the estimate")
    parser.add_argument("--timeout_s", type=float, default=1200.0)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------
# One worker process.


def run_worker(args):
    # pylint: disable=import-outside-toplevel
    import tf_sampled as tfs
    strategy = tfs.distribute.make_strategy(collective_timeout_s=args.timeout_s)
    import keras
    import tensorflow as tf

    num_classes, dim = args.num_classes, args.dim
    replicas = strategy.num_replicas_in_sync
    with strategy.scope():
        keras.utils.set_random_seed(0)
        inputs = keras.Input([args.input_dim])
        h = keras.layers.Dense(dim, activation="tanh")(inputs)
        head = tfs.layers.SampledSoftmax(num_classes, num_sampled=args.num_sampled,
                                         sampler=args.sampler, shared_negatives=False,
                                         seed=1)
        model = tfs.layers.SampledSoftmaxModel(inputs, head(h))
        trunk = keras.Model(inputs, h)
        optimizer = tfs.optimizers.LazyAdam(1e-3)
    built = time.perf_counter()
    trainer = tfs.distribute.Trainer(model, optimizer, strategy=strategy, verbose=False)
    rng = np.random.default_rng(0)
    n = 64 * args.batch
    x = rng.normal(size=(n, args.input_dim)).astype(np.float32)
    # Log-uniform (Zipf-like) labels over the classes.
    y = (np.exp(rng.uniform(0, math.log(num_classes + 1), n)) - 1).astype(np.int64)
    y = np.minimum(y, num_classes - 1)
    dataset = (tf.data.Dataset.from_tensor_slices((x, y)).repeat()
               .batch(args.batch * replicas, drop_remainder=True))
    trainer.fit(dataset, args.warmup, log_every=0)
    history = trainer.fit(dataset, args.warmup + args.steps, log_every=args.steps)
    ms_per_step = history["train"][-1]["ms_per_step"]

    # The gradients of one more real step on every replica (not applied).
    variables = model.trainable_variables

    def payload(batch):
        features, labels = batch
        with tf.GradientTape() as tape:
            losses, touched, _ = head.sampled_loss(trunk(features, training=True), labels)
            loss = tf.reduce_mean(losses)
        sizes = {k: tf.constant(0, tf.int64) for k in (
            "sparse_raw_rows", "sparse_rows", "sparse_bytes", "dense_bytes", "densified_bytes")}
        for gradient in tape.gradient(loss, variables):
            if isinstance(gradient, tf.IndexedSlices):
                summed = tfs.distribute.trainer.sum_duplicate_rows(gradient)
                row_bytes = tf.reduce_prod(tf.shape(summed.values, out_type=tf.int64)[1:]) * 4
                rows = tf.shape(summed.indices, out_type=tf.int64)[0]
                sizes["sparse_raw_rows"] += tf.shape(gradient.indices, out_type=tf.int64)[0]
                sizes["sparse_rows"] += rows
                sizes["sparse_bytes"] += rows * (row_bytes + 8)
                sizes["densified_bytes"] += tf.reduce_prod(
                    tf.cast(gradient.dense_shape, tf.int64)) * 4
            else:
                sizes["dense_bytes"] += tf.size(gradient, out_type=tf.int64) * 4
        ids = tf.shape(tf.unique(touched)[0], out_type=tf.int64)[0]
        sizes["touched_ids"] = ids
        sizes["touched_id_bytes"] = ids * 8
        keys = sorted(sizes)
        return tf.stack([sizes[k] for k in keys])

    keys = sorted(["sparse_raw_rows", "sparse_rows", "sparse_bytes", "dense_bytes",
                   "densified_bytes", "touched_ids", "touched_id_bytes"])
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    per_replica = tf.function(lambda b: strategy.run(payload, args=(b,)))(batch)
    gathered = strategy.gather(per_replica, axis=0)  # [replicas * 7] over all workers
    gathered = gathered.numpy().reshape(replicas, len(keys))
    sizes = {k: [int(v) for v in gathered[:, i]] for i, k in enumerate(keys)}
    collectives = trainer.collective_ops()
    table_elements = num_classes * dim

    dense_ms = None
    if replicas > 1 and args.dense_reps:
        big = tf.ones([num_classes, dim])

        @tf.function
        def dense_all_reduce():
            return strategy.run(lambda: tf.reduce_sum(tf.distribute.get_replica_context()
                                                      .all_reduce("sum", big)[0]))

        float(strategy.experimental_local_results(dense_all_reduce())[0])
        times = []
        for _ in range(args.dense_reps):
            start = time.perf_counter()
            float(strategy.experimental_local_results(dense_all_reduce())[0])
            times.append(1000 * (time.perf_counter() - start))
        dense_ms = float(np.median(times))

    if trainer.is_chief:
        result = {
            "workers": replicas, "ms_per_step": ms_per_step, "dense_all_reduce_ms": dense_ms,
            "sizes": sizes, "setup_s": time.perf_counter() - built,
            "collectives": len(collectives),
            "largest_collective_elements": max(
                (int(np.prod([d or 1 for d in c["shape"]])) for c in collectives), default=0),
            "table_elements": table_elements,
            "table_collectives": sum(1 for c in collectives if c["shape"] and
                                     int(np.prod([d or 1 for d in c["shape"]])) >= table_elements),
        }
        print(_RESULT + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------
# The driver.


def _mb(nbytes):
    return nbytes / 1e6


def sent_per_worker(sizes, workers):
    """Bytes each worker sends in one step with ring collectives.

    TensorFlow pads every replica's rows (and ids) to the longest replica's
    before an all-gather of unequal lengths: the largest payload counts.
    """
    gather = np.max(sizes["sparse_bytes"]) + np.max(sizes["touched_id_bytes"])
    reduce = np.mean(sizes["dense_bytes"])
    return (workers - 1) * gather + 2 * (workers - 1) / workers * reduce


def dense_sent_per_worker(sizes, workers):
    """The same if the table's gradients were densified and all-reduced."""
    reduce = np.mean(sizes["dense_bytes"]) + np.mean(sizes["densified_bytes"])
    return 2 * (workers - 1) / workers * reduce + (workers - 1) * np.max(sizes["touched_id_bytes"])


def estimate(args, runs, log):
    """Step time of a large cluster from the measured payload and compute."""
    one = runs.get(1) or next(iter(runs.values()))
    sizes = one["sizes"]
    collectives = max(run["collectives"] for run in runs.values())
    workers, classes, dim = args.estimate_workers, args.estimate_classes, args.dim
    upper_rows = args.batch * (args.num_sampled + 1)
    measured_rows = int(np.mean(sizes["sparse_rows"])) // 2  # table and biases: one row each
    row_bytes = dim * 4 + 8 + 4 + 8  # table row + id, bias value + id
    dense = np.mean(sizes["dense_bytes"])
    payload = {"measured": measured_rows * row_bytes + measured_rows * 8,
               "upper bound": upper_rows * row_bytes + upper_rows * 8}
    densified = (classes * dim + classes) * 4
    sent = {k: (workers - 1) * p + 2 * (workers - 1) / workers * dense for k, p in payload.items()}
    sent_dense = 2 * (workers - 1) / workers * (densified + dense)
    compute_ms = one["ms_per_step"]
    hops = collectives * (workers - 1)
    latency_ms = hops * args.latency_us / 1000
    log(f"\nEstimate: {workers} workers, C = {classes:,}, dim {dim}, {args.batch} examples per "
        f"worker and step, S = {args.num_sampled}")
    log(f"- compute per step: {compute_ms:.0f} ms (measured, 1 worker on this machine; the "
        f"per-example step does not grow with C: sampling, gathers and LazyAdam are "
        f"O(rows touched))")
    log(f"- rows per worker and step: {measured_rows:,} distinct measured at C = "
        f"{args.num_classes:,}; at most B (S + 1) = {upper_rows:,}")
    for key, p in payload.items():
        log(f"- sparse payload per worker ({key}): {_mb(p):.2f} MB; sent per worker per step "
            f"(ring all-gather, {workers - 1} peers): {_mb(sent[key]):.1f} MB")
    log(f"- dense all-reduce of the densified gradients ([{classes:,}, {dim}] + [{classes:,}] "
        f"float32): {_mb(sent_dense):,.0f} MB sent per worker per step")
    log(f"- latency: about {collectives} collectives per step x {workers - 1} ring hops "
        f"x {args.latency_us:g} us = {latency_ms:.1f} ms")
    log("\n| link | sparse comm (upper bound) | sparse step | examples/s (cluster) | dense comm "
        "| dense step | sparse speed-up |")
    log("|---|---|---|---|---|---|---|")
    rows = []
    for gbps in [float(g) for g in args.link_gbps.split(",")]:
        bytes_per_ms = gbps * 1e9 / 8 / 1000
        comm = sent["upper bound"] / bytes_per_ms + latency_ms
        comm_dense = sent_dense / bytes_per_ms + latency_ms
        step, step_dense = compute_ms + comm, compute_ms + comm_dense
        rows.append({"gbps": gbps, "sparse_comm_ms": comm, "sparse_step_ms": step,
                     "dense_comm_ms": comm_dense, "dense_step_ms": step_dense})
        log(f"| {gbps:g} Gbit/s | {comm:.0f} ms | {step:.0f} ms | "
            f"{workers * args.batch / step * 1000:,.0f} | {comm_dense:,.0f} ms | "
            f"{step_dense:,.0f} ms | {step_dense / step:.1f}x |")
    memory = classes * (dim + 1) * 4 * 3 / 1e9
    log(f"- memory per worker: table + biases + LazyAdam's two slots = {memory:.1f} GB "
        f"(every worker holds the whole table: mirrored variables)")
    return {"workers": workers, "classes": classes, "payload_bytes": payload,
            "sent_bytes": sent, "dense_sent_bytes": sent_dense, "compute_ms": compute_ms,
            "latency_ms": latency_ms, "links": rows, "memory_gb": memory}


def run_cluster(argv, num_workers, marker, timeout_s, num_ps=0):
    """Runs a benchmark command as a local cluster; the chief's (first task's) result.

    The chief prints one line `marker + JSON`; returns that JSON's dict with
    "wall_s" (the whole run, start-up included) added.

    Raises:
      RuntimeError: naming the tasks that failed, with their stderr tails.
    """
    import tf_sampled as tfs  # pylint: disable=import-outside-toplevel
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    start = time.perf_counter()
    results = tfs.distribute.run_local_cluster(argv, num_workers, num_ps=num_ps, env=env,
                                               cwd=root, timeout_s=timeout_s)
    if not all(r.ok for r in results):
        raise RuntimeError(tfs.distribute.describe_failure(results))
    line = next(ln for ln in results[0].stdout.splitlines() if ln.startswith(marker))
    return dict(json.loads(line[len(marker):]), wall_s=time.perf_counter() - start)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return 0
    log = print
    log(f"bench_distribute: C = {args.num_classes:,}, dim {args.dim}, {args.batch} examples per "
        f"worker and step, S = {args.num_sampled} ({args.sampler}), LazyAdam; "
        f"{args.warmup} warm-up + {args.steps} timed steps; nproc = {os.cpu_count()}")
    runs = {}
    for workers in [int(w) for w in args.workers.split(",")]:
        argv_worker = [sys.executable, "-m", "benchmarks.bench_distribute", "--worker"] + [
            a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith(
                "--workers")]
        try:
            runs[workers] = run_cluster(argv_worker, workers, _RESULT, args.timeout_s)
        except RuntimeError as error:
            log(str(error))
            return 1
        log(f"  {workers} worker(s): {runs[workers]['wall_s']:.0f} s in all (start-up, "
            f"variable broadcast, tracing, steps)")

    drawn = args.batch * (args.num_sampled + 1)
    log(f"\n| workers | ms/step | examples/s | distinct table rows per replica (of B (S + 1) = "
        f"{drawn:,}) "
        "| payload per replica: sparse + ids + dense | sent per worker per step | same with "
        "the table densified | dense [C, dim] all-reduce |")
    log("|---|---|---|---|---|---|---|---|")
    for workers, run in runs.items():
        sizes = run["sizes"]
        rows = np.mean(sizes["sparse_rows"]) / 2
        sent, dense_sent = sent_per_worker(sizes, workers), dense_sent_per_worker(sizes, workers)
        dense_ms = (f"{run['dense_all_reduce_ms']:,.0f} ms" if run["dense_all_reduce_ms"]
                    else "-")
        log(f"| {workers} | {run['ms_per_step']:.0f} | "
            f"{workers * args.batch / run['ms_per_step'] * 1000:,.0f} | {rows:,.0f} | "
            f"{_mb(np.mean(sizes['sparse_bytes'])):.2f} + "
            f"{_mb(np.mean(sizes['touched_id_bytes'])):.3f} + "
            f"{_mb(np.mean(sizes['dense_bytes'])):.3f} MB | {_mb(sent):.2f} MB | "
            f"{_mb(dense_sent):,.0f} MB | {dense_ms} |")
    for workers, run in runs.items():
        log(f"- {workers} worker(s): the table's and biases' gradients hold "
            f"{np.mean(run['sizes']['sparse_raw_rows']):,.0f} rows per replica as the loss "
            f"produces them, {np.mean(run['sizes']['sparse_rows']):,.0f} distinct; "
            f"{run['collectives']} collectives in the step's graph, the "
            f"largest {run['largest_collective_elements']:,} elements; "
            f"{run['table_collectives']} of [C, dim] = {run['table_elements']:,} elements or more")
    result = {"args": vars(args), "runs": runs, "estimate": estimate(args, runs, log)}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
