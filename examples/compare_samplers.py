"""Compares sampled-softmax objectives at equal wall-clock on a real task.

Every objective (full softmax; the package's SampledSoftmax layer with its
defaults; tf.nn.sampled_softmax_loss with TensorFlow's uniform, log-uniform
and unigram samplers; tf_sampled's kernel samplers with
each feature map, per-example and batch-shared; the LSH sampler; the
adversarial auxiliary-model sampler; negative sampling with uniform, unigram and
adversarial noise; see sampler_objectives.py) trains the same model with the
same optimizer and seed, each with its own number of negatives S
(`log_uniform@1024`, `kernel@16`) and the same training-time budget. The
objectives train in interleaved rounds (--round_steps), so that load on a
shared machine slows all of them alike. At regular intervals of training
time (and steps) each is evaluated on the full softmax: validation
cross-entropy (and perplexity for language models), top-1 and top-5
accuracy. Objectives trained by negative sampling are scored by logits +
log p_n(y|x) over all classes (Bamler & Mandt, Thm. 1).

The target is the final validation CE of the best built-in configuration
(TensorFlow's samplers at any S; --sweep tries log-uniform and unigram at S
from 16 to 4096). The table gives every objective's CE at the budget, its
ms/step, and its time to reach the target on its seed-mean curve, also as a
ratio to the best built-in's own time. It writes curves.csv, summary.csv and
val_ce.png (validation loss against wall-clock and steps, the target drawn).

Datasets (--dataset, tf_sampled.datasets): wordnet (bundled, the default:
definition -> parent concept, 20,206 classes), gcide (language model on
Debian's dict-gcide, --vocab_size words), lm1b and movielens (TensorFlow
Datasets, need a network), synthetic (Zipfian teacher, --num_classes).

Run:
  python examples/compare_samplers.py            # the main job, 60 s per objective
  python examples/compare_samplers.py --sweep --objectives=full,kernel@16,kernel@64 \\
      --time_budget_s=120 --seeds=0,1,2
  python examples/compare_samplers.py --dataset=gcide --optimizer=lazy_adam \\
      --objectives=full,log_uniform@1024,kernel@16 --time_budget_s=600
"""

import dataclasses
import gc
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
                                OPTIMIZERS, STUDY_OBJECTIVES, SWEEP, build_model, head_options,
                                make_loss_fn, make_train_step, noise_correction,
                                parse_objective)
import tf_sampled as tfs

FLAGS = flags.FLAGS
# The main job: TensorFlow's log-uniform sampler at a small and at a large S
# (nearly free: shared negatives are one matmul), the package's Keras layer
# as users get it (SampledSoftmax(num_classes)), its per-example kernel
# sampler at small S and its drop-in at the large S, full softmax.
DEFAULT_OBJECTIVES = ["full", "log_uniform@16", "log_uniform@1024", "layer", "kernel@16",
                      "kernel@64", "kernel_shared@1024"]
flags.DEFINE_enum("dataset", "wordnet", list(tfs.datasets.LOADERS), "Task to train on.")
flags.DEFINE_list("objectives", DEFAULT_OBJECTIVES,
                  f"Objectives to compare, each `name` or `name@S` (its negatives per "
                  f"example), from {', '.join(OBJECTIVES)}.")
flags.DEFINE_integer("num_sampled", 16, "S of the objectives given without @S.")
flags.DEFINE_bool("sweep", False, "Also train TensorFlow's log-uniform and unigram "
                  f"samplers at every S of {', '.join(s.split('@')[1] for s in SWEEP[:5])} "
                  "(below the class count): the best built-in configuration at the budget "
                  "sets the target.")
flags.DEFINE_integer("steps", 0, "Training steps per objective (0: no limit, "
                     "then --time_budget_s ends training).")
flags.DEFINE_float("time_budget_s", 60, "Training seconds per objective and seed, the "
                   "same for every objective (0: no limit); evaluation time is not counted.")
flags.DEFINE_integer("round_steps", 10, "Objectives train in interleaved rounds of this "
                     "many steps, so load on the machine slows them alike (0: one after "
                     "the other, one model in memory at a time).")
flags.DEFINE_integer("batch_size", 256, "Batch size.")
flags.DEFINE_enum("optimizer", "adam", list(OPTIMIZERS), "adam: Keras' Adam (updates "
                  "every class row each step); lazy_adam: only the touched rows "
                  "(use it at 100k+ classes).")
flags.DEFINE_float("learning_rate", 2e-3, "Learning rate.")
flags.DEFINE_integer("eval_every", 0, "Evaluate every this many steps (0: never by steps).")
flags.DEFINE_float("eval_every_s", 10, "... and every this many seconds of training.")
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
    num_sampled: int = 16  # S of objectives named without @S
    steps: int = 1200  # 0: until time_budget_s
    time_budget_s: float = 0.0  # 0: until steps
    round_steps: int = 10  # interleaved rounds; 0: one objective after the other
    sweep: bool = False  # add log-uniform and unigram at every S of SWEEP
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


class Trainer:
    """One objective and seed: its model, sampler and training state.

    `train(max_steps)` advances it by a round of steps, evaluating when due,
    so that the objectives of a comparison can train in interleaved rounds:
    then load on a shared machine slows all of them alike, and their
    wall-clock ratios are not artefacts of when each ran.
    """

    def __init__(self, objective, data, seed, config):
        self.objective, self.seed, self.config = objective, seed, config
        self.language_model = data.language_model
        encoder, head, W, b, variables, optimizer = build_model(
            data, seed, config.learning_rate, config.optimizer,
            head_options(objective.name, objective.num_sampled, data.class_counts, seed,
                         config.leaf_size, config.num_features, config.refresh_every))
        lsh_options = dict(config.lsh_options, rebuild_every=config.refresh_every)
        self.tag = f"[{objective.label:>23s} seed {seed}]"
        aux_features, fit_start = None, time.perf_counter()
        if objective.name in ADVERSARIAL_OBJECTIVES:
            # Bamler & Mandt fit the auxiliary model once, on features of the
            # inputs that training does not change: here a frozen copy of the
            # initialised encoder (a fixed random featurisation of the tokens).
            frozen = keras.models.clone_model(encoder)
            frozen.set_weights(encoder.get_weights())
            frozen.trainable = False
            aux_features = (frozen, data.x_train, data.y_train)
        loss_fn, sampler = make_loss_fn(objective.name, W, b, objective.num_sampled,
                                        data.class_counts, seed, config.leaf_size,
                                        config.num_features, lsh_options, aux_features,
                                        config.batch_size, head)
        self.is_lsh = isinstance(sampler, tfs.samplers.LSHSampler)
        # Only the samplers built from the class table follow it; the fitted
        # auxiliary tree and the input-free noise are fixed. The layer keeps
        # its own sampler up to date (on the same schedule).
        self.by_layer = hasattr(loss_fn, "update_sampler")
        self.refreshed = not self.by_layer and (
            self.is_lsh or isinstance(sampler, tfs.samplers.KernelSampler) or
            objective.name in STUDY_OBJECTIVES)
        if aux_features is not None:
            print(f"{self.tag} AdversarialSampler: auxiliary tree fitted on "
                  f"{len(data.y_train)} frozen-encoder features in "
                  f"{time.perf_counter() - fit_start:.1f} s (not counted in the training "
                  f"time)", flush=True)
        elif self.is_lsh:
            print(f"{self.tag} LSHSampler: {sampler.family}, L {sampler.num_tables}, K "
                  f"{sampler.num_hashes}, bucket size {sampler.bucket_size}, query "
                  f"{sampler.query}; rebuild every {config.refresh_every} steps, new hashes "
                  f"every {sampler.rehash_every}", flush=True)
        elif objective.name in STUDY_OBJECTIVES:
            print(f"{self.tag} {sampler!r}, refresh every {config.refresh_every} steps",
                  flush=True)
        elif isinstance(sampler, tfs.samplers.KernelSampler):
            print(f"{self.tag} KernelSampler: leaf_size {sampler.leaf_size}, "
                  f"{sampler.feature_map!r}, prior_weight {sampler.prior_weight}, full "
                  f"refresh every {config.refresh_every} steps"
                  f"{' (by the SampledSoftmax layer)' if self.by_layer else ''}", flush=True)
        self.train_step = make_train_step(loss_fn, encoder, variables, optimizer,
                                          data.x_train.shape[1])

        @tf.function(input_signature=[tf.TensorSpec([], tf.int64)])
        def refresh(step):
            if self.is_lsh:
                sampler.maintain(step)  # rebuild, or new hash functions, on their schedule
            else:
                sampler.refresh()  # full rebuild from the current W, b
        self.refresh = refresh

        # Negative-sampling objectives are scored by logits + log p_n(y|x); the
        # tree's log p_n reads the frozen features of x, as in training.
        self.evaluate = make_evaluate(data, encoder, W, b, config.eval_examples,
                                      noise_correction(objective.name, sampler),
                                      aux_features[0] if aux_features else None)
        # Trace before timing so that ms/step measures steps, not tracing.
        self.train_step.get_concrete_function()
        if self.refreshed:
            refresh.get_concrete_function()
        self.data_iter = batches(data.x_train, data.y_train, config.batch_size, seed)
        self.records, self.step, self.train_time = [], 0, 0.0
        self.loss_sum, self.loss_n, self.next_eval_s = 0.0, 0, config.eval_every_s

    @property
    def done(self):
        return ((self.config.steps and self.step >= self.config.steps)
                or (self.config.time_budget_s and self.train_time >= self.config.time_budget_s))

    def train(self, max_steps=math.inf):
        """Up to `max_steps` training steps (fewer when the run ends), evaluating when due."""
        config, taken = self.config, 0
        while taken < max_steps and not self.done:
            x, y = next(self.data_iter)
            self.step += 1
            taken += 1
            start = time.perf_counter()
            if self.refreshed and self.step > 1 and \
                    (self.step - 1) % config.refresh_every == 0:
                self.refresh(tf.constant(self.step - 1, tf.int64))
            self.loss_sum += float(self.train_step(x, y))
            self.train_time += time.perf_counter() - start
            self.loss_n += 1
            due = (config.eval_every and self.step % config.eval_every == 0) or \
                (config.eval_every_s and self.train_time >= self.next_eval_s)
            if due or self.done:
                self._record_evaluation()

    def _record_evaluation(self):
        while self.config.eval_every_s and self.next_eval_s <= self.train_time:
            self.next_eval_s += self.config.eval_every_s
        val_ce, top1, top5 = self.evaluate()
        loss = self.loss_sum / self.loss_n
        self.records.append(dict(objective=self.objective.label, seed=self.seed,
                                 step=self.step, train_time_s=self.train_time,
                                 train_loss=loss, val_ce=val_ce, top1=top1, top5=top5))
        ppl = f"  ppl {math.exp(val_ce):8.1f}" if self.language_model else ""
        print(f"{self.tag} step {self.step:6d}  train loss {loss:6.3f}  val CE "
              f"{val_ce:6.3f}{ppl}  top-1 {top1:6.1%}  top-5 {top5:6.1%}  "
              f"{self.train_time:7.1f} s ({1e3 * self.train_time / self.step:6.1f} ms/step)",
              flush=True)
        self.loss_sum, self.loss_n = 0.0, 0


def train_seed(objectives, data, seed, config):
    """Trains every objective with one seed; returns their evaluation records (dicts).

    With config.round_steps > 0 the objectives take turns, round_steps steps
    each (all models live at once); with 0, one trains to its end after the
    other (one model at a time, for tables too large to hold several).
    """
    if not config.round_steps:
        records = []
        for objective in objectives:
            trainer = Trainer(objective, data, seed, config)
            trainer.train()
            records += trainer.records
            # The trainer's functions refer back to it: free its model (GBs at
            # 1M+ classes) before the next one is built, not at some later GC.
            del trainer
            gc.collect()
        return records
    trainers = [Trainer(objective, data, seed, config) for objective in objectives]
    while not all(t.done for t in trainers):
        for trainer in trainers:
            trainer.train(config.round_steps)
    return [r for t in trainers for r in t.records]


def run(objectives, seeds, output_dir, data, config):
    """Trains every objective for every seed, prints the table, writes the outputs.

    Args:
      objectives: `name` or `name@S` strings (sampler_objectives.parse_objective;
        S defaults to config.num_sampled).
      seeds: ints.
      output_dir: where curves.csv, summary.csv and val_ce.png go.
      data: a TaskData.
      config: a RunConfig.

    Returns the summary rows (one dict per objective, see compare_report.summarize).
    """
    if not (config.steps or config.time_budget_s):
        raise ValueError("Set steps or time_budget_s (or both): training must end.")
    specs = [parse_objective(o, config.num_sampled, data.num_classes) for o in objectives]
    if config.sweep:
        specs += [parse_objective(o, 0, data.num_classes) for o in SWEEP
                  if int(o.split("@")[1]) < data.num_classes]
    specs = list(dict.fromkeys(specs))  # once each, in order
    labels = [s.label for s in specs]
    builtins = [s.label for s in specs if s.builtin]
    limit = " and ".join(filter(None, [config.steps and f"{config.steps} steps",
                                       config.time_budget_s and
                                       f"{config.time_budget_s:g} s of training"]))
    print(f"{data.description}: {len(data.y_train)} train, {len(data.y_val)} val "
          f"examples, input vocabulary {data.vocab_size}; objectives {', '.join(labels)}; "
          f"batch {config.batch_size}, {config.optimizer}, {limit} each, seeds {seeds}",
          flush=True)
    records = []
    for seed in seeds:
        records += train_seed(specs, data, seed, config)
    summary, target, best = compare_report.summarize(records, labels, builtins)
    print(f"\nResults (mean over seeds {seeds}; {limit} per objective; full-softmax "
          f"validation metrics on {min(config.eval_examples, len(data.y_val))} examples):")
    print(compare_report.format_table(summary, target, best, data.language_model))
    compare_report.write_outputs(
        records, summary, output_dir, target, best,
        f"{data.description}, batch {config.batch_size}, {limit}, seeds {seeds}")
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
        round_steps=FLAGS.round_steps, sweep=FLAGS.sweep,
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
