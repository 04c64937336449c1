"""Compares sampled-softmax objectives against full softmax on a real task.

Every objective (full softmax; tf.nn.sampled_softmax_loss with TensorFlow's
uniform, log-uniform and unigram samplers; tf_sampled's kernel samplers with
each feature map, per-example and batch-shared; the LSH sampler; the
adversarial auxiliary-model sampler; negative sampling with uniform, unigram and
adversarial noise; see sampler_objectives.py) trains the same model with the
same optimizer and seed. At regular intervals of training time (and steps) it
is evaluated on the full softmax: validation cross-entropy (and perplexity for
language models), top-1 and top-5 accuracy. Objectives trained by negative
sampling are scored by logits + log p_n(y|x) over all classes (Bamler & Mandt,
Thm. 1). Then it prints a table (final metrics, ms per step, time
to reach log-uniform's final validation loss) and writes curves.csv,
summary.csv and val_ce.png (validation loss against wall-clock and steps).

Datasets (--dataset, tf_sampled.datasets): wordnet (bundled, the default:
definition -> parent concept, 20,206 classes), gcide (language model on
Debian's dict-gcide, --vocab_size words), lm1b and movielens (TensorFlow
Datasets, need a network), synthetic (Zipfian teacher, --num_classes).

Run:
  python examples/compare_samplers.py
  python examples/compare_samplers.py --objectives=full,log_uniform,kernel \\
      --num_sampled=64 --seeds=0,1,2
  python examples/compare_samplers.py --dataset=gcide --optimizer=lazy_adam \\
      --objectives=full,log_uniform,kernel --time_budget_s=600 --steps=0
"""

import dataclasses
import math
import time
from typing import Optional

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

import compare_report
from sampler_objectives import (ADVERSARIAL_OBJECTIVES, MAX_LEN, OBJECTIVES,  # noqa: F401
                                OPTIMIZERS, build_model, make_loss_fn, make_train_step,
                                noise_correction)
import tf_sampled as tfs

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "wordnet", list(tfs.datasets.LOADERS), "Task to train on.")
flags.DEFINE_list("objectives", "full,log_uniform,uniform,kernel,kernel_shared",
                  f"Objectives to compare, from {', '.join(OBJECTIVES)}.")
flags.DEFINE_integer("num_sampled", 16, "Negatives per step (S).")
flags.DEFINE_integer("steps", 1200, "Training steps per objective (0: no limit, "
                     "then --time_budget_s ends training).")
flags.DEFINE_float("time_budget_s", 0, "Training seconds per objective and seed "
                   "(0: no limit); evaluation time is not counted.")
flags.DEFINE_integer("batch_size", 256, "Batch size.")
flags.DEFINE_enum("optimizer", "adam", list(OPTIMIZERS), "adam: Keras' Adam (updates "
                  "every class row each step); lazy_adam: only the touched rows "
                  "(use it at 100k+ classes).")
flags.DEFINE_float("learning_rate", 2e-3, "Learning rate.")
flags.DEFINE_integer("eval_every", 100, "Evaluate every this many steps (0: never by steps).")
flags.DEFINE_float("eval_every_s", 30, "... and every this many seconds of training.")
flags.DEFINE_integer("eval_examples", 10000, "Validation examples evaluated (a fixed "
                     "random subset when the split is larger).")
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
flags.DEFINE_integer("context", 6, "gcide, lm1b: words of context per example.")
flags.DEFINE_integer("vocab_size", 100_000, "gcide, lm1b: classes (words).")
flags.DEFINE_integer("num_classes", 1_000_000, "synthetic: classes.")


@dataclasses.dataclass
class RunConfig:
    """Training and evaluation settings shared by every objective of a comparison."""
    num_sampled: int = 16
    steps: int = 1200  # 0: until time_budget_s
    time_budget_s: float = 0.0  # 0: until steps
    batch_size: int = 256
    optimizer: str = "adam"
    learning_rate: float = 2e-3
    eval_every: int = 100
    eval_every_s: float = 30.0
    eval_examples: int = 10000
    leaf_size: Optional[int] = None
    num_features: int = 128
    refresh_every: int = 10
    lsh_options: dict = dataclasses.field(default_factory=dict)


def batches(x, y, batch_size, seed):
    """Endless shuffled (x, y) batches, a new permutation every epoch (numpy indexing)."""
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(len(y))
        for i in range(0, len(perm) - batch_size + 1, batch_size):
            idx = perm[i:i + batch_size]
            yield x[idx], y[idx]


def make_evaluate(data, encoder, W, b, num_examples, correction=None, featurize=None):
    """() -> (val CE, top-1, top-5) of the full softmax on a fixed validation subset.

    Args:
      data: a TaskData (x_val, y_val, num_classes are read).
      encoder: x -> h [batch, dim].
      W, b: the class table and biases.
      num_examples: validation examples (a fixed random subset when fewer
        than the split).
      correction: a `NoiseCorrection` whose log p_n(y|x) is added to every
        class's logit (negative-sampling objectives), or None.
      featurize: the correction's query, x -> [batch, k] (the adversarial
        tree's frozen features); None: it is queried with h.
    """
    n = len(data.y_val)
    idx = np.sort(np.random.default_rng(0).choice(n, num_examples, replace=False)) \
        if num_examples < n else np.arange(n)
    x_val, y_val = data.x_val[idx], data.y_val[idx]
    # Rows per batch so that a chunk of logits stays near 64 MB at any class count.
    rows = int(np.clip(2**24 // min(data.num_classes, 16384), 16, 4096))

    @tf.function(input_signature=[tf.TensorSpec([None, x_val.shape[1]], tf.int32),
                                  tf.TensorSpec([None], tf.int64)])
    def stats(x, y):
        chunks = correction
        if correction is not None and featurize is not None:
            chunks = correction.queried_with(featurize(x))
        ce, rank = tfs.layers.full_softmax_stats(W, b, y, encoder(x), chunk_size=16384,
                                                 chunks=chunks)
        return tf.reduce_sum(ce), tf.reduce_sum(tf.cast(rank < 1, tf.float32)), \
            tf.reduce_sum(tf.cast(rank < 5, tf.float32))

    def evaluate():
        total = np.zeros(3)
        for i in range(0, len(y_val), rows):
            total += [float(t) for t in stats(x_val[i:i + rows], y_val[i:i + rows])]
        return total / len(y_val)
    return evaluate


def train_one(objective, data, seed, config):
    """Trains one model on `data` (a TaskData); returns its evaluation records (dicts)."""
    encoder, W, b, variables, optimizer = build_model(
        data, seed, config.learning_rate, config.optimizer)
    lsh_options = dict(config.lsh_options, rebuild_every=config.refresh_every)
    tag = f"[{objective:>23s} seed {seed}]"
    aux_features, fit_start = None, time.perf_counter()
    if objective in ADVERSARIAL_OBJECTIVES:
        # Bamler & Mandt fit the auxiliary model once, on features of the
        # inputs that training does not change: here a frozen copy of the
        # initialised encoder (a fixed random featurisation of the tokens).
        frozen = keras.models.clone_model(encoder)
        frozen.set_weights(encoder.get_weights())
        frozen.trainable = False
        aux_features = (frozen, data.x_train, data.y_train)
    loss_fn, sampler = make_loss_fn(objective, W, b, config.num_sampled, data.class_counts,
                                    seed, config.leaf_size, config.num_features, lsh_options,
                                    aux_features)
    is_lsh = isinstance(sampler, tfs.samplers.LSHSampler)
    # Only the samplers built from the class table follow it; the fitted
    # auxiliary tree and the input-free noise are fixed.
    refreshed = is_lsh or isinstance(sampler, tfs.samplers.KernelSampler)
    if aux_features is not None:
        print(f"{tag} AdversarialSampler: auxiliary tree fitted on {len(data.y_train)} "
              f"frozen-encoder features in {time.perf_counter() - fit_start:.1f} s (not "
              f"counted in the training time)", flush=True)
    elif is_lsh:
        print(f"{tag} LSHSampler: {sampler.family}, L {sampler.num_tables}, K "
              f"{sampler.num_hashes}, bucket size {sampler.bucket_size}, query "
              f"{sampler.query}; rebuild every {config.refresh_every} steps, new hashes "
              f"every {sampler.rehash_every}", flush=True)
    elif refreshed:
        print(f"{tag} KernelSampler: leaf_size {sampler.leaf_size}, "
              f"{sampler.feature_map!r}, full refresh every {config.refresh_every} steps",
              flush=True)
    train_step = make_train_step(loss_fn, encoder, variables, optimizer,
                                 data.x_train.shape[1])

    @tf.function(input_signature=[tf.TensorSpec([], tf.int64)])
    def refresh(step):
        if is_lsh:
            sampler.maintain(step)  # rebuild, or new hash functions, on their schedule
        else:
            sampler.refresh()  # full rebuild from the current W, b

    # Negative-sampling objectives are scored by logits + log p_n(y|x); the
    # tree's log p_n reads the frozen features of x, as in training.
    evaluate = make_evaluate(data, encoder, W, b, config.eval_examples,
                             noise_correction(objective, sampler),
                             aux_features[0] if aux_features else None)
    # Trace before timing so that ms/step measures steps, not tracing.
    train_step.get_concrete_function()
    if refreshed:
        refresh.get_concrete_function()

    steps = config.steps or math.inf
    budget = config.time_budget_s or math.inf
    records, train_time, loss_sum, loss_n, next_eval_s = [], 0.0, 0.0, 0, config.eval_every_s
    data_iter = batches(data.x_train, data.y_train, config.batch_size, seed)
    step = 0
    while step < steps and train_time < budget:
        x, y = next(data_iter)
        step += 1
        start = time.perf_counter()
        if refreshed and step > 1 and (step - 1) % config.refresh_every == 0:
            refresh(tf.constant(step - 1, tf.int64))
        loss_sum += float(train_step(x, y))
        train_time += time.perf_counter() - start
        loss_n += 1
        due = (config.eval_every and step % config.eval_every == 0) or \
            (config.eval_every_s and train_time >= next_eval_s)
        if due or step >= steps or train_time >= budget:
            while config.eval_every_s and next_eval_s <= train_time:
                next_eval_s += config.eval_every_s
            val_ce, top1, top5 = evaluate()
            records.append(dict(objective=objective, seed=seed, step=step,
                                train_time_s=train_time, train_loss=loss_sum / loss_n,
                                val_ce=val_ce, top1=top1, top5=top5))
            ppl = f"  ppl {math.exp(val_ce):8.1f}" if data.language_model else ""
            print(f"{tag} step {step:6d}  train loss {loss_sum / loss_n:6.3f}  val CE "
                  f"{val_ce:6.3f}{ppl}  top-1 {top1:6.1%}  top-5 {top5:6.1%}  "
                  f"{train_time:7.1f} s ({1e3 * train_time / step:6.1f} ms/step)",
                  flush=True)
            loss_sum, loss_n = 0.0, 0
    return records


def run(objectives, seeds, output_dir, data, config):
    """Trains every objective for every seed, prints the table, writes the outputs.

    Returns the summary rows (one dict per objective, see compare_report.summarize).
    """
    for obj in objectives:
        if obj not in OBJECTIVES:
            raise ValueError(f"Unknown objective {obj!r}; choose from {OBJECTIVES}.")
    if not (config.steps or config.time_budget_s):
        raise ValueError("Set steps or time_budget_s (or both): training must end.")
    limit = " and ".join(filter(None, [config.steps and f"{config.steps} steps",
                                       config.time_budget_s and
                                       f"{config.time_budget_s:g} s of training"]))
    print(f"{data.description}: {len(data.y_train)} train, {len(data.y_val)} val "
          f"examples, input vocabulary {data.vocab_size}; S={config.num_sampled}, batch "
          f"{config.batch_size}, {config.optimizer}, {limit}, seeds {seeds}", flush=True)
    records = []
    for obj in objectives:
        for seed in seeds:
            records += train_one(obj, data, seed, config)
    summary, target = compare_report.summarize(records, objectives)
    print(f"\nResults (mean over seeds {seeds}; S={config.num_sampled}; full-softmax "
          f"validation metrics on {min(config.eval_examples, len(data.y_val))} examples):")
    print(compare_report.format_table(summary, target, data.language_model))
    compare_report.write_outputs(
        records, summary, output_dir,
        f"{data.description}, S={config.num_sampled}, batch {config.batch_size}, "
        f"seeds {seeds}")
    print(f"\nWrote curves.csv, summary.csv and val_ce.png to {output_dir}")
    return summary


def load_data(name):
    """The --dataset task with the flags that apply to it."""
    options = {"wordnet": dict(max_len=MAX_LEN),
               "gcide": dict(vocab_size=FLAGS.vocab_size, context=FLAGS.context),
               "lm1b": dict(vocab_size=FLAGS.vocab_size, context=FLAGS.context),
               "synthetic": dict(num_classes=FLAGS.num_classes)}.get(name, {})
    return tfs.datasets.load(name, **options)


def main(argv):
    del argv
    config = RunConfig(
        num_sampled=FLAGS.num_sampled, steps=FLAGS.steps, time_budget_s=FLAGS.time_budget_s,
        batch_size=FLAGS.batch_size, optimizer=FLAGS.optimizer,
        learning_rate=FLAGS.learning_rate, eval_every=FLAGS.eval_every,
        eval_every_s=FLAGS.eval_every_s, eval_examples=FLAGS.eval_examples,
        leaf_size=FLAGS.leaf_size, num_features=FLAGS.num_features,
        refresh_every=FLAGS.refresh_every,
        lsh_options=dict(num_tables=FLAGS.lsh_num_tables, num_hashes=FLAGS.lsh_num_hashes,
                         bucket_size=FLAGS.lsh_bucket_size,
                         rehash_every=FLAGS.lsh_rehash_every))
    run(FLAGS.objectives, [int(s) for s in FLAGS.seeds], FLAGS.output_dir,
        load_data(FLAGS.dataset), config)


if __name__ == "__main__":
    app.run(main)
