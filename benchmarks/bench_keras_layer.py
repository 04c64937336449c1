"""The SampledSoftmax Keras layer: optimizer cost, fit step time, chunked evaluation memory.

Parts (--parts, comma-separated):

  optimizers  one optimizer step on a [C, 64] table (C = 1M) whose gradient is
              the IndexedSlices of a sampled-softmax batch (B (S + 1) = 16,640
              gathered rows): Keras' SGD, SGD+momentum, Adam, Adagrad against
              tf_sampled's SparseSGD, LazyAdam and SparseAdagrad, timed side by side.
  fit         model.fit ms/step at C = 1M, d = 128, B = 256, S = 64 with the
              layer (kernel sampler, LazyAdam; with and without the per-step
              refresh of touched rows), against the bare per-example step of
              benchmarks.bench_kernel_sampler (KernelSampler.sample +
              tfs.nn.sampled_softmax_loss + SGD, with and without refresh) and a
              Keras model with a plain Dense softmax output and Adam. fit's
              steps are timed with a batch callback, variants in turns.
  eval        model.evaluate at C = 1M (d = 128, batch 256): the layer's chunked
              full softmax against a Dense softmax model, each in a fresh
              process; peak RSS growth during evaluate and ms per batch.

Run from the repository root:
  python -m benchmarks.bench_keras_layer
  python -m benchmarks.bench_keras_layer --parts=optimizers --num_classes=100000
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

import keras
import tensorflow as tf

import tf_sampled as tfs
from benchmarks import timing
from benchmarks.training_steps import build_functions, make_batch, make_table


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="optimizers,fit,eval")
    parser.add_argument("--num_classes", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--opt_dim", type=int, default=64, help="table width, optimizers part")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--num_sampled", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4, help="fit: timed rounds per variant")
    parser.add_argument("--steps", type=int, default=4, help="fit: steps per round")
    parser.add_argument("--dense_steps", type=int, default=2,
                        help="fit: steps per round of the Dense-softmax model")
    parser.add_argument("--eval_batches", type=int, default=4)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--min_reps", type=int, default=3)
    parser.add_argument("--budget_s", type=float, default=20.0)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--eval_worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------
# Optimizers.


def optimizer_part(args, log):
    num_classes, dim = args.num_classes, args.opt_dim
    rows = args.batch * (args.num_sampled + 1)
    ids = tf.random.stateless_uniform([rows], [0, 3], 0, num_classes, tf.int64)
    upstream = tf.random.stateless_normal([rows, dim], [0, 4])
    optimizers = {
        "SGD": keras.optimizers.SGD(0.1),
        "SparseSGD": tfs.optimizers.SparseSGD(0.1),
        "LazyAdam": tfs.optimizers.LazyAdam(1e-3),
        "SparseAdagrad": tfs.optimizers.SparseAdagrad(0.1),
        "Adam": keras.optimizers.Adam(1e-3),
        "Adagrad": keras.optimizers.Adagrad(0.1),
        "SGD+momentum": keras.optimizers.SGD(0.1, momentum=0.9),
    }
    def make_step(optimizer):
        table = keras.Variable(tf.random.stateless_normal([num_classes, dim], [0, 5]) * 0.1)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                # Gather from the tf.Variable: IndexedSlices gradient, no table copy.
                loss = tf.reduce_sum(tf.gather(table.value, ids) * upstream)
            optimizer.apply(tape.gradient(loss, [table]), [table])
            return loss
        return step

    fns = {name: make_step(optimizer) for name, optimizer in optimizers.items()}
    log(f"optimizer step, table [{num_classes:,}, {dim}], {rows:,} gathered rows")
    medians, reps = timing.bench(fns, args, log=log)
    return {"num_classes": num_classes, "dim": dim, "rows": rows, "ms": medians, "reps": reps}


# ----------------------------------------------------------------------------
# fit.


class _BatchTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times, self._start = [], None

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        # Fetching a log value waits for the step.
        float(logs["loss"])
        self.times.append(time.perf_counter() - self._start)


def _layer_model(num_classes, dim, num_sampled, refresh_touched):
    inputs = keras.Input([dim])
    outputs = tfs.layers.SampledSoftmax(
        num_classes, num_sampled=num_sampled, sampler="kernel",
        sampler_options={"feature_map": tfs.features.PositiveRandom(128, seed=0)},
        refresh_touched=refresh_touched)(inputs)
    model = tfs.layers.SampledSoftmaxModel(inputs, outputs)
    model.compile(tfs.optimizers.LazyAdam(1e-3))
    return model


def _dense_model(num_classes, dim):
    model = keras.Sequential([keras.Input([dim]), keras.layers.Dense(num_classes)])
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def fit_part(args, log):
    num_classes, dim, batch, s = args.num_classes, args.dim, args.batch, args.num_sampled
    h, labels = make_batch(num_classes, dim, batch, seed=1)
    data = tf.data.Dataset.from_tensors((h, labels)).repeat()
    models = {"layer (LazyAdam, refresh touched)": _layer_model(num_classes, dim, s, True),
              "layer (LazyAdam, no refresh)": _layer_model(num_classes, dim, s, False)}
    # The bare step of the kernel-sampler benchmark on its own table.
    w, b = make_table(num_classes, dim, seed=0)
    sampler = tfs.samplers.KernelSampler(
        w, feature_map=tfs.features.PositiveRandom(128, seed=0), biases=b)
    steps, _, _, _, _ = build_functions(w, b, sampler, h, labels, num_classes, s, False)
    bare = {"bare op + loss + SGD": steps["c"], "bare op + loss + SGD + refresh": steps["c+"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dense = _dense_model(num_classes, dim)
    times = {name: [] for name in [*models, *bare, "Dense softmax + Adam"]}
    for name, fn in bare.items():
        timing.block(fn())
    for round_ in range(args.rounds + 1):  # round 0 traces
        for name, model in models.items():
            timer = _BatchTimer()
            model.fit(data, steps_per_epoch=args.steps, epochs=1, verbose=0, callbacks=[timer])
            if round_:
                times[name] += timer.times
        for name, fn in bare.items():
            for _ in range(args.steps):
                if round_:
                    times[name].append(timing.timed(fn))
        timer = _BatchTimer()
        dense.fit(data, steps_per_epoch=args.dense_steps, epochs=1, verbose=0,
                  callbacks=[timer])
        if round_:
            times["Dense softmax + Adam"] += timer.times
        log(f"  round {round_}: " + ", ".join(
            f"{k} {1e3 * statistics.median(v):.0f}" for k, v in times.items() if v))
    ms = {name: 1e3 * statistics.median(v) for name, v in times.items()}
    return {"num_classes": num_classes, "dim": dim, "batch": batch, "num_sampled": s,
            "ms": ms, "steps": {k: len(v) for k, v in times.items()}}


# ----------------------------------------------------------------------------
# Chunked evaluation memory (each variant in its own process).


def _rss_gb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def _peak_rss_gb():
    """VmHWM: peak RSS since the last reset through /proc/self/clear_refs."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM in /proc/self/status")


def eval_worker(kind, args):
    num_classes, dim, batch = args.num_classes, args.dim, args.batch
    n = batch * args.eval_batches
    h, _ = make_batch(num_classes, dim, n, seed=1)
    labels = tf.random.stateless_uniform([n], [0, 6], 0, num_classes, tf.int64)
    if kind == "chunked":
        inputs = keras.Input([dim])
        outputs = tfs.layers.SampledSoftmax(num_classes, num_sampled=64)(inputs)
        model = tfs.layers.SampledSoftmaxModel(inputs, outputs)
        model.compile(keras.optimizers.SGD(0.1))
    else:
        model = _dense_model(num_classes, dim)
    model.evaluate(h[:batch], labels[:batch], batch_size=batch, verbose=0)  # trace
    before = _rss_gb()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak RSS (VmHWM) to the current RSS
    start = time.perf_counter()
    model.evaluate(h, labels, batch_size=batch, verbose=0)
    seconds = time.perf_counter() - start
    print(json.dumps({"kind": kind, "rss_before_gb": before, "peak_rss_gb": _peak_rss_gb(),
                      "ms_per_batch": 1e3 * seconds / args.eval_batches}))


def eval_part(args, log):
    results = {}
    for kind in ("chunked", "dense"):
        cmd = [sys.executable, "-m", "benchmarks.bench_keras_layer", "--eval_worker", kind,
               f"--num_classes={args.num_classes}", f"--dim={args.dim}",
               f"--batch={args.batch}", f"--eval_batches={args.eval_batches}"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                             env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        results[kind] = json.loads(out.stdout.strip().splitlines()[-1])
        log(f"  {kind}: {results[kind]}")
    return results


def main(argv=None):
    args = parse_args(argv)
    if args.eval_worker:
        eval_worker(args.eval_worker, args)
        return
    results = {"date": time.strftime("%Y-%m-%d"), "nproc": os.cpu_count()}
    parts = {"optimizers": optimizer_part, "fit": fit_part, "eval": eval_part}
    for part in args.parts.split(","):
        print(f"=== {part} ===", flush=True)
        results[part] = parts[part](args, lambda m: print(m, flush=True))
        print(json.dumps(results[part], indent=1), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
