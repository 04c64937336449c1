"""Compares sampled-softmax objectives on a real 20k-class task (offline).

Task: WordNet definition -> parent concept (bundled with tf_sampled; 95k
examples, 20,206 classes). Every objective trains the same model with the same
optimizer and seed:

  mean of 64-d word embeddings of the definition -> Dense(128, tanh)
  -> logits = h @ W^T + b,   W: [C, 128] class embeddings, b: [C]

and is evaluated on the full softmax (validation cross-entropy, top-1, top-5).

Objectives:
  full            full softmax cross-entropy (the reference)
  uniform         tf.nn.sampled_softmax_loss + tf.random.uniform_candidate_sampler
  log_uniform     ... + tf.random.log_uniform_candidate_sampler (TF's default)
  unigram         ... + tf.random.fixed_unigram_candidate_sampler(train counts)
  kernel          per-example negatives from tfs.samplers.KernelSampler
                  (positive random features) + tfs.nn.sampled_softmax_loss
                  (the fused per-example loss op)
  kernel_shared   batch-shared negatives: tfs.random.kernel_candidate_sampler as a
                  drop-in sampled_values for tf.nn.sampled_softmax_loss
  kernel_fourier  per-example, random Fourier features
  kernel_moments  per-example, GaussianMoments node summaries
  lsh             per-example negatives from tfs.samplers.LSHSampler, LSH-Embedding
                  (SimHash tables over W queried with h; exact log q)
  lsh_label       per-example, LSH-Label (tables queried with w_y of the target)
  lsh_shared      batch-shared: tfs.random.lsh_candidate_sampler as a drop-in
                  sampled_values for tf.nn.sampled_softmax_loss

Run:
  python examples/compare_samplers.py
  python examples/compare_samplers.py --objectives=full,log_uniform,kernel \
      --num_sampled=64 --seeds=0,1,2
Writes curves.csv, summary.csv and val_ce.png to --output_dir.
"""

import csv
import os
import time

from absl import app
from absl import flags
import keras
import matplotlib
import numpy as np
import tensorflow as tf

import tf_sampled as tfs

matplotlib.use("Agg")  # write files, no display needed
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

OBJECTIVES = ("full", "uniform", "log_uniform", "unigram", "kernel",
              "kernel_shared", "kernel_fourier", "kernel_moments", "lsh", "lsh_label",
              "lsh_shared")
LSH_OBJECTIVES = ("lsh", "lsh_label", "lsh_shared")
EMBED_DIM, HIDDEN_DIM, MAX_LEN = 64, 128, 32

FLAGS = flags.FLAGS
flags.DEFINE_list("objectives", "full,log_uniform,uniform,kernel,kernel_shared",
                  f"Objectives to compare, from {', '.join(OBJECTIVES)}.")
flags.DEFINE_integer("num_sampled", 16, "Negatives per step (S).")
flags.DEFINE_integer("steps", 1200, "Training steps per objective.")
flags.DEFINE_integer("batch_size", 256, "Batch size.")
flags.DEFINE_float("learning_rate", 2e-3, "Adam learning rate.")
flags.DEFINE_integer("eval_every", 100, "Evaluate every this many steps.")
flags.DEFINE_list("seeds", "0", "Seeds (model init, data order, sampler); "
                  "results are averaged over them.")
flags.DEFINE_string("output_dir", "/tmp/tf_sampled_compare",
                    "Where to write curves.csv, summary.csv and val_ce.png.")
flags.DEFINE_integer("leaf_size", None, "Kernel sampler: classes per tree leaf "
                     "(default: the sampler's default).")
flags.DEFINE_integer("num_features", 128, "Kernel sampler: random features.")
flags.DEFINE_integer("refresh_every", 10, "Kernel sampler: rebuild the tree "
                     "from the current W, b every this many steps (LSH sampler: the "
                     "hash tables from W).")
flags.DEFINE_integer("lsh_num_tables", 16, "LSH sampler: tables L.")
flags.DEFINE_integer("lsh_num_hashes", None, "LSH sampler: hashes per table K "
                     "(default: buckets half full on average).")
flags.DEFINE_integer("lsh_bucket_size", 64, "LSH sampler: slots per bucket.")
flags.DEFINE_integer("lsh_rehash_every", 500, "LSH sampler: new hash functions every "
                     "this many steps (a multiple of --refresh_every; the paper's "
                     "128,000 examples are 500 steps of 256).")


def lsh_loss_fn(objective, W, b, num_sampled, seed, options):
    """(loss_fn, LSHSampler) for the lsh* objectives; options: LSHSampler kwargs."""
    num_classes = int(W.shape[0])
    sampler = tfs.samplers.LSHSampler(
        W, query="label" if objective == "lsh_label" else "embedding", seed=seed, **options)
    if objective == "lsh_shared":
        def lsh_shared_loss(h, labels):
            # Drop-in replacement for tf.random.*_candidate_sampler.
            true = labels[:, None]
            sampled = tfs.random.lsh_candidate_sampler(
                true, 1, num_sampled, True, num_classes, seed=seed, inputs=h, sampler=sampler)
            return tf.nn.sampled_softmax_loss(W, b, true, h, num_sampled, num_classes,
                                              sampled_values=sampled)
        return lsh_shared_loss, sampler

    def lsh_loss(h, labels):
        true = labels[:, None]
        candidates = sampler.sample(h, num_sampled, true_classes=true, seed=seed)
        return tfs.nn.sampled_softmax_loss(W, b, true, h, candidates)
    return lsh_loss, sampler


def make_loss_fn(objective, W, b, num_sampled, class_counts, seed, leaf_size,
                 num_features, lsh_options=None):
    """Returns (loss_fn(h, labels) -> [B] losses, sampler or None)."""
    num_classes = int(W.shape[0])

    def tf_nn_loss(candidate_sampler, **kwargs):
        def loss_fn(h, labels):
            true = labels[:, None]
            sampled = candidate_sampler(true, 1, num_sampled, True, num_classes,
                                        seed=seed, **kwargs)
            return tf.nn.sampled_softmax_loss(W, b, true, h, num_sampled,
                                              num_classes, sampled_values=sampled)
        return loss_fn

    if objective == "full":
        def full_loss(h, labels):
            logits = tf.matmul(h, W, transpose_b=True) + b
            return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        return full_loss, None
    if objective == "uniform":
        return tf_nn_loss(tf.random.uniform_candidate_sampler), None
    if objective == "log_uniform":
        return tf_nn_loss(tf.random.log_uniform_candidate_sampler), None
    if objective == "unigram":
        return tf_nn_loss(tf.random.fixed_unigram_candidate_sampler,
                          unigrams=class_counts.tolist()), None

    if objective in LSH_OBJECTIVES:
        return lsh_loss_fn(objective, W, b, num_sampled, seed, lsh_options or {})

    if objective == "kernel_fourier":
        feature_map = tfs.features.RandomFourier(num_features=num_features,
                                                 temperature=1.0, seed=seed)
    elif objective == "kernel_moments":
        feature_map = tfs.features.GaussianMoments()
    else:
        feature_map = tfs.features.PositiveRandom(num_features=num_features,
                                                  temperature=1.0, seed=seed)
    leaf_kwargs = {} if leaf_size is None else {"leaf_size": leaf_size}
    sampler = tfs.samplers.KernelSampler(W, feature_map=feature_map, biases=b,
                                         **leaf_kwargs)
    if objective in ("kernel", "kernel_fourier", "kernel_moments"):
        def kernel_loss(h, labels):
            # Per-example negatives drawn from (an approximation of) each example's
            # own softmax; the sampler's ops have no gradient.
            true = labels[:, None]
            candidates = sampler.sample(h, num_sampled, true_classes=true, seed=seed)
            return tfs.nn.sampled_softmax_loss(W, b, true, h, candidates)
        return kernel_loss, sampler
    if objective == "kernel_shared":
        def kernel_shared_loss(h, labels):
            # Drop-in replacement for tf.random.*_candidate_sampler.
            true = labels[:, None]
            sampled = tfs.random.kernel_candidate_sampler(
                true, 1, num_sampled, True, num_classes, seed=seed, inputs=h,
                sampler=sampler)
            return tf.nn.sampled_softmax_loss(W, b, true, h, num_sampled,
                                              num_classes, sampled_values=sampled)
        return kernel_shared_loss, sampler
    raise ValueError(f"Unknown objective {objective!r}; choose from {OBJECTIVES}.")


def build_model(data, seed, learning_rate=2e-3):
    """(encoder, W, b, trainable variables, Adam optimizer) of one run."""
    keras.utils.set_random_seed(seed)  # Python, NumPy and TensorFlow seeds.
    encoder = keras.Sequential([
        keras.layers.Embedding(data.vocab_size, EMBED_DIM, mask_zero=True),
        keras.layers.GlobalAveragePooling1D(),  # mean over the non-pad tokens
        keras.layers.Dense(HIDDEN_DIM, activation="tanh"),
    ])
    encoder.build((None, MAX_LEN))
    init = keras.initializers.TruncatedNormal(stddev=HIDDEN_DIM**-0.5, seed=seed)
    W = tf.Variable(init((data.num_classes, HIDDEN_DIM)), name="class_embeddings")
    b = tf.Variable(tf.zeros([data.num_classes]), name="class_biases")
    variables = encoder.trainable_variables + [W, b]
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(variables)
    return encoder, W, b, variables, optimizer


def make_train_step(loss_fn, encoder, variables, optimizer):
    """A tf.function (x, y) -> mean loss that applies one optimizer step."""
    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(loss_fn(encoder(x, training=True), y))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss
    return train_step


def train_one(objective, data, seed, steps, batch_size, eval_every, num_sampled,
              learning_rate=2e-3, leaf_size=None, num_features=128,
              refresh_every=10, eval_batch=4096, lsh_options=None):
    """Trains one model; returns a list of evaluation records (dicts).

    lsh_options: LSHSampler keyword arguments for the lsh* objectives (the
    tables are rebuilt every `refresh_every` steps, as the kernel tree is).
    """
    encoder, W, b, variables, optimizer = build_model(data, seed, learning_rate)
    lsh_options = dict(lsh_options or {}, rebuild_every=refresh_every)
    loss_fn, sampler = make_loss_fn(objective, W, b, num_sampled,
                                    data.class_counts, seed, leaf_size,
                                    num_features, lsh_options)
    is_lsh = isinstance(sampler, tfs.samplers.LSHSampler)

    if is_lsh:
        print(f"[{objective:>14s} seed {seed}] LSHSampler: {sampler.family}, L "
              f"{sampler.num_tables}, K {sampler.num_hashes}, bucket size "
              f"{sampler.bucket_size}, query {sampler.query}; rebuild every "
              f"{refresh_every} steps, new hashes every {sampler.rehash_every}", flush=True)
    elif sampler is not None:
        print(f"[{objective:>14s} seed {seed}] KernelSampler: leaf_size "
              f"{sampler.leaf_size}, {sampler.feature_map!r}, full refresh every "
              f"{refresh_every} steps", flush=True)
    train_step = make_train_step(loss_fn, encoder, variables, optimizer)

    @tf.function
    def refresh(step):
        if is_lsh:
            sampler.maintain(step)  # rebuild, or new hash functions on their schedule
        else:
            sampler.refresh()

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32),
                                   tf.TensorSpec([None], tf.int64)])
    def eval_batch_fn(x, y):
        logits = tf.matmul(encoder(x), W, transpose_b=True) + b  # full softmax
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)
        true_logit = tf.gather(logits, y, batch_dims=1)
        rank = tf.reduce_sum(tf.cast(logits > true_logit[:, None], tf.int32), 1)
        return tf.reduce_sum(ce), tf.reduce_sum(tf.cast(rank < 1, tf.float32)), \
            tf.reduce_sum(tf.cast(rank < 5, tf.float32))

    def evaluate():
        total = np.zeros(3)
        for i in range(0, len(data.y_val), eval_batch):
            total += [float(t) for t in eval_batch_fn(data.x_val[i:i + eval_batch],
                                                      data.y_val[i:i + eval_batch])]
        return total / len(data.y_val)

    dataset = (tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
               .shuffle(len(data.y_train), seed=seed).repeat()
               .batch(batch_size, drop_remainder=True).prefetch(2))
    batches = iter(dataset)
    # Trace before timing so that ms/step measures steps, not tracing.
    train_step.get_concrete_function(*dataset.element_spec)
    if sampler is not None:
        refresh.get_concrete_function(tf.TensorSpec([], tf.int64))

    records, train_time, loss_sum, loss_n = [], 0.0, 0.0, 0
    for step in range(1, steps + 1):
        x, y = next(batches)
        start = time.perf_counter()
        if sampler is not None and step > 1 and (step - 1) % refresh_every == 0:
            refresh(tf.constant(step - 1, tf.int64))  # full rebuild from the current W, b
        loss_sum += float(train_step(x, y))
        train_time += time.perf_counter() - start
        loss_n += 1
        if step % eval_every == 0 or step == steps:
            val_ce, top1, top5 = evaluate()
            records.append(dict(objective=objective, seed=seed, step=step,
                                train_time_s=train_time, train_loss=loss_sum / loss_n,
                                val_ce=val_ce, top1=top1, top5=top5))
            print(f"[{objective:>14s} seed {seed}] step {step:5d}/{steps}  "
                  f"train loss {loss_sum / loss_n:6.3f}  val CE {val_ce:6.3f}  "
                  f"top-1 {top1:6.1%}  top-5 {top5:6.1%}  "
                  f"{train_time:6.1f} s ({1e3 * train_time / step:5.1f} ms/step)",
                  flush=True)
            loss_sum, loss_n = 0.0, 0
    return records


def summarize(records, objectives, baseline="log_uniform"):
    """Per objective, curves averaged over seeds and the summary row."""
    curves = {}
    for obj in objectives:
        rows = [r for r in records if r["objective"] == obj]
        steps = sorted({r["step"] for r in rows})
        mean = lambda key, s: float(np.mean([r[key] for r in rows
                                             if r["step"] == s]))
        curves[obj] = {k: np.array([mean(k, s) for s in steps])
                       for k in ("train_time_s", "val_ce", "top1", "top5")}
        curves[obj]["step"] = np.array(steps)
    target = curves[baseline]["val_ce"][-1] if baseline in curves else None
    summary = []
    for obj, c in curves.items():
        reached = (np.nonzero(c["val_ce"] <= target)[0] if target is not None
                   else np.array([], int))
        summary.append(dict(
            objective=obj, val_ce=c["val_ce"][-1], top1=c["top1"][-1],
            top5=c["top5"][-1],
            ms_per_step=1e3 * c["train_time_s"][-1] / c["step"][-1],
            time_to_baseline_s=(c["train_time_s"][reached[0]] if reached.size
                                else float("nan")),
            steps_to_baseline=(int(c["step"][reached[0]]) if reached.size
                               else -1)))
    return curves, summary, target


def write_outputs(records, curves, summary, output_dir, title):
    os.makedirs(output_dir, exist_ok=True)
    for name, rows in (("curves.csv", records), ("summary.csv", summary)):
        with open(os.path.join(output_dir, name), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    fig, (ax_t, ax_s) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for obj, c in curves.items():
        ax_t.plot(c["train_time_s"], c["val_ce"], marker=".", label=obj)
        ax_s.plot(c["step"], c["val_ce"], marker=".", label=obj)
    ax_t.set_xlabel("training wall-clock (s)")
    ax_s.set_xlabel("step")
    ax_t.set_ylabel("validation cross-entropy (full softmax, nats)")
    for ax in (ax_t, ax_s):
        ax.grid(alpha=0.3)
    ax_s.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, "val_ce.png"), dpi=120)
    plt.close(fig)


def run(objectives, seeds, output_dir, num_sampled=16, steps=1200,
        batch_size=256, eval_every=100, learning_rate=2e-3, leaf_size=None,
        num_features=128, refresh_every=10, data=None, lsh_options=None):
    """Trains every objective for every seed, prints the table, writes outputs."""
    for obj in objectives:
        if obj not in OBJECTIVES:
            raise ValueError(f"Unknown objective {obj!r}; choose from {OBJECTIVES}.")
    if data is None:
        data = tfs.datasets.load_wordnet(max_len=MAX_LEN)
    print(f"WordNet definition -> parent: {len(data.y_train)} train, "
          f"{len(data.y_val)} val, {data.num_classes} classes, vocabulary "
          f"{data.vocab_size}; S={num_sampled}, batch {batch_size}, {steps} steps, "
          f"seeds {seeds}", flush=True)
    records = []
    for obj in objectives:
        for seed in seeds:
            records += train_one(obj, data, seed, steps, batch_size, eval_every,
                                 num_sampled, learning_rate, leaf_size, num_features,
                                 refresh_every, lsh_options=lsh_options)
    curves, summary, target = summarize(records, objectives)

    target_txt = f"{target:.3f}" if target is not None else "n/a"
    print(f"\nResults (mean over seeds {seeds}; S={num_sampled}; time to reach "
          f"log_uniform's final val CE {target_txt}):")
    print(f"| {'objective':<14} | val CE | top-1 | top-5 | ms/step "
          f"| time to log_uniform's CE |")
    print(f"|{'-' * 16}|--------|-------|-------|---------|{'-' * 26}|")
    for s in summary:
        if target is None:
            reach = "n/a"
        elif s["steps_to_baseline"] < 0:
            reach = "not reached"
        else:
            reach = f"{s['time_to_baseline_s']:.1f} s (step {s['steps_to_baseline']})"
        print(f"| {s['objective']:<14} | {s['val_ce']:6.3f} | {s['top1']:5.1%} "
              f"| {s['top5']:5.1%} | {s['ms_per_step']:7.1f} | {reach:>24} |")
    write_outputs(records, curves, summary, output_dir,
                  f"WordNet, {data.num_classes} classes, S={num_sampled}, "
                  f"batch {batch_size}, seeds {seeds}")
    print(f"\nWrote curves.csv, summary.csv and val_ce.png to {output_dir}")
    return summary


def main(argv):
    del argv
    run(FLAGS.objectives, [int(s) for s in FLAGS.seeds], FLAGS.output_dir,
        num_sampled=FLAGS.num_sampled, steps=FLAGS.steps,
        batch_size=FLAGS.batch_size, eval_every=FLAGS.eval_every,
        learning_rate=FLAGS.learning_rate, leaf_size=FLAGS.leaf_size,
        num_features=FLAGS.num_features, refresh_every=FLAGS.refresh_every,
        lsh_options=dict(num_tables=FLAGS.lsh_num_tables, num_hashes=FLAGS.lsh_num_hashes,
                         bucket_size=FLAGS.lsh_bucket_size,
                         rehash_every=FLAGS.lsh_rehash_every))


if __name__ == "__main__":
    app.run(main)
