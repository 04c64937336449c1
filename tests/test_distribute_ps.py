"""Parameter-server training in one process: the sharded sampler, the guarded step, the
trunk, checkpoints, bad input.

The sharded kernel sampler's log q is compared with a brute-force computation
over the whole table (tests/oracles.py recomputes each shard's tree from its
rows); the trainer's step with a one-process "cluster" (shards on this CPU),
with and without a trunk, against a dense reference step (the package's Keras
optimizers on the whole table and the trunk); a run restored from its
checkpoint against the uninterrupted run, bitwise. Nothing here connects to a
cluster.
"""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sampled as tfs
from oracles import kernel_log_prob
from stats import P_THRESHOLD, chi_square_p_value
from tf_sampled.distribute import parameter_server
from tf_sampled.distribute.sharded_sampler import MIN_SHARD_PROB, ShardedKernelSampler

C, DIM, K = 96, 6, 3


def make_sampler(feature_map, use_bias=True, seed=0):
    rng = np.random.RandomState(seed)
    rows = C // K
    tables = [tf.Variable(0.6 * rng.normal(size=(rows, DIM)).astype(np.float32))
              for _ in range(K)]
    biases = ([tf.Variable(0.3 * rng.normal(size=rows).astype(np.float32)) for _ in range(K)]
              if use_bias else None)
    return ShardedKernelSampler(tables, feature_map, leaf_size=4, biases=biases), rng


def brute_force_log_q(sampler, h):
    """[batch, C] float64 log q over the whole table, from the rows alone."""
    x = np.asarray(h, np.float64)
    if sampler.has_bias:
        x = np.concatenate([x, np.ones([len(x), 1])], 1)
    log_mass, per_shard = [], []
    for shard in sampler.shards:
        snapshot = shard.rows.numpy().astype(np.float64)
        phi = shard.feature_map.reference_features(snapshot, shard.omega.numpy(),
                                                   sampler.has_bias).numpy()
        log_mass.append(shard.feature_map.reference_node_log_mass(
            x, phi.sum(0, keepdims=True), shard.omega.numpy(), sampler.has_bias).numpy()[:, 0])
        per_shard.append(kernel_log_prob(shard, h))
    log_mass = np.stack(log_mass, 1)
    finite = np.isfinite(log_mass)
    log_mass = np.where(finite.any(1, keepdims=True), np.where(finite, log_mass, -np.inf), 0.0)
    probs = np.exp(log_mass - log_mass.max(1, keepdims=True))
    probs = probs / probs.sum(1, keepdims=True)
    probs = (1 - MIN_SHARD_PROB * K) * probs + MIN_SHARD_PROB
    return np.concatenate([np.log(probs[:, s:s + 1]) + per_shard[s] for s in range(K)], 1)


MAPS = {"positive_random": lambda: tfs.features.PositiveRandom(32, seed=3),
        "random_fourier": lambda: tfs.features.RandomFourier(64, temperature=0.5, seed=4),
        "quadratic": lambda: tfs.features.Quadratic(2.0)}


@pytest.mark.parametrize("name", sorted(MAPS))
@pytest.mark.parametrize("use_bias", [True, False])
def test_sharded_log_q_equals_brute_force_over_the_whole_table(name, use_bias):
    sampler, rng = make_sampler(MAPS[name](), use_bias)
    # Stale trees: the tables moved, only some rows were refreshed.
    for shard in sampler.shards:
        shard.embeddings.assign_add(0.2 * rng.normal(size=shard.embeddings.shape)
                                    .astype(np.float32))
    sampler.refresh(np.array([0, 5, 40, 70, 95]))
    h = rng.normal(size=(5, DIM)).astype(np.float32)
    expected = brute_force_log_q(sampler, h)
    assert np.allclose(np.exp(expected).sum(1), 1.0, atol=1e-9)

    every = np.tile(np.arange(C), (5, 1))
    np.testing.assert_allclose(sampler.log_prob(h, every).numpy(), expected, atol=1e-4,
                               rtol=1e-4)
    labels = np.array([[0], [31], [32], [64], [95]])
    drawn = sampler.sample(h, 50, true_classes=labels)
    ids = drawn.ids.numpy()
    assert ids.min() >= 0 and ids.max() < C
    np.testing.assert_allclose(drawn.log_q.numpy(), np.take_along_axis(expected, ids, 1),
                               atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(drawn.true_log_q.numpy(), np.take_along_axis(expected, labels, 1),
                               atol=1e-4, rtol=1e-4)


def test_sharded_draws_follow_their_log_q():
    sampler, rng = make_sampler(MAPS["positive_random"]())
    h = rng.normal(size=(2, DIM)).astype(np.float32) * 1.5
    expected = np.exp(brute_force_log_q(sampler, h))
    ids = sampler.sample(h, 40_000, seed=7).ids.numpy()
    for b in range(2):
        counts = np.bincount(ids[b], minlength=C)
        assert chi_square_p_value(counts, expected[b]) > P_THRESHOLD
    # Every shard is drawn from (the test would not see a shard-choice error otherwise).
    assert len(set(ids.ravel() // (C // K))) == K


def test_draws_are_a_function_of_seed_and_position():
    sampler, rng = make_sampler(MAPS["positive_random"]())
    h = rng.normal(size=(4, DIM)).astype(np.float32)
    first = sampler.sample_at(h, 16, None, 1, 2, tf.constant(5, tf.int64)).ids.numpy()
    again = sampler.sample_at(h, 16, None, 1, 2, tf.constant(5, tf.int64)).ids.numpy()
    other = sampler.sample_at(h, 16, None, 1, 2, tf.constant(6, tf.int64)).ids.numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert int(sampler.stream.counter.numpy()) == 0  # sample_at leaves the stream alone


def task(num_classes, n=512, seed=0):
    rng = np.random.RandomState(seed)
    h = rng.normal(size=(n, 8)).astype(np.float32)
    y = np.argmax(h @ rng.normal(size=(num_classes, 8)).T, 1).astype(np.int64)
    return h, y


def make_trainer(optimizer, num_shards=3, **kwargs):
    return tfs.distribute.ParameterServerTrainer(
        120, 8, num_shards=num_shards, num_sampled=8, optimizer=optimizer, seed=1,
        sampler_options={"leaf_size": 4, "feature_map": tfs.features.PositiveRandom(16, seed=2)},
        verbose=False, **kwargs)


def test_a_step_is_the_dense_reference_step_and_is_applied_once():
    trainer = make_trainer(tfs.optimizers.SparseSGD(0.5))
    h, y = task(120, n=16)
    step = tf.constant(3, tf.int64)
    table, bias = trainer.table()
    # The step's negatives are a function of its id: draw them first.
    sampled = trainer.sampler.sample_at(h, 8, y[:, None], parameter_server._STEP_SEED,
                                        trainer.seed, step)
    full, full_bias = tf.Variable(table), tf.Variable(bias)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tfs.nn.sampled_softmax_loss(full, full_bias, y[:, None], h,
                                                          sampled))
    grad_table, grad_bias = tape.gradient(loss, [full, full_bias])
    assert isinstance(grad_table, tf.IndexedSlices)
    expected = table - 0.5 * tf.convert_to_tensor(grad_table).numpy()
    expected_bias = bias - 0.5 * tf.convert_to_tensor(grad_bias).numpy()

    stats = trainer._train_fn(h, y, step).numpy()
    np.testing.assert_allclose(stats[0] / stats[1], loss.numpy(), rtol=1e-5)
    new_table, new_bias = trainer.table()
    np.testing.assert_allclose(new_table, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_bias, expected_bias, rtol=1e-5, atol=1e-6)
    assert trainer.shard_counts() == {"applied": [1, 1, 1], "repeats_skipped": [0, 0, 0]}

    # The coordinator re-runs a step whose worker died after the shards applied
    # it: every shard refuses it, nothing moves.
    trainer._train_fn(h[::-1].copy(), y[::-1].copy(), step)
    np.testing.assert_array_equal(trainer.table()[0], new_table)
    assert trainer.shard_counts() == {"applied": [1, 1, 1], "repeats_skipped": [1, 1, 1]}
    assert [trainer.applied_steps(s).tolist() for s in range(3)] == [[3]] * 3


@pytest.mark.parametrize("optimizer", [tfs.optimizers.SparseSGD(0.5),
                                       tfs.optimizers.SparseAdagrad(0.3),
                                       tfs.optimizers.LazyAdam(0.05)],
                         ids=["sgd", "adagrad", "adam"])
def test_training_keeps_every_shard_and_tree_in_step(optimizer):
    trainer = make_trainer(optimizer)
    h, y = task(120)
    data = tf.data.Dataset.from_tensor_slices((h, y)).repeat().batch(32, drop_remainder=True)
    evaluation = tf.data.Dataset.from_tensor_slices((h, y)).batch(128)
    before = trainer.evaluate(evaluation)
    history = trainer.fit(data, 60, log_every=20)
    after = trainer.evaluate(evaluation)
    assert [r["step"] for r in history["train"]] == [20, 40, 60] and trainer.step == 60
    assert after["loss"] < before["loss"] - 0.5, (before, after)
    assert trainer.shard_counts() == {"applied": [60] * 3, "repeats_skipped": [0] * 3}
    assert all(trainer.applied_steps(s).tolist() == list(range(60)) for s in range(3))
    # The touched-row refreshes kept each shard's tree equal to a full rebuild.
    for shard in trainer.sampler.shards:
        nodes = shard.nodes.numpy().copy()
        shard.refresh()
        np.testing.assert_allclose(nodes, shard.nodes.numpy(), rtol=1e-9, atol=1e-12)
    # The full-softmax evaluation is the dense one.
    table, bias = trainer.table()
    logits = h @ table.T + bias
    dense = np.mean(np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1))
                    + logits.max(1) - logits[np.arange(len(y)), y])
    assert after["loss"] == pytest.approx(dense, rel=1e-4)
    assert after["top_1_accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y))


# ---- bad input: a ValueError naming the problem before any step ----

ADDRESSES = iter(range(2300, 2400))


def ps_config(jobs, task_type="chief", index=0):
    cluster = {job: [f"localhost:{next(ADDRESSES)}" for _ in range(n)] for job, n in jobs.items()}
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


@pytest.mark.parametrize("jobs, task_type, match", [
    ({"chief": 1, "worker": 2}, "chief", r"lacks \['ps'\].*'ps' tasks"),
    ({"worker": 2, "ps": 1}, "worker", r"lacks \['chief'\].*one 'chief'"),
    ({"chief": 1, "ps": 2}, "chief", r"lacks \['worker'\]"),
    ({"chief": 2, "worker": 1, "ps": 1}, "chief", "2 'chief' tasks; at most one$"),
    ({"chief": 1, "worker": 1, "ps": 1, "evaluator": 1}, "chief",
     "jobs \\['evaluator'\\]; ParameterServerStrategy"),
    ({"chief": 1, "worker": 1, "ps": 1}, "ps_x", "task type 'ps_x' is not a job"),
])
def test_bad_parameter_server_tf_config(jobs, task_type, match):
    config = ps_config(jobs, task_type)
    with pytest.raises(ValueError, match=match):
        tfs.distribute.parse_tf_config(config, parameter_servers=True)
    with pytest.raises(ValueError, match=match):
        tfs.distribute.make_parameter_server_strategy(config)


def test_parameter_server_tf_config(monkeypatch):
    config = tfs.distribute.parse_tf_config(
        ps_config({"chief": 1, "worker": 2, "ps": 2}, "ps", 1), parameter_servers=True)
    assert (config.task_name, config.num_workers, config.num_ps) == ("ps:1", 3, 2)
    assert [name for name, _ in config.peers()] == ["chief:0", "worker:0", "worker:1", "ps:0"]
    # The multi-worker driver points at the parameter-server one.
    with pytest.raises(ValueError, match="make_parameter_server_strategy"):
        tfs.distribute.parse_tf_config(config.to_json())
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs a TF_CONFIG.*TF_CONFIG is unset"):
        tfs.distribute.make_parameter_server_strategy()
    with pytest.raises(ValueError, match="chief_gone_s"):
        tfs.distribute.make_parameter_server_strategy(config.to_json(), chief_gone_s=0)
    configs = tfs.distribute.local_cluster(2, num_ps=1)
    assert [json.loads(c)["task"] for c in configs] == [
        {"type": "chief", "index": 0}, {"type": "worker", "index": 0},
        {"type": "worker", "index": 1}, {"type": "ps", "index": 0}]


def test_chief_times_out_naming_the_missing_tasks():
    chief = tfs.distribute.local_cluster(1, num_ps=2)[0]
    with pytest.raises(tfs.distribute.ClusterError,
                       match=r"worker:0 \(localhost:\d+\), ps:0 \(localhost:\d+\), ps:1 "):
        tfs.distribute.make_parameter_server_strategy(chief, startup_timeout_s=0.5)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": 100, "num_shards": 3},
     "num_classes=100 does not divide into num_shards=3.*pad the table to 102"),
    ({"sampler": "lsh"}, "sampler 'lsh' cannot be sharded"),
    ({"sampler": "adversarial"}, "sampler 'adversarial' cannot be sharded"),
    ({"sampler": "log_uniform"}, "sampler 'log_uniform' cannot be sharded"),
    ({"sampler_options": {"incremental": False}}, r"unknown \['incremental'\]"),
    ({"optimizer": keras.optimizers.Adam()}, "LazyAdam, SparseAdagrad or SparseSGD.*got Adam"),
    ({"optimizer": tfs.optimizers.SparseSGD(0.1, momentum=0.9)}, "no momentum"),
    ({"optimizer": tfs.optimizers.LazyAdam(
        keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9))}, "constant learning rate"),
    ({"strategy": tf.distribute.get_strategy()}, "got _DefaultDistributionStrategy.*Trainer"),
    ({"num_sampled": 0}, "num_sampled must be a positive integer"),
])
def test_bad_trainer_arguments(kwargs, match):
    args = dict({"num_classes": 120, "dim": 8, "num_shards": 3}, **kwargs)
    with pytest.raises(ValueError, match=match):
        tfs.distribute.ParameterServerTrainer(args.pop("num_classes"), args.pop("dim"), **args)


def test_sampler_instances_cannot_be_sharded():
    table = tf.Variable(tf.zeros([12, 4]))
    for sampler in (tfs.samplers.KernelSampler(table, leaf_size=4), tfs.samplers.LogUniform(12)):
        with pytest.raises(ValueError, match=f"sampler '{type(sampler).__name__}' cannot be "):
            tfs.distribute.ParameterServerTrainer(12, 4, sampler=sampler)


def test_bad_datasets_fail_before_any_step():
    trainer = make_trainer(tfs.optimizers.SparseSGD(0.1))
    h, y = task(120, n=64)
    for dataset, match in [
            ((h, y), "tf.data.Dataset of \\(h, y\\) batches"),
            (tf.data.Dataset.from_tensor_slices((h[:, :4], y)).batch(8), r"h \[batch, 8\]"),
            (tf.data.Dataset.from_tensor_slices(h).batch(8), r"\(h \[batch, 8\], y"),
            (lambda: "not a dataset", "or a function returning one, got str")]:
        with pytest.raises(ValueError, match=match):
            trainer.fit(dataset, 5)
    with pytest.raises(ValueError, match="total_steps"):
        trainer.fit(tf.data.Dataset.from_tensor_slices((h, y)).batch(8), -1)
    assert trainer.step == 0 and trainer.shard_counts()["applied"] == [0, 0, 0]


def test_trainer_points_parameter_servers_to_their_driver():
    strategy = object.__new__(tf.distribute.ParameterServerStrategy)
    with pytest.raises(ValueError, match="ParameterServerTrainer"):
        tfs.distribute.check_strategy(strategy)


# ---- a trunk trained with the table ----

def make_trunk(seed=5, out=8):
    """x int32 [B, 4] -> Embedding(30, 6) -> mean -> Dense(out, tanh): h [B, out]."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input([4], dtype="int32")
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(30, 6)(inputs))
    return keras.Model(inputs, keras.layers.Dense(out, activation="tanh")(h), name="trunk")


def trunk_task(n=256, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randint(0, 30, size=(n, 4)).astype(np.int32)
    y = (x[:, 0] * 4 + x[:, 1] // 8).astype(np.int64)  # 120 classes, a function of x
    return x, y


def trunk_weights(model):
    return [v.numpy().copy() for v in model.trainable_variables]


OPTIMIZERS = {"sgd": lambda: tfs.optimizers.SparseSGD(0.5),
              "adagrad": lambda: tfs.optimizers.SparseAdagrad(0.3),
              "adam": lambda: tfs.optimizers.LazyAdam(0.05)}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_trunk_step_is_the_dense_reference_step(name):
    trainer = make_trainer(OPTIMIZERS[name](), trunk=make_trunk())
    reference = make_trunk()
    x, y = trunk_task(n=16)
    step = tf.constant(3, tf.int64)
    h = reference(x)
    np.testing.assert_array_equal(h.numpy(), trainer.trunk(x).numpy())
    sampled = trainer.sampler.sample_at(h, 8, y[:, None], parameter_server._STEP_SEED,
                                        trainer.seed, step)
    table, bias = trainer.table()
    # The reference: the whole table and the trunk as Keras variables, the
    # package's Keras optimizer (sparse on the table and the Embedding, dense
    # Keras updates on the Dense layer), one step on the same batch and negatives.
    full, full_bias = keras.Variable(table), keras.Variable(bias)
    variables = [full, full_bias] + reference.trainable_variables
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tfs.nn.sampled_softmax_loss(full.value, full_bias.value,
                                                          y[:, None], reference(x), sampled))
    grads = tape.gradient(loss, [v.value for v in variables])
    assert isinstance(grads[0], tf.IndexedSlices) and isinstance(grads[2], tf.IndexedSlices)
    OPTIMIZERS[name]().apply(grads, variables)

    stats = trainer._train_fn(x, y, step).numpy()
    np.testing.assert_allclose(stats[0] / stats[1], loss.numpy(), rtol=1e-5)
    new_table, new_bias = trainer.table()
    np.testing.assert_allclose(new_table, full.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_bias, full_bias.numpy(), rtol=1e-5, atol=1e-6)
    moved = trunk_weights(trainer.trunk)
    for ours, theirs, before in zip(moved, trunk_weights(reference), trunk_weights(make_trunk())):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
        assert not np.array_equal(ours, before)
    assert trainer.trunk_counts() == {"applied": [1], "repeats_skipped": [0]}

    # A re-run of the step changes neither the table nor the trunk.
    trainer._train_fn(x[::-1].copy(), y[::-1].copy(), step)
    np.testing.assert_array_equal(trainer.table()[0], new_table)
    for ours, before in zip(trunk_weights(trainer.trunk), moved):
        np.testing.assert_array_equal(ours, before)
    assert trainer.trunk_counts() == {"applied": [1], "repeats_skipped": [1]}
    assert trainer.shard_counts() == {"applied": [1] * 3, "repeats_skipped": [1] * 3}
    assert trainer.trunk_applied_steps(0).tolist() == [3]


def test_the_trunk_of_a_sampled_softmax_model_is_trained():
    trunk = make_trunk()
    model = tfs.layers.SampledSoftmaxModel(
        trunk.inputs, tfs.layers.SampledSoftmax(120, num_sampled=8)(trunk.outputs[0]))
    trainer = make_trainer(tfs.optimizers.LazyAdam(0.02), trunk=model)
    assert [v.path for v in trainer.trunk.trainable_variables] == \
        [v.path for v in trunk.trainable_variables]
    x, y = trunk_task()
    data = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(32, drop_remainder=True)
    evaluation = tf.data.Dataset.from_tensor_slices((x, y)).batch(128)
    before, weights = trainer.evaluate(evaluation), trunk_weights(trunk)
    history = trainer.fit(data, 60, log_every=20)
    after = trainer.evaluate(evaluation)
    assert after["loss"] < before["loss"] - 0.5, (before, after, history)
    assert all(not np.allclose(a, b) for a, b in zip(trunk_weights(trunk), weights))
    assert trainer.trunk_counts() == {"applied": [60], "repeats_skipped": [0]}
    assert trainer.trunk_applied_steps(0).tolist() == list(range(60))


def test_bad_trunks():
    inputs = keras.Input([4], dtype="int32")
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(30, 6)(inputs))
    cases = [
        ("not a model", "trunk must be a keras.Model"),
        (keras.Sequential([keras.layers.Dense(8)]), "is not built"),
        (keras.Model(inputs, keras.layers.Dense(5)(h)), r"outputs shape \(None, 5\).*dim=8"),
        (keras.Model(inputs, keras.layers.Dense(8)(keras.layers.BatchNormalization()(h))),
         "non-trainable variables.*BatchNormalization"),
        (tfs.layers.SampledSoftmaxModel(inputs, tfs.layers.SampledSoftmax(60, num_sampled=8)(
            keras.layers.Dense(8)(h))), "SampledSoftmax over 60 classes.*num_classes=120"),
    ]
    for trunk, match in cases:
        with pytest.raises(ValueError, match=match):
            make_trainer(tfs.optimizers.SparseSGD(0.1), trunk=trunk)
    trainer = make_trainer(tfs.optimizers.SparseSGD(0.1), trunk=make_trunk())
    with pytest.raises(ValueError, match=r"\(x, y\) batches"):
        trainer.fit(tf.data.Dataset.from_tensor_slices(trunk_task()[0]).batch(8), 5)


# ---- checkpoints ----

def trunk_run(directory, total, every=None, num_shards=3, **kwargs):
    trainer = make_trainer(tfs.optimizers.LazyAdam(0.02), num_shards=num_shards,
                           trunk=make_trunk(), checkpoint_dir=directory,
                           checkpoint_every=every, **kwargs)
    x, y = trunk_task()
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(256, seed=4).repeat().batch(
        32, drop_remainder=True)
    return trainer, trainer.fit(data, total, log_every=10)


def state(trainer):
    """Every variable of the run: table, slots, records, trees, trunk and its slots."""
    groups = trainer.shards + trainer.trunk_groups
    return ([v.numpy() for g in groups for v in [g.ring, g.applied, g.repeats]
             + [s for slots in g.slots for s in slots]]
            + list(trainer.table()) + trunk_weights(trainer.trunk)
            + [v.numpy() for v in trainer.sampler.variables])


def test_a_restored_run_continues_exactly_like_the_uninterrupted_run(tmp_path):
    whole, whole_history = trunk_run(str(tmp_path / "whole"), 30)
    assert whole.restored_from is None
    assert tf.train.latest_checkpoint(str(tmp_path / "whole")).endswith("ckpt-30")
    first, _ = trunk_run(str(tmp_path / "cut"), 20, every=10)
    del first  # the chief is gone; its checkpoints remain
    again, history = trunk_run(str(tmp_path / "cut"), 30, every=10)
    assert again.restored_from.endswith("ckpt-20") and again.step == 30
    # The same batches, negatives and updates: every variable bitwise equal.
    assert history["train"] == [dict(whole_history["train"][-1],
                                     ms_per_step=history["train"][0]["ms_per_step"])]
    for ours, theirs in zip(state(again), state(whole), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert again.trunk_applied_steps(0).tolist() == list(range(30))


def test_bad_checkpoints(tmp_path):
    afile = tmp_path / "a_file"
    afile.write_text("x")
    with pytest.raises(ValueError, match=f"checkpoint_dir '{afile}/ckpt' is not a writable"):
        make_trainer(tfs.optimizers.SparseSGD(0.1), checkpoint_dir=str(afile / "ckpt"))
    with pytest.raises(ValueError, match="checkpoint_every"):
        make_trainer(tfs.optimizers.SparseSGD(0.1), checkpoint_every=0)
    directory = str(tmp_path / "run")
    trunk_run(directory, 2)
    with pytest.raises(ValueError, match=r"ckpt-2 holds a different table: num_shards=3 "
                                         r"\(this trainer: 2\)"):
        trunk_run(directory, 2, num_shards=2)
    with pytest.raises(ValueError, match=r"ckpt-2 holds a different table: num_classes=120 "
                                         r"\(this trainer: 96\), dim=8 \(this trainer: 6\)"):
        tfs.distribute.ParameterServerTrainer(96, 6, num_shards=3, checkpoint_dir=directory)
    with pytest.raises(ValueError, match="ckpt-2 does not match this trainer"):
        make_trainer(tfs.optimizers.LazyAdam(0.02),
                     trunk=keras.Sequential([keras.Input([8]), keras.layers.Dense(8)]),
                     checkpoint_dir=directory)


# ---- the exactly-once guard: TfSampled>ClaimStep ----

def claim(ring, step):
    return bool(tfs.load_ops().tf_sampled_claim_step(ring=ring.handle, step=step))


def test_claim_step_checks_and_records_in_one_op():
    ring = tf.Variable(tf.fill([4], tf.constant(-1, tf.int64)))
    assert claim(ring, 6) and not claim(ring, 6)  # a repeat is refused
    assert claim(ring, 7) and claim(ring, 0)
    np.testing.assert_array_equal(ring.numpy(), [0, -1, 6, 7])
    assert claim(ring, 10) and not claim(ring, 10)  # step 10 reuses step 6's slot
    assert ring.numpy()[2] == 10


def test_concurrent_claims_of_one_step_claim_it_once():
    ring = tf.Variable(tf.fill([8], tf.constant(-1, tf.int64)))

    @tf.function
    def race(step):
        # No dependencies between the claims: the executor may run them at once.
        return tf.stack([tfs.load_ops().tf_sampled_claim_step(ring=ring.handle, step=step)
                         for _ in range(64)])

    for step in range(20):
        assert int(tf.reduce_sum(tf.cast(race(tf.constant(step, tf.int64)), tf.int32))) == 1


@pytest.mark.parametrize("ring, step, fragments", [
    (tf.fill([4], tf.constant(-1, tf.int64)), -1, ("step", "-1")),
    (tf.fill([4], tf.constant(-1, tf.int64)), [1, 2], ("step", "rank 0")),
    (tf.fill([4], -1.0), 1, ("ring", "int64", "float")),
    (tf.fill([2, 2], tf.constant(-1, tf.int64)), 1, ("ring", "rank 1")),
    (tf.zeros([0], tf.int64), 1, ("ring", "at least one slot", "[0]")),
])
def test_claim_step_rejects_bad_input(ring, step, fragments):
    variable = tf.Variable(ring)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        tfs.load_ops().tf_sampled_claim_step(ring=variable.handle,
                                             step=tf.constant(step, tf.int64))
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
