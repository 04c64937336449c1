"""One task of the parameter-server tests' local clusters (chief, worker or ps).

    TF_CONFIG=... python ps_worker.py '{"steps": 60, "out": "/tmp/x", ...}'

Every task runs this program: make_parameter_server_strategy serves on the
worker and ps tasks (they exit once the chief is gone) and returns the
strategy on the chief, which trains a sharded table of NUM_CLASSES x DIM
(one shard per ps task, SparseAdagrad) on a fixed synthetic task and writes
out/result.json: the training history, every shard's applied and skipped
counts and applied step ids, and the final evaluation.

Options (JSON): steps, out, log_every (progress lines "step k/N" on stdout),
batch (examples per step), chief_gone_s, pause_at_step / go_file (the chief
trains to pause_at_step, prints "paused", and waits for go_file to exist
before it trains on).
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


def main():
    trainer = tfs.distribute.ParameterServerTrainer(
        NUM_CLASSES, DIM, strategy=strategy, num_sampled=8,
        sampler_options={"leaf_size": 8}, optimizer=tfs.optimizers.SparseAdagrad(0.3), seed=3)
    before = trainer.evaluate(tf.data.Dataset.from_tensor_slices(task()).batch(512))
    log_every = OPTIONS.get("log_every", 10)
    history = {"train": []}
    pause = OPTIONS.get("pause_at_step")
    if pause:
        history["train"] += trainer.fit(dataset, pause, log_every=log_every)["train"]
        print("paused", flush=True)
        while not os.path.exists(OPTIONS["go_file"]):
            time.sleep(0.1)
    history["train"] += trainer.fit(dataset, OPTIONS["steps"], log_every=log_every)["train"]
    after = trainer.evaluate(tf.data.Dataset.from_tensor_slices(task()).batch(512))
    result = {"step": trainer.step, "history": history, "before": before, "after": after,
              "devices": [shard.table.device for shard in trainer.shards],
              "tree_devices": [s.nodes.device for s in trainer.sampler.shards],
              **trainer.shard_counts(),
              "applied_steps": [trainer.applied_steps(s).tolist()
                                for s in range(trainer.num_shards)]}
    os.makedirs(OPTIONS["out"], exist_ok=True)
    with open(os.path.join(OPTIONS["out"], "result.json"), "w", encoding="utf-8") as f:
        json.dump(result, f)
    print("done", flush=True)


if __name__ == "__main__":
    main()
