"""Reproducible sample streams in training: a model restored from a .keras
file or a checkpoint continues training with exactly the negatives and
weights of the uninterrupted run, and mirrored replicas keep identical streams.

The samplers' own stream contract (same seed and counter, same samples,
eagerly or in a tf.function; checkpoints) is in test_sampler_contract.py.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

import test_layer_distributed
import tf_sampled as tfs
from layer_models import build, task
from sampler_cases import adversarial_sampler

C, BATCH, N, M = 200, 64, 3, 3
COUNTS = [float(c) for c in np.random.RandomState(0).randint(1, 50, size=C)]
KERNEL_OPTIONS = {"leaf_size": 16, "feature_map": tfs.features.PositiveRandom(16, seed=0)}
# The layer's configurations, one per sampler kind (seeded and unseeded).
LAYER_SAMPLERS = {
    "kernel_unseeded": dict(sampler="kernel", sampler_options=KERNEL_OPTIONS),
    "kernel_shared": dict(sampler="kernel", sampler_options=KERNEL_OPTIONS,
                          shared_negatives=True, seed=11),
    "lsh": dict(sampler="lsh", sampler_options={"num_tables": 4, "bucket_size": 16, "seed": 1},
                seed=11),
    "learned_unigram": dict(sampler="learned_unigram", shared_negatives=False, seed=11),
    "log_uniform_shared": dict(sampler="log_uniform", shared_negatives=True, seed=11),
    "uniform": dict(sampler="uniform", shared_negatives=False, seed=11),
    "unigram_unseeded": dict(sampler="unigram", sampler_options={"counts": COUNTS},
                             shared_negatives=False),
    # sampler_options={"path": a saved AdversarialSampler} (see `make`).
    "adversarial": dict(sampler="adversarial", seed=11),
}
# Same code path as log_uniform and learned_unigram (stateless draws keyed by
# the stream): run with the slow tests.
SLOW_KINDS = ("uniform", "unigram_unseeded")


def record_negatives(model):
    """A list that receives the negatives [B, S] or [S] of each sampling call."""
    sampler = model.sampled_softmax.sampler
    log = []

    def recorded(fn):
        def call(*args, **kwargs):
            out = fn(*args, **kwargs)
            tf.py_function(lambda ids: log.append(ids.numpy()), [out[0]], [])
            return out
        return call

    for name in ("sample", "candidate_sampler"):
        # Past tf.Module's attribute tracking: a plain instance attribute.
        object.__setattr__(sampler, name, recorded(getattr(sampler, name)))
    model.make_train_function(force=True)  # in case it was traced without the recording
    return log


def make(kind, directory, init_seed=0):
    args = dict(LAYER_SAMPLERS[kind])
    if args["sampler"] == "adversarial":
        path = directory / "aux.npz"
        if not path.exists():
            adversarial_sampler(C, dim=16).save(str(path))  # the head's inputs: Dense(16)
        args["sampler_options"] = {"path": str(path)}
    model = build(C, num_sampled=8, init_seed=init_seed, **args)
    model.compile(tfs.optimizers.LazyAdam(0.02))
    return model


def train(model, x, y):
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def state(model):
    return ([v.numpy() for v in model.sampled_softmax.sampler.variables]
            + model.get_weights() + [v.numpy() for v in model.optimizer.variables])


def assert_same(left, right):
    assert len(left) == len(right)
    for a, b in zip(left, right):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow) if k in SLOW_KINDS
                                  else k for k in LAYER_SAMPLERS])
def test_restored_model_continues_with_identical_samples(kind, tmp_path):
    x, y = task(C, n=(N + M) * BATCH)
    first, rest = slice(0, N * BATCH), slice(N * BATCH, None)
    model = make(kind, tmp_path)
    uninterrupted = record_negatives(model)
    train(model, x[first], y[first])
    assert int(model.sampled_softmax.sampler.stream.counter.numpy()) == N
    model.save(tmp_path / "m.keras")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer).save(
        tmp_path / "ckpt")

    loaded = keras.models.load_model(tmp_path / "m.keras")
    # A model built with other initial weights (and another unseeded stream),
    # then restored.
    restored = make(kind, tmp_path, init_seed=5)
    restored.optimizer.build(restored.trainable_variables)
    tf.train.Checkpoint(model=restored, optimizer=restored.optimizer).restore(
        checkpoint).assert_existing_objects_matched()

    logs = [record_negatives(m) for m in (loaded, restored)]
    for continuing in (model, loaded, restored):
        train(continuing, x[rest], y[rest])
    assert len(uninterrupted) == N + M and not np.array_equal(uninterrupted[-1],
                                                             uninterrupted[-2])
    for log in logs:
        assert_same(log, uninterrupted[N:])
    assert_same(state(loaded), state(model))
    assert_same(state(restored), state(model))


MIRRORED = test_layer_distributed.PRELUDE + """
C = 200
x, y = task(C, n=512)
for sampler in ("learned_unigram", "uniform"):
    with strategy.scope():
        model = build(C, sampler=sampler, num_sampled=8, shared_negatives=False, seed=3)
        model.compile(tfs.optimizers.LazyAdam(0.02))
    head = model.sampled_softmax
    draws = []
    sample = head.sampler.sample
    def recorded(*args, **kwargs):
        out = sample(*args, **kwargs)
        tf.py_function(lambda ids: draws.append(ids.numpy()), [out.ids], [])
        return out
    object.__setattr__(head.sampler, "sample", recorded)
    model.fit(x, y, epochs=1, batch_size=128, shuffle=False, verbose=0)
    for variable in head.sampler.variables:
        values = [v.numpy() for v in strategy.experimental_local_results(variable)]
        print(sampler, variable.name, "identical",
              all(np.array_equal(values[0], v) for v in values[1:]))
    print(sampler, "counter", head.sampler.stream.counter.numpy())
    # The replicas' draws of one step (two per step) differ.
    print(sampler, "replicas draw alike", np.array_equal(draws[0], draws[1]))
"""


@pytest.mark.slow
def test_mirrored_replicas_keep_identical_streams_and_counts():
    out = test_layer_distributed.run_mirrored(MIRRORED)
    # learned_unigram: counts, counter and offset; uniform: counter and offset.
    assert out.count("identical True") == 5 and "identical False" not in out, out
    assert "learned_unigram counter 4" in out and "uniform counter 4" in out, out
    assert "replicas draw alike" in out and "replicas draw alike True" not in out, out
