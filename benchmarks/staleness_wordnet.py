"""What a stale kernel sampler costs in quality, and what refreshing it costs in time.

WordNet definition -> parent concept (20,206 classes; tf_sampled.datasets), the
model of examples/sampler_objectives.py (mean of 64-d word embeddings -> Dense(128, tanh))
with a `SampledSoftmax` head (kernel sampler, default features and leaves,
per-example negatives), trained with `SampledSoftmaxModel.fit` for --steps
steps of batch 256 under each optimizer and each refresh policy:

  frozen     the tree keeps the initial table (refresh_touched=False)
  touched    rows the step touched are refreshed (the layer's default)
  touched+N  ... plus a full rebuild every N steps (refresh_every=N)
  full       a full rebuild after every step (the freshest tree; costly)

Reports the validation full-softmax cross-entropy (chunked evaluate) and
fit's ms/step. With a sparse optimizer (SGD, LazyAdam, SparseAdagrad = Adagrad)
the touched rows are the only rows that change, so "touched" is exactly
fresh; with Keras' dense Adam every row moves every step.

Run from the repository root (about 25 minutes on 2 cores):
  python -m benchmarks.staleness_wordnet
  python -m benchmarks.staleness_wordnet --optimizers=adam --policies=frozen,touched
"""
import argparse
import json
import time
import warnings

import keras
import tensorflow as tf

import tf_sampled as tfs

EMBED_DIM, HIDDEN_DIM, MAX_LEN = 64, 128, 32
OPTIMIZERS = {
    "adam": lambda: keras.optimizers.Adam(2e-3),  # dense: moves every row
    "lazy_adam": lambda: tfs.optimizers.LazyAdam(2e-3),
    "adagrad": lambda: tfs.optimizers.SparseAdagrad(2.0),  # = Keras Adagrad's weights
    "sgd": lambda: keras.optimizers.SGD(10.0),
}


def policy_args(policy):
    if policy == "frozen":
        return {"refresh_touched": False}
    if policy == "touched":
        return {}
    if policy.startswith("touched+"):
        return {"refresh_every": int(policy.split("+")[1])}
    if policy == "full":
        return {"refresh_touched": False, "refresh_every": 1}
    raise ValueError(f"unknown policy {policy!r}")


class _StepTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds, self._start = 0.0, 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])  # waits for the step
        self.seconds += time.perf_counter() - self._start


def train_one(data, optimizer, policy, steps, num_sampled, seed):
    keras.utils.set_random_seed(seed)
    tf.random.set_seed(seed)
    tokens = keras.Input([MAX_LEN], dtype="int32")
    x = keras.layers.Embedding(data.vocab_size, EMBED_DIM, mask_zero=True)(tokens)
    x = keras.layers.GlobalAveragePooling1D()(x)
    h = keras.layers.Dense(HIDDEN_DIM, activation="tanh")(x)
    outputs = tfs.layers.SampledSoftmax(data.num_classes, num_sampled=num_sampled,
                                        sampler="kernel", **policy_args(policy))(h)
    model = tfs.layers.SampledSoftmaxModel(tokens, outputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras' Adam densifies: measured on purpose
        model.compile(OPTIMIZERS[optimizer]())
    train = (tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
             .shuffle(len(data.y_train), seed=seed).repeat().batch(256, drop_remainder=True))
    timer = _StepTimer()
    history = model.fit(train, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer])
    result = model.evaluate(data.x_val, data.y_val, batch_size=1024, verbose=0,
                            return_dict=True)
    # The first step includes tracing: leave it out of the per-step time.
    return dict(optimizer=optimizer, policy=policy, steps=steps,
                val_ce=result["loss"], top1=result["top_1_accuracy"],
                train_ess=history.history["sampler_ess"][-1],
                ms_per_step=1e3 * timer.seconds / steps)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizers", default="adam,lazy_adam,adagrad,sgd")
    parser.add_argument("--policies", default="frozen,touched,touched+50,full")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--num_sampled", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    data = tfs.datasets.load_wordnet(max_len=MAX_LEN)
    rows = []
    for optimizer in args.optimizers.split(","):
        for policy in args.policies.split(","):
            row = train_one(data, optimizer, policy, args.steps, args.num_sampled, args.seed)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| optimizer | refresh | val CE | top-1 | ESS/S | ms/step |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['optimizer']} | {r['policy']} | {r['val_ce']:.3f} | {r['top1']:.1%} | "
              f"{r['train_ess']:.3f} | {r['ms_per_step']:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
