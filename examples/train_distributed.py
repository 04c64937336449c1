"""Trains the WordNet task on a cluster with MultiWorkerMirroredStrategy.

Without TF_CONFIG this starts a local cluster: --num_workers processes of
this script on localhost ports, each with its own TF_CONFIG, and prints the
chief's output. With TF_CONFIG set (a real cluster: every machine runs this
script with its own task), it is one worker of that cluster.

The model is the one every objective of examples/compare_samplers.py trains:
mean of word embeddings (64) -> Dense(128, tanh) -> SampledSoftmax over the
20,206 parent concepts, here with per-example kernel-sampler negatives and
LazyAdam, trained by `tfs.distribute.Trainer` (a custom strategy.run loop:
Keras 3's fit fails under MultiWorkerMirroredStrategy). Each worker takes
its share of every global batch; validation is the full softmax over all
classes, in chunks, split over the workers.

Run:
  python examples/train_distributed.py                       # 2 local workers, 300 steps
  python examples/train_distributed.py --num_workers=1 --steps=600
  TF_CONFIG='{"cluster": {"worker": ["host1:2222", "host2:2222"]},
              "task": {"type": "worker", "index": 0}}' \\
      python examples/train_distributed.py --checkpoint_dir=/mnt/nfs/run1   # on host1
  (the same on host2 with "index": 1)
"""
import os
import sys

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_workers", 2, "Local cluster size (when TF_CONFIG is not set).")
flags.DEFINE_integer("steps", 300, "Total optimizer steps (a restored run continues to it).")
flags.DEFINE_integer("batch_size", 256, "Global batch size (split over the workers).")
flags.DEFINE_string("sampler", "kernel", "SampledSoftmax sampler (kernel, log_uniform, lsh, ...).")
flags.DEFINE_integer("num_sampled", 64, "Negatives per example.")
flags.DEFINE_float("learning_rate", 2e-3, "LazyAdam learning rate.")
flags.DEFINE_integer("validation_every", 100, "Steps between full-softmax validations.")
flags.DEFINE_integer("log_every", 50, "Steps between progress lines.")
flags.DEFINE_string("checkpoint_dir", "", "Checkpoints (a directory every worker can read); "
                    "a run restarted with the same directory resumes. Empty: none.")
flags.DEFINE_integer("checkpoint_every", 100, "Steps between checkpoints (with checkpoint_dir).")
flags.DEFINE_float("collective_timeout_s", 300, "Seconds a collective may wait for a peer.")
flags.DEFINE_float("timeout_s", 1800, "Local cluster: kill every worker after this long.")
flags.DEFINE_integer("seed", 0, "Seed of the model, the sampler and the data order (the same "
                                "on every worker).")

EMBED_DIM, HIDDEN_DIM = 64, 128  # as examples/sampler_objectives.py


def launch_local_cluster(argv):
    """Runs this script as every worker of a local cluster; the chief's output shows here."""
    import tf_sampled as tfs  # pylint: disable=import-outside-toplevel
    print(f"Starting a local cluster of {FLAGS.num_workers} workers (TF_CONFIG on localhost "
          f"ports).", flush=True)
    results = tfs.distribute.run_local_cluster(
        [sys.executable, os.path.abspath(__file__), *argv[1:]], FLAGS.num_workers,
        timeout_s=FLAGS.timeout_s, echo_worker=0,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")))
    if not all(r.ok for r in results):
        print(tfs.distribute.describe_failure(results), file=sys.stderr)
        return 1
    return 0


def train():
    """One worker: the strategy first (before any TensorFlow op), then the model."""
    import tf_sampled as tfs  # pylint: disable=import-outside-toplevel
    strategy = tfs.distribute.make_strategy(collective_timeout_s=FLAGS.collective_timeout_s)
    import keras  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    data = tfs.datasets.load_wordnet()
    with strategy.scope():
        keras.utils.set_random_seed(FLAGS.seed)  # the same initial model on every worker
        tokens = keras.Input([data.x_train.shape[1]], dtype="int32")
        h = keras.layers.Embedding(data.vocab_size, EMBED_DIM, mask_zero=True)(tokens)
        h = keras.layers.GlobalAveragePooling1D()(h)
        h = keras.layers.Dense(HIDDEN_DIM, activation="tanh")(h)
        outputs = tfs.layers.SampledSoftmax(data.num_classes, num_sampled=FLAGS.num_sampled,
                                            sampler=FLAGS.sampler, seed=FLAGS.seed)(h)
        model = tfs.layers.SampledSoftmaxModel(tokens, outputs)
        optimizer = tfs.optimizers.LazyAdam(FLAGS.learning_rate)
    trainer = tfs.distribute.Trainer(
        model, optimizer, strategy=strategy, checkpoint_dir=FLAGS.checkpoint_dir or None,
        checkpoint_every=FLAGS.checkpoint_every if FLAGS.checkpoint_dir else None)
    if trainer.is_chief:
        print(f"{data.description}: {len(data.y_train):,} train / {len(data.y_val):,} "
              f"validation examples, {data.num_classes:,} classes; "
              f"{strategy.num_replicas_in_sync} replica(s), global batch {FLAGS.batch_size}",
              flush=True)
    train_batches = (tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
                     .shuffle(len(data.y_train), seed=FLAGS.seed).repeat()
                     .batch(FLAGS.batch_size, drop_remainder=True))
    val_batches = tf.data.Dataset.from_tensor_slices((data.x_val, data.y_val)).batch(512)
    history = trainer.fit(train_batches, FLAGS.steps, validation_data=val_batches,
                          validation_every=FLAGS.validation_every, log_every=FLAGS.log_every)
    if trainer.is_chief:
        final = history["validation"][-1] if history["validation"] else dict(
            step=trainer.step, **trainer.evaluate(val_batches))
        print(f"validation cross-entropy after {final['step']} steps: {final['loss']:.4f} nats "
              f"(perplexity {final['perplexity']:.1f}, top-1 {final['top_1_accuracy']:.3f}, "
              f"top-5 {final['top_5_accuracy']:.3f})", flush=True)
    return 0


def main(argv):
    if not os.environ.get("TF_CONFIG"):
        return launch_local_cluster(argv)
    return train()


if __name__ == "__main__":
    app.run(main)
