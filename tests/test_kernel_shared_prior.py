"""The batch-shared kernel candidate sampler with the defensive log-uniform prior.

With prior_weight a the proposal is q = a p_lu + (1 - a) q_tree, p_lu(i) =
log((i + 2) / (i + 1)) / log(C + 1) TensorFlow's log-uniform and q_tree the
tree's batch mixture (prior_weight 0). Checked: q of every class against
that formula (true expected counts with every class as a true class), the
draws' frequencies, TensorFlow's unique=True expected counts, a = 0 and a = 1
against the tree alone and against log-uniform, bad prior_weight values, and
eager against tf.function.
"""
import numpy as np
import pytest
import tensorflow as tf

import tf_sampled as tfs
from stats import P_THRESHOLD, chi_square_p_value
from child_process import run_crash_cases
from child_scripts import crash_shared_prior
from oracles import log_uniform_probabilities

NUM_CLASSES, DIM, BATCH = 600, 8, 4
NUM_TRUE = NUM_CLASSES // BATCH
# Every class id once, as [batch, num_true] true classes.
ALL_CLASSES = np.arange(NUM_CLASSES, dtype=np.int64).reshape(BATCH, NUM_TRUE)


def make_sampler(seed=0, leaf_size=16):
    rng = np.random.RandomState(seed)
    W = tf.Variable(rng.normal(size=(NUM_CLASSES, DIM)).astype(np.float32) * 0.5)
    b = tf.Variable(-np.log1p(np.arange(NUM_CLASSES)).astype(np.float32) * 0.5)
    return tfs.samplers.KernelSampler(
        W, feature_map=tfs.features.PositiveRandom(num_features=32, seed=4),
        leaf_size=leaf_size, biases=b)


def queries(batch=BATCH, seed=1):
    return np.random.RandomState(seed).normal(size=(batch, DIM)).astype(np.float32)


def log_uniform_q(num_classes=NUM_CLASSES):
    return log_uniform_probabilities(num_classes)


@pytest.fixture(scope="module")
def sampler():
    return make_sampler()


def draw(sampler, num_sampled, unique, prior_weight, seed, true_classes=ALL_CLASSES,
         h=None):
    """The drop-in triple as numpy arrays (stream counter reset to 0)."""
    sampler.stream.counter.assign(0)
    triple = tfs.random.kernel_candidate_sampler(
        true_classes, true_classes.shape[1], num_sampled, unique, NUM_CLASSES, seed=seed,
        inputs=queries() if h is None else h, sampler=sampler, prior_weight=prior_weight)
    return tuple(t.numpy() for t in triple)


def proposal(sampler, prior_weight, num_sampled=64, seed=3):
    """q of every class from the true expected counts (unique=False: S q)."""
    _, true_count, _ = draw(sampler, num_sampled, False, prior_weight, seed)
    return true_count.reshape(-1).astype(np.float64) / num_sampled


@pytest.mark.parametrize("prior_weight", [0.1, 0.5, 0.9])
def test_true_expected_counts_are_the_mixture(sampler, prior_weight):
    q_tree = proposal(sampler, 0.0)
    q_mix = proposal(sampler, prior_weight)
    expected = prior_weight * log_uniform_q() + (1 - prior_weight) * q_tree
    np.testing.assert_allclose(q_mix, expected, rtol=1e-5)
    assert abs(q_mix.sum() - 1) < 1e-5
    assert abs(q_tree.sum() - 1) < 1e-5


@pytest.mark.parametrize("prior_weight", [0.3, 0.7])
def test_draw_frequencies_follow_the_mixture(sampler, prior_weight):
    q_mix = proposal(sampler, prior_weight)
    counts = np.zeros(NUM_CLASSES, np.int64)
    num_sampled = 50_000
    for call in range(4):  # 200k draws
        sampled, _, sampled_count = draw(sampler, num_sampled, False, prior_weight,
                                         seed=100 + call)
        # Every draw carries the mixture's expected count, S q(id).
        np.testing.assert_allclose(sampled_count, num_sampled * q_mix[sampled], rtol=1e-5)
        counts += np.bincount(sampled, minlength=NUM_CLASSES)
    assert chi_square_p_value(counts, q_mix) > P_THRESHOLD


@pytest.mark.parametrize("prior_weight", [0.5, 1.0])
def test_unique_expected_counts_follow_tensorflow_definition(sampler, prior_weight):
    q = proposal(sampler, prior_weight)
    num_sampled = 100
    truth = np.array([[0], [5], [300], [599]], np.int64)
    sampled, true_count, sampled_count = draw(sampler, num_sampled, True, prior_weight,
                                              seed=7, true_classes=truth)
    assert len(set(sampled.tolist())) == num_sampled
    # Every count is 1 - (1 - q)^num_tries for one integer num_tries >= S.
    # (Counts that round to 1 in float32 say nothing about num_tries.)
    informative = sampled_count < 0.99
    tries = (np.log1p(-sampled_count[informative].astype(np.float64))
             / np.log1p(-q[sampled[informative]]))
    num_tries = int(np.round(np.median(tries)))
    assert num_tries > num_sampled  # log-uniform repeats its head classes
    expected = -np.expm1(num_tries * np.log1p(-q))
    np.testing.assert_allclose(sampled_count, expected[sampled], rtol=1e-3)
    np.testing.assert_allclose(true_count[:, 0], expected[truth[:, 0]], rtol=1e-3)


def raw_call(ops, sampler, counter, **attrs):
    return [t.numpy() for t in ops.tf_sampled_kernel_tree_candidate_sampler(
        nodes=sampler.nodes, embeddings=sampler._table, biases=sampler._bias_table,
        omega=sampler.omega, inputs=queries(), true_classes=ALL_CLASSES,
        counter=np.int64(counter), num_true=NUM_TRUE, range_max=NUM_CLASSES, seed=5, seed2=6,
        **sampler._attrs, **attrs)]


@pytest.mark.parametrize("unique", [False, True])
def test_zero_prior_weight_is_the_tree_bitwise(ops, sampler, unique):
    for counter in (0, 1, 12345):
        default = raw_call(ops, sampler, counter, num_sampled=40, unique=unique)
        zero = raw_call(ops, sampler, counter, num_sampled=40, unique=unique, prior_weight=0.0)
        for old, new in zip(default, zero):
            assert old.tobytes() == new.tobytes()


def test_full_prior_weight_is_log_uniform(sampler):
    num_sampled = 64
    q = proposal(sampler, 1.0, num_sampled)
    np.testing.assert_allclose(q, log_uniform_q(), rtol=1e-5)
    # TensorFlow's own log-uniform sampler gives the same expected counts.
    _, tf_true_count, _ = tf.random.log_uniform_candidate_sampler(
        ALL_CLASSES, NUM_TRUE, num_sampled, False, NUM_CLASSES, seed=1)
    np.testing.assert_allclose(q * num_sampled, tf_true_count.numpy().reshape(-1), rtol=1e-5)
    sampled, _, sampled_count = draw(sampler, 100_000, False, 1.0, seed=11)
    np.testing.assert_allclose(sampled_count, 100_000 * log_uniform_q()[sampled], rtol=1e-5)
    counts = np.bincount(sampled, minlength=NUM_CLASSES)
    assert chi_square_p_value(counts, log_uniform_q()) > P_THRESHOLD


# (None is the sampler's own prior_weight: tests/test_kernel_prior.py.)
@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf"), -float("inf"),
                                 "0.5", True, [0.5]])
def test_python_api_rejects_bad_prior_weight(sampler, bad):
    with pytest.raises(ValueError, match="prior_weight") as info:
        tfs.random.kernel_candidate_sampler(ALL_CLASSES, NUM_TRUE, 8, False, NUM_CLASSES,
                                            inputs=queries(), sampler=sampler,
                                            prior_weight=bad)
    assert repr(bad) in str(info.value)
    with pytest.raises(ValueError, match="prior_weight"):
        sampler.candidate_sampler(ALL_CLASSES, NUM_TRUE, 8, False, NUM_CLASSES,
                                  inputs=queries(), prior_weight=bad)


def test_python_api_accepts_integer_and_numpy_weights(sampler):
    for weight in (0, 1, np.float32(0.25), np.float64(0.75)):
        sampled, _, _ = draw(sampler, 8, True, weight, seed=2)
        assert sampled.shape == (8,)


def test_raw_op_rejects_bad_prior_weight_without_crashing():
    """In a fresh interpreter (child_process): a crash fails this test only."""
    run_crash_cases(crash_shared_prior)


def test_eager_and_tf_function_agree(sampler):
    h = queries()
    truth = np.array([[0], [5], [300], [599]], np.int64)

    def call():
        return tfs.random.kernel_candidate_sampler(truth, 1, 32, True, NUM_CLASSES, seed=9,
                                                   inputs=h, sampler=sampler,
                                                   prior_weight=0.4)

    sampler.stream.counter.assign(0)
    eager = [t.numpy() for t in call()]
    sampler.stream.counter.assign(0)
    graph = [t.numpy() for t in tf.function(call)()]
    for a, b in zip(eager, graph):
        assert a.tobytes() == b.tobytes()
    # A mixture draw differs from the tree's alone (the prior's draws are in it).
    sampler.stream.counter.assign(0)
    tree_only = tfs.random.kernel_candidate_sampler(truth, 1, 32, True, NUM_CLASSES, seed=9,
                                                    inputs=h, sampler=sampler)[0].numpy()
    assert not np.array_equal(tree_only, eager[0])


def test_default_prior_weight(sampler):
    """The API's default is the measured DEFAULT_PRIOR_WEIGHT (0.5), not the op's 0."""
    assert tfs.samplers.kernel.DEFAULT_PRIOR_WEIGHT == 0.5
    sampler.stream.counter.assign(0)
    default = tfs.random.kernel_candidate_sampler(ALL_CLASSES, NUM_TRUE, 16, True, NUM_CLASSES,
                                                  seed=4, inputs=queries(), sampler=sampler)
    explicit = draw(sampler, 16, True, 0.5, seed=4)
    for a, b in zip(default, explicit):
        assert a.numpy().tobytes() == b.tobytes()
