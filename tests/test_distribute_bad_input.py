"""tf_sampled.distribute refuses what it cannot run, with a ValueError before any step.

In this process: no strategy that connects to a cluster is created here (the
checks run first), so nothing can hang.
"""
import json
import socket
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sampled as tfs
from layer_models import build, task

WORKERS = ["localhost:2222", "localhost:2223"]


def config(cluster=None, task_type="worker", index=0, **extra):
    return json.dumps(dict({"cluster": cluster or {"worker": WORKERS},
                            "task": {"type": task_type, "index": index}}, **extra))


@pytest.mark.parametrize("tf_config, match", [
    ("{cluster: 1", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    (json.dumps({"task": {"type": "worker", "index": 0}}), "needs a 'cluster'"),
    (config({"worker": WORKERS, "ps": ["localhost:2224"]}), "parameter servers.*ps"),
    (config({"worker": WORKERS, "evaluator": ["localhost:2224"]}), "evaluator"),
    (config({"worker": []}), "non-empty list"),
    (config({"worker": ["localhost"]}), r"cluster\['worker'\]\[0\].*host:port"),
    (config({"worker": ["localhost:70000"]}), "1-65535"),
    (config({"worker": ["localhost:2222", "localhost:2222"]}), "both worker:0 and worker:1"),
    (config({"chief": WORKERS}, "chief"), "2 'chief' tasks"),
    (json.dumps({"cluster": {"worker": WORKERS}}), "needs a 'task'"),
    (config(task_type="chief"), "task type 'chief' is not a job"),
    (config(index=2), "index 2 is out of range.*indices 0-1"),
    (config(index=-1), "index -1 is out of range"),
    (config(index="0"), "index '0' is out of range"),
    (config(rpc_layer="grpc+verbs"), "rpc_layer"),
])
def test_bad_tf_config(tf_config, match):
    with pytest.raises(ValueError, match=match):
        tfs.distribute.parse_tf_config(tf_config)
    # make_strategy checks before TensorFlow connects anywhere.
    with pytest.raises(ValueError, match=match):
        tfs.distribute.make_strategy(tf_config)


def test_tf_config_from_the_environment(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert tfs.distribute.parse_tf_config() is None
    monkeypatch.setenv("TF_CONFIG", config({"chief": ["localhost:2221"], "worker": WORKERS},
                                           index=1))
    parsed = tfs.distribute.parse_tf_config()
    assert (parsed.task_name, parsed.worker_index, parsed.num_workers) == ("worker:1", 2, 3)
    assert not parsed.is_chief and parsed.address == "localhost:2223"
    assert [name for name, _ in parsed.peers()] == ["chief:0", "worker:0"]
    assert tfs.distribute.parse_tf_config(parsed.to_json()) == parsed
    monkeypatch.setenv("TF_CONFIG", "not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        tfs.distribute.parse_tf_config()


@pytest.mark.parametrize("kwargs, match", [
    ({"collective_timeout_s": 0}, "collective_timeout_s"),
    ({"startup_timeout_s": -1}, "startup_timeout_s"),
    ({"implementation": "mpi"}, "implementation"),
])
def test_bad_strategy_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tfs.distribute.make_strategy(config(), **kwargs)


def test_missing_peer_times_out_with_its_name():
    configs = tfs.distribute.local_cluster(2)
    parsed = tfs.distribute.parse_tf_config(configs[0])
    with pytest.raises(tfs.distribute.ClusterError, match=r"worker:1 \(localhost:\d+\) did not "
                                                          r"start"):
        tfs.distribute.wait_for_peers(parsed, timeout_s=0.5)


def test_port_in_use():
    parsed = tfs.distribute.parse_tf_config(tfs.distribute.local_cluster(2)[0])
    port = int(parsed.address.rpartition(":")[2])
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("", port))
        holder.listen(1)
        with pytest.raises(ValueError, match=f"port {port} is in use"):
            tfs.distribute.wait_for_peers(parsed, timeout_s=0.5)


@pytest.mark.parametrize("name, match", [
    ("ParameterServerStrategy", "ParameterServerStrategyV2 .parameter-server training"),
    ("TPUStrategy", "TPUStrategyV2 .the sampling ops have no TPU"),
])
def test_unsupported_strategy(name, match):
    # An instance without its cluster: the check only looks at the type.
    strategy = object.__new__(getattr(tf.distribute, name))
    with pytest.raises(ValueError, match=match + ".*supports MultiWorkerMirroredStrategy"):
        tfs.distribute.check_strategy(strategy)
    with pytest.raises(ValueError, match=match):
        tfs.distribute.Trainer(build(50, num_sampled=4), strategy=strategy)


def test_supported_strategies():
    for strategy in (tf.distribute.get_strategy(), tf.distribute.OneDeviceStrategy("/cpu:0"),
                     tf.distribute.MirroredStrategy(["/cpu:0"])):
        assert tfs.distribute.check_strategy(strategy) is strategy
    with pytest.raises(ValueError, match="CentralStorageStrategy"):
        tfs.distribute.check_strategy(tf.distribute.experimental.CentralStorageStrategy())


def test_model_must_end_in_sampled_softmax():
    inputs = keras.Input([8])
    model = keras.Model(inputs, keras.layers.Dense(10)(inputs))
    with pytest.raises(ValueError, match="output is one tf_sampled.layers.SampledSoftmax"):
        tfs.distribute.Trainer(model)
    with pytest.raises(ValueError, match="keras.Model"):
        tfs.distribute.Trainer(object())


def test_model_and_optimizer_must_come_from_the_strategy_scope():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with pytest.raises(ValueError, match="outside this strategy's scope.*strategy.scope"):
        tfs.distribute.Trainer(build(50, num_sampled=4), strategy=strategy)
    with strategy.scope():
        model = build(50, num_sampled=4)
    with pytest.raises(ValueError, match=r"optimizer 'lazy_adam(_\d+)?' was created outside"):
        tfs.distribute.Trainer(model, tfs.optimizers.LazyAdam(), strategy=strategy)


def test_optimizer_checks():
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        tfs.distribute.Trainer(build(50, num_sampled=4),
                               tfs.optimizers.LazyAdam(gradient_accumulation_steps=2))
    with pytest.raises(ValueError, match="keras.optimizers.Optimizer"):
        tfs.distribute.Trainer(build(50, num_sampled=4), "adam")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tfs.distribute.Trainer(build(50, num_sampled=4), keras.optimizers.Adam(), verbose=False)
    assert any("every row of the class table" in str(w.message) for w in caught)


@pytest.fixture(name="trainer")
def _trainer():
    return tfs.distribute.Trainer(build(50, num_sampled=4), verbose=False)


def test_bad_datasets(trainer):
    x, y = task(50, n=64)
    batches = tf.data.Dataset.from_tensor_slices((x, y))
    cases = [
        ((x, y), "must be a tf.data.Dataset"),
        (tf.data.Dataset.from_tensor_slices(x).batch(8), r"\(x, y\) or \(x, y, sample_weight\)"),
        (batches.batch(8), "static batch size.*drop_remainder=True"),
        (tf.data.Dataset.from_tensor_slices((x, np.stack([y, y], 1))).batch(8, True),
         r"labels must have shape \[batch\] or \[batch, 1\]"),
        (batches.batch(8, drop_remainder=True), "holds 8 batches.*fewer than the 10 steps.*repeat"),
    ]
    for dataset, match in cases:
        with pytest.raises(ValueError, match=match):
            trainer.fit(dataset, 10)
    for steps in (-1, 2.5, True):
        with pytest.raises(ValueError, match="total_steps"):
            trainer.fit(batches.batch(8, True).repeat(), steps)
    assert trainer.step == 0  # nothing ran


def test_checkpoint_of_another_model(tmp_path):
    first = tfs.distribute.Trainer(build(50, num_sampled=4), checkpoint_dir=str(tmp_path),
                                   verbose=False)
    first.save()
    with pytest.raises(ValueError, match="does not match"):
        tfs.distribute.Trainer(build(60, dim=8, num_sampled=4), checkpoint_dir=str(tmp_path),
                               verbose=False)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        tfs.distribute.Trainer(build(50, num_sampled=4), verbose=False).save()
