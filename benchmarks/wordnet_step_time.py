"""ms per training step of the WordNet model, objectives timed side by side.

Step times alone, without the evaluations: the example
(examples/compare_samplers.py) interleaves its objectives' training the same
way, with evaluations between rounds. Here the same model, data
and optimizer as the example train with each objective in interleaved rounds
of --round_steps steps (the kernel objectives including their full refresh
every --refresh_every steps, as in the example; --refresh_every=0 never
refreshes, to time the step alone), and the median ms/step of
the rounds is reported. `kernel:32:64` is the kernel objective with leaf
size 32 and 64 random features. `kernel_unfused` is `kernel` with the loss composed of
TensorFlow ops (fused=False), to show what the fused op buys. `adversarial`
fits its auxiliary tree once before timing (as the example does; not counted).

With --summary_csv (the example's summary.csv of a quality run with the same
S), it also prints each objective's time to reach that run's target (the
best built-in's final validation CE): steps_to_target x ms/step, against
log-uniform's --steps x ms/step.

  python -m benchmarks.wordnet_step_time --num_sampled=16 \\
      --summary_csv=/tmp/wn_s16/summary.csv
  python -m benchmarks.wordnet_step_time --dataset=gcide --optimizer=lazy_adam \\
      --objectives=log_uniform,kernel,full --rounds=5 --round_steps=10
"""
import argparse
import csv
import os
import statistics
import sys
import time

import keras
import tensorflow as tf

import tf_sampled as tfs

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "examples"))
import compare_samplers as example  # noqa: E402  pylint: disable=wrong-import-position


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="wordnet",
                        help="any tfs.datasets loader with its defaults (gcide: 100k words)")
    parser.add_argument("--optimizer", default="adam", choices=list(example.OPTIMIZERS))
    parser.add_argument("--objectives", default="log_uniform,kernel,kernel_unfused")
    parser.add_argument("--num_sampled", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--refresh_every", type=int, default=10,
                        help="full refresh of the kernel and LSH samplers every this many "
                             "steps (0: never, the step alone)")
    parser.add_argument("--round_steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=1200,
                        help="steps of the quality run (log-uniform's time to its end)")
    parser.add_argument("--summary_csv", default=None,
                        help="summary.csv of a quality run; its rows are matched by "
                             "objective name (sizes after ':' ignored)")
    return parser.parse_args(argv)


def make_objective(spec, data, num_sampled, refresh_every, batch_size, optimizer="adam"):
    """A zero-argument function running one training step of objective `spec`.

    spec: an objective of the example, or `kernel_unfused`, optionally with
    the kernel sampler's leaf size and number of features: `kernel:32:64`.
    """
    name, *sizes = spec.split(":")
    leaf_size = int(sizes[0]) if sizes else None
    num_features = int(sizes[1]) if len(sizes) > 1 else 128
    base = "kernel" if name == "kernel_unfused" else name
    head = example.head_options(base, num_sampled, data.class_counts, seed=0,
                                leaf_size=leaf_size, num_features=num_features,
                                refresh_every=refresh_every or None)
    encoder, head, W, b, variables, optimizer = example.build_model(
        data, seed=0, optimizer=optimizer, head=head)
    aux_features = None
    if name in example.ADVERSARIAL_OBJECTIVES:
        # As the example's train_one: the auxiliary tree is fitted once (not
        # timed here) on a frozen copy of the initialised encoder, queried with it.
        frozen = keras.models.clone_model(encoder)
        frozen.set_weights(encoder.get_weights())
        frozen.trainable = False
        aux_features = (frozen, data.x_train, data.y_train)
    loss_fn, sampler = example.make_loss_fn(base, W, b, num_sampled, data.class_counts,
                                            seed=0, leaf_size=leaf_size,
                                            num_features=num_features,
                                            aux_features=aux_features, head=head)
    if name == "kernel_unfused":
        def loss_fn(h, labels):  # noqa: F811  the same draws, the reference loss
            true = labels[:, None]
            cands = sampler.sample(h, num_sampled, true_classes=true, seed=0)
            return tfs.nn.sampled_softmax_loss(W, b, true, h, cands, fused=False)
    train_step = example.make_train_step(loss_fn, encoder, variables, optimizer)
    # The fitted auxiliary tree does not follow the class table, and the layer
    # refreshes its own sampler: nothing to refresh here.
    refresh = tf.function(sampler.refresh) if refresh_every and sampler is not None \
        and aux_features is None and not hasattr(loss_fn, "update_sampler") else None
    batches = iter(tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
                   # (a bounded buffer: GCIDE has 5M examples)
                   .shuffle(min(len(data.y_train), 100_000), seed=0).repeat()
                   .batch(batch_size, drop_remainder=True).prefetch(4))
    count = [0]

    def step():
        x, y = next(batches)
        count[0] += 1
        if refresh is not None and count[0] % refresh_every == 0:
            refresh()
        return float(train_step(x, y))
    return step


def main(argv=None):
    args = parse_args(argv)
    options = {"wordnet": dict(max_len=example.MAX_LEN)}.get(args.dataset, {})
    data = tfs.datasets.load(args.dataset, **options)
    names = args.objectives.split(",")
    steps = {n: make_objective(n, data, args.num_sampled, args.refresh_every, args.batch_size,
                               args.optimizer)
             for n in names}
    for fn in steps.values():  # trace and warm up (includes one refresh)
        for _ in range(args.refresh_every + 2 if args.refresh_every else 12):
            fn()
    times = {n: [] for n in names}
    for _ in range(args.rounds):
        for n, fn in steps.items():
            start = time.perf_counter()
            for _ in range(args.round_steps):
                fn()
            times[n].append(1e3 * (time.perf_counter() - start) / args.round_steps)
    ms = {n: statistics.median(t) for n, t in times.items()}
    print(f"{args.dataset} step time ({args.optimizer}), S={args.num_sampled}, batch "
          f"{args.batch_size}, "
          f"{args.rounds} interleaved rounds of {args.round_steps} steps, nproc "
          f"{os.cpu_count()}, TF {tf.__version__}:")
    print("| objective | ms/step (median) | / log_uniform |")
    print("|---|---|---|")
    for n in names:
        print(f"| {n} | {ms[n]:.1f} | {ms[n] / ms.get('log_uniform', ms[n]):.2f} |")
    if args.summary_csv and "log_uniform" in ms:
        with open(args.summary_csv) as f:
            # Labels are name@S; sizes after ':' here are the kernel's leaves.
            summary = {row["objective"].split("@")[0]: row for row in csv.DictReader(f)}
        budget = args.steps * ms["log_uniform"]
        print(f"\nTime to reach log_uniform's final val CE (steps from {args.summary_csv} "
              f"x ms/step above; log_uniform: {args.steps} steps = {budget / 1e3:.1f} s):")
        for n in names:
            row = summary.get(n.split(":")[0].replace("kernel_unfused", "kernel"))
            if row is None or row["steps_to_target"] in ("", "nan"):
                continue
            t = float(row["steps_to_target"]) * ms[n]
            print(f"- {n}: step {float(row['steps_to_target']):.0f} x {ms[n]:.1f} ms = "
                  f"{t / 1e3:.1f} s "
                  f"= {t / budget:.2f} of log_uniform's time")


if __name__ == "__main__":
    main()
