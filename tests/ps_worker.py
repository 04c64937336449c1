"""One task of the parameter-server tests' local clusters (chief, worker or ps).

    TF_CONFIG=... python ps_worker.py '{"steps": 60, "out": "/tmp/x", ...}'

Every task runs this program: make_parameter_server_strategy serves on the
worker and ps tasks (they exit once the chief is gone) and returns the
strategy on the chief, which trains a sharded table of NUM_CLASSES x DIM
(one shard per ps task, SparseAdagrad) on a fixed synthetic task and writes
out/result.json: the training history, every update group's applied and
skipped counts and applied step ids, and the final evaluation.

Options (JSON): steps, out, log_every (progress lines "step k/N" on stdout),
batch (examples per step), chief_gone_s, pause_at_step / go_file (the chief
trains to pause_at_step, prints "paused", and waits for go_file to exist
before it trains on), trunk (train a Dense trunk x [B, 8] -> h [B, DIM]
built in strategy.scope(), so on the ps tasks, with the table: batches are
(x, y)), checkpoint_dir / checkpoint_every (the trainer's), num_shards
(default: one per ps task), reference (after the run, train the same model
in this process without a cluster for as many steps and report both runs'
losses and the largest difference of their weights).
"""
import faulthandler
import json
import os
import signal
import sys
import time

import tf_sampled as tfs

faulthandler.register(signal.SIGUSR1)  # a test that finds a task stuck dumps its stacks

OPTIONS = json.loads(sys.argv[1])
strategy = tfs.distribute.make_parameter_server_strategy(
    startup_timeout_s=OPTIONS.get("startup_timeout_s", 60),
    chief_gone_s=OPTIONS.get("chief_gone_s", 2))

import keras  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import tensorflow as tf  # pylint: disable=wrong-import-position

# The coordinator's recovery messages ("Worker ... has been recovered.").
tf.get_logger().setLevel("INFO")

NUM_CLASSES, DIM = 240, 8


def task(n=2048):
    rng = np.random.RandomState(0)
    h = rng.normal(size=(n, DIM)).astype(np.float32)
    y = np.argmax(h @ rng.normal(size=(NUM_CLASSES, DIM)).T, 1).astype(np.int64)
    return h, y


def dataset():
    h, y = task()
    return (tf.data.Dataset.from_tensor_slices((h, y)).shuffle(2048, seed=1).repeat()
            .batch(OPTIONS.get("batch", 32), drop_remainder=True))


def make_trunk():
    keras.utils.set_random_seed(7)
    inputs = keras.Input([DIM])
    hidden = keras.layers.Dense(16, activation="tanh")(inputs)
    return keras.Model(inputs, keras.layers.Dense(DIM)(hidden), name="trunk")


def make_trainer(cluster=True, num_shards=None):
    trunk = None
    if OPTIONS.get("trunk"):
        if cluster:
            with strategy.scope():
                trunk = make_trunk()
        else:
            trunk = make_trunk()
    return tfs.distribute.ParameterServerTrainer(
        NUM_CLASSES, DIM, strategy=strategy if cluster else None, trunk=trunk,
        num_shards=num_shards, num_sampled=8, sampler_options={"leaf_size": 8},
        optimizer=tfs.optimizers.SparseAdagrad(0.3), seed=3,
        checkpoint_dir=OPTIONS.get("checkpoint_dir") if cluster else None,
        checkpoint_every=OPTIONS.get("checkpoint_every"), verbose=cluster)


def weights(trainer):
    return [np.concatenate([w.ravel() for w in trainer.table()])] + (
        [v.numpy().ravel() for v in trainer.trunk.trainable_variables] if trainer.trunk else [])


def main():
    trainer = make_trainer(num_shards=OPTIONS.get("num_shards"))
    evaluation = tf.data.Dataset.from_tensor_slices(task()).batch(512)
    before = trainer.evaluate(evaluation)
    initial = weights(trainer)
    log_every = OPTIONS.get("log_every", 10)
    history = {"train": []}
    pause = OPTIONS.get("pause_at_step")
    if pause:
        history["train"] += trainer.fit(dataset, pause, log_every=log_every)["train"]
        print("paused", flush=True)
        while not os.path.exists(OPTIONS["go_file"]):
            time.sleep(0.1)
    history["train"] += trainer.fit(dataset, OPTIONS["steps"], log_every=log_every)["train"]
    after = trainer.evaluate(evaluation)
    groups = trainer.shards + trainer.trunk_groups
    result = {"step": trainer.step, "history": history, "before": before, "after": after,
              "restored_from": trainer.restored_from,
              "devices": [shard.table.device for shard in trainer.shards],
              "tree_devices": [s.nodes.device for s in trainer.sampler.shards],
              "trunk_devices": [g.device for g in trainer.trunk_groups],
              "trunk_moved": [bool(np.any(a != b)) for a, b in
                              zip(initial[1:], weights(trainer)[1:])],
              **trainer.shard_counts(), "trunk": trainer.trunk_counts(),
              "applied_steps": [trainer._ring_steps(g).tolist()  # pylint: disable=protected-access
                                for g in groups]}
    if OPTIONS.get("reference"):
        local = make_trainer(cluster=False, num_shards=trainer.num_shards)
        reference = local.fit(dataset, OPTIONS["steps"], log_every=log_every)["train"]
        result["reference"] = reference
        result["max_difference"] = max(float(np.max(np.abs(a - b))) for a, b in
                                       zip(weights(trainer), weights(local)))
    os.makedirs(OPTIONS["out"], exist_ok=True)
    with open(os.path.join(OPTIONS["out"], "result.json"), "w", encoding="utf-8") as f:
        json.dump(result, f)
    print("done", flush=True)


if __name__ == "__main__":
    main()
