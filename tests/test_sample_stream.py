"""Reproducible sample streams: draws are a function of (seed, counter).

Same seed and counter give the same samples (in another sampler, eagerly or
in a tf.function), different counters give different ones, and a model
restored from a .keras file or a checkpoint continues training with exactly
the negatives and weights of the uninterrupted run.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

import test_layer_distributed
import tf_sampled as tfs
from layer_models import build, task

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
    "learned_unigram": dict(sampler="learned_unigram", seed=11),
    "log_uniform_shared": dict(sampler="log_uniform", shared_negatives=True, seed=11),
    "uniform": dict(sampler="uniform", seed=11),
    "unigram_unseeded": dict(sampler="unigram", sampler_options={"counts": COUNTS}),
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


def adversarial_sampler(dim, seed=0):
    """An AdversarialSampler over C classes with random node regressions."""
    rng = np.random.default_rng(seed)
    leaf_of_class = rng.permutation(C)
    return tfs.samplers.AdversarialSampler(rng.normal(size=dim), rng.normal(size=(dim, 3)),
                                           rng.normal(size=(C, 4)), leaf_of_class,
                                           np.argsort(leaf_of_class))


def make(kind, directory, init_seed=0):
    args = dict(LAYER_SAMPLERS[kind])
    if args["sampler"] == "adversarial":
        path = directory / "aux.npz"
        if not path.exists():
            adversarial_sampler(16).save(str(path))  # the head's inputs: Dense(16)
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


def kernel_sampler(table):
    return tfs.samplers.KernelSampler(table, tfs.features.PositiveRandom(16, seed=0),
                                      leaf_size=8)


def lsh_sampler(table):
    return tfs.samplers.LSHSampler(table, num_tables=4, bucket_size=8, seed=1)


SAMPLERS = {
    "kernel": kernel_sampler,
    "lsh": lsh_sampler,
    "uniform": lambda table: tfs.samplers.Uniform(C),
    "log_uniform": lambda table: tfs.samplers.LogUniform(C),
    "unigram": lambda table: tfs.samplers.Unigram(COUNTS),
    "learned_unigram": lambda table: tfs.samplers.LearnedUnigram(C),
    "adversarial": lambda table: adversarial_sampler(table.shape[1]),
}
TABLE = np.random.default_rng(0).standard_normal((C, 8)).astype(np.float32)
H = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
LABELS = np.array([[1], [5], [9], [13]], np.int64)


def draw(sampler, shared, seed=3):
    """Negatives of one call: [4, 6] per example, or [6] shared (unique)."""
    if shared:
        return sampler.candidate_sampler(LABELS, 1, 6, True, C, seed=seed, inputs=H)[0]
    return sampler.sample(H, 6, true_classes=LABELS, seed=seed).ids


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("kind", SAMPLERS)
def test_same_seed_and_counter_draw_the_same(kind, shared):
    make_sampler = SAMPLERS[kind]
    one, two = make_sampler(tf.Variable(TABLE)), make_sampler(tf.Variable(TABLE))
    first = draw(one, shared).numpy()
    second = draw(one, shared).numpy()  # counter 1
    assert not np.array_equal(first, second)
    # Another sampler at the same counters, in a tf.function.
    graph_draw = tf.function(lambda: draw(two, shared))
    np.testing.assert_array_equal(graph_draw().numpy(), first)
    np.testing.assert_array_equal(graph_draw().numpy(), second)
    assert int(two.stream.counter.numpy()) == 2
    # A counter set by hand (a restored position) draws that call's samples.
    one.stream.counter.assign(7)
    two.stream.counter.assign(7)
    np.testing.assert_array_equal(draw(one, shared).numpy(), graph_draw().numpy())
    # Another seed draws other samples at the same counter.
    one.stream.counter.assign(0)
    assert not np.array_equal(draw(one, shared, seed=4).numpy(), first)


@pytest.mark.parametrize("kind", ["kernel", "uniform"])
def test_calls_in_one_function_take_consecutive_counters(kind):
    one, two = (SAMPLERS[kind](tf.Variable(TABLE)) for _ in range(2))
    eager = [draw(one, False).numpy() for _ in range(3)]
    graph = tf.function(lambda: [draw(two, False) for _ in range(3)])()
    for left, right in zip(eager, graph):
        np.testing.assert_array_equal(left, right.numpy())
    assert int(two.stream.counter.numpy()) == 3


def test_unseeded_samplers_draw_their_own_saved_stream(tmp_path):
    table = tf.Variable(TABLE)
    one, two = kernel_sampler(table), kernel_sampler(table)
    assert one.stream.offset.numpy() != two.stream.offset.numpy()
    path = tf.train.Checkpoint(s=one).save(tmp_path / "c")
    first, other = draw(one, False, seed=None), draw(two, False, seed=None)
    assert not np.array_equal(first.numpy(), other.numpy())
    tf.train.Checkpoint(s=two).restore(path).assert_consumed()
    np.testing.assert_array_equal(draw(two, False, seed=None).numpy(), first.numpy())


MIRRORED = test_layer_distributed.PRELUDE + """
C = 200
x, y = task(C, n=512)
for sampler in ("learned_unigram", "uniform"):
    with strategy.scope():
        model = build(C, sampler=sampler, num_sampled=8, seed=3)
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
