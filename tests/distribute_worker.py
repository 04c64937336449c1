"""One training process of the tf_sampled.distribute tests (a worker, or a single process).

    python distribute_worker.py '{"steps": 6, "out": "/tmp/x", ...}'

Options (JSON): strategy ("multi_worker": TF_CONFIG's cluster through
make_strategy; "mirrored2": MirroredStrategy over two logical CPUs in this
process), steps (total steps), checkpoint_dir, collective_timeout_s,
die_at_step / die_worker (that worker exits abruptly after that step; with
stall=seconds it first sleeps that long),
out (directory: each worker writes state_<worker>.npz and history_<worker>.json).

The model: layer_models.build (Dense trunk -> SampledSoftmax with a kernel
sampler), LazyAdam, a seeded dataset of global batches of 32.
"""
import json
import os
import sys
import time

import numpy as np

OPTIONS = json.loads(sys.argv[1])
if OPTIONS.get("strategy") == "mirrored2":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    WORKER = 0
else:
    import tf_sampled as tfs
    strategy = tfs.distribute.make_strategy(
        collective_timeout_s=OPTIONS.get("collective_timeout_s", 60),
        startup_timeout_s=OPTIONS.get("startup_timeout_s", 60))
    WORKER = tfs.distribute.parse_tf_config().worker_index

import tensorflow as tf  # pylint: disable=wrong-import-position
import tf_sampled as tfs  # pylint: disable=wrong-import-position
from layer_models import build, task  # pylint: disable=wrong-import-position

NUM_CLASSES, GLOBAL_BATCH = 200, 32


def dataset():
    x, y = task(NUM_CLASSES, n=512)
    return (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(512, seed=5).repeat()
            .batch(GLOBAL_BATCH, drop_remainder=True))


def main():
    with strategy.scope():
        model = build(NUM_CLASSES, sampler="kernel", sampler_options={"leaf_size": 8},
                      num_sampled=8, seed=11)
        optimizer = tfs.optimizers.LazyAdam(0.05)
    trainer = tfs.distribute.Trainer(model, optimizer, strategy=strategy,
                                     checkpoint_dir=OPTIONS.get("checkpoint_dir"),
                                     verbose=False)
    die_at = OPTIONS.get("die_at_step")
    history = {"train": []}
    steps = OPTIONS["steps"]
    step = trainer.step
    while step < steps:
        target = min(steps, die_at) if die_at and step < die_at else steps
        part = trainer.fit(dataset(), target, log_every=1)
        history["train"] += part["train"]
        step = trainer.step
        if die_at and step == die_at and WORKER == OPTIONS.get("die_worker", 1):
            if OPTIONS.get("stall"):
                print("stalling", flush=True)
                time.sleep(OPTIONS["stall"])
            print("dying", flush=True)
            os._exit(3)  # pylint: disable=protected-access
    trainer.check_replicas()
    x, y = task(NUM_CLASSES, n=512)
    history["eval"] = trainer.evaluate(tf.data.Dataset.from_tensor_slices((x, y)).batch(100))
    history["collectives"] = trainer.collective_ops() if history["train"] else []
    history["restored_from"] = trainer.restored_from

    head = model.get_layer("head")
    # Every replica's copy of the table and the sampler's state.
    state = {}
    for variable in [head.embeddings, head.bias]:
        for r, value in enumerate(strategy.experimental_local_results(variable.value)):
            state[f"{variable.name}/replica{r}"] = value.numpy()
    for variable in head.sampler.variables:
        for r, value in enumerate(strategy.experimental_local_results(variable)):
            state[f"sampler/{variable.name}/replica{r}"] = value.numpy()
    # The negatives each replica draws next for the same inputs.
    probe = tf.constant(np.random.RandomState(0).normal(size=(4, 16)).astype(np.float32))
    drawn = strategy.run(lambda: head.sampler.sample(probe, 8).ids)
    for r, value in enumerate(strategy.experimental_local_results(drawn)):
        state[f"next_draw/replica{r}"] = value.numpy()
    if OPTIONS.get("strategy") == "mirrored2":
        # check_replicas notices a replica whose copy drifted.
        nodes = strategy.experimental_local_results(head.sampler.nodes)[1]
        nodes.assign(nodes + 1e-3)
        try:
            trainer.check_replicas()
            history["drift"] = "not detected"
        except RuntimeError as error:
            history["drift"] = str(error)
    out = OPTIONS["out"]
    os.makedirs(out, exist_ok=True)
    np.savez(os.path.join(out, f"state_{WORKER}.npz"), **state)
    with open(os.path.join(out, f"history_{WORKER}.json"), "w", encoding="utf-8") as f:
        json.dump(history, f)
    print("done", flush=True)


if __name__ == "__main__":
    main()
