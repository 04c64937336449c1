"""The per-example kernel proposal with the defensive log-uniform prior.

`KernelSampler(..., prior_weight=a)` samples each row from a p_lu + (1 - a)
q_tree(.|h) and returns that mixture's log q (the contract suite checks the
density against a brute-force oracle and the draws by chi-square, cases
`kernel-*-prior*`). Here: the default a = 0.5, a = 0 the tree alone, a = 1 exactly
TensorFlow's log-uniform, the partition-function estimate is unbiased, the
mixture's tails are what defends it (every class keeps a p_lu), and bad
prior_weight values are named errors.
"""
import numpy as np
import pytest
import tensorflow as tf

import tf_sampled as tfs
from error_assertions import raises_naming
from oracles import kernel_log_prob, log_uniform_probabilities
from sampler_cases import kernel_mixture_log_prob
from stats import P_THRESHOLD, chi_square_p_value

C, DIM, B = 500, 8, 3


def make_sampler(prior_weight, seed=0):
    rng = np.random.RandomState(seed)
    W = tf.Variable(rng.normal(size=(C, DIM)).astype(np.float32) * 0.7)
    b = tf.Variable(-np.log1p(np.arange(C)).astype(np.float32) * 0.3)
    return tfs.samplers.KernelSampler(
        W, feature_map=tfs.features.PositiveRandom(num_features=32, seed=5), leaf_size=16,
        biases=b, prior_weight=prior_weight)


def queries(batch=B, seed=1):
    return np.random.RandomState(seed).normal(size=(batch, DIM)).astype(np.float32)


TRUTH = np.array([[0, 7], [499, 3], [250, 250]], np.int64)


def test_default_and_zero_prior_weight():
    """The default proposal mixes half log-uniform in; prior_weight=0 is the
    tree alone, which is the op's own default (the attribute left out)."""
    assert make_sampler(0.5).prior_weight == tfs.samplers.kernel.DEFAULT_PRIOR_WEIGHT == 0.5
    assert tfs.samplers.KernelSampler(tf.Variable(np.ones([C, DIM], np.float32))).prior_weight \
        == 0.5
    tree = make_sampler(0.0)
    h = queries()
    seeds = dict(seed=4, seed2=5, counter=np.int64(3))
    args = dict(nodes=tree.nodes.handle, embeddings=tree.embeddings.handle,
                biases=tree.biases.handle, omega=tree.omega, inputs=h, true_classes=TRUTH,
                num_sampled=40, **seeds, **tree._attrs)  # pylint: disable=protected-access
    library = tfs.load_ops()
    with_zero = library.tf_sampled_kernel_tree_sample(prior_weight=0.0, **args)
    left_out = library.tf_sampled_kernel_tree_sample(**args)
    for a, b in zip(with_zero, left_out):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    all_ids = np.tile(np.arange(C), (B, 1))
    np.testing.assert_allclose(tree.log_prob(h, all_ids).numpy(), kernel_log_prob(tree, h),
                               rtol=1e-4, atol=1e-4)


def test_full_prior_weight_is_log_uniform():
    sampler = make_sampler(1.0)
    h = queries()
    p = log_uniform_probabilities(C)
    all_ids = np.tile(np.arange(C), (B, 1))
    np.testing.assert_allclose(np.exp(sampler.log_prob(h, all_ids).numpy()),
                               np.tile(p, (B, 1)), rtol=1e-5)
    cands = sampler.sample(h, 30_000, true_classes=TRUTH, seed=2)
    ids = cands.ids.numpy()
    np.testing.assert_allclose(cands.log_q.numpy(), np.log(p[ids]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cands.true_log_q.numpy(), np.log(p[TRUTH]), rtol=1e-5,
                               atol=1e-6)
    assert chi_square_p_value(np.bincount(ids.ravel(), minlength=C), p) > P_THRESHOLD


@pytest.mark.parametrize("prior_weight", [0.2, 0.7])
def test_sample_log_q_is_the_mixture(prior_weight):
    sampler = make_sampler(prior_weight)
    h = queries()
    expected = kernel_mixture_log_prob(sampler, h)
    cands = sampler.sample(h, 2000, true_classes=TRUTH, seed=9)
    ids = cands.ids.numpy()
    np.testing.assert_allclose(cands.log_q.numpy(), np.take_along_axis(expected, ids, 1),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cands.true_log_q.numpy(),
                               np.take_along_axis(expected, TRUTH, 1), rtol=1e-4, atol=1e-4)
    # The prior's share of the draws: Binomial(S, a) per row, the slots shuffled.
    for row in range(B):
        counts = np.bincount(ids[row], minlength=C)
        assert chi_square_p_value(counts, np.exp(expected[row])) > P_THRESHOLD
        first = np.bincount(ids[row, :1000], minlength=C)
        assert chi_square_p_value(first, np.exp(expected[row])) > P_THRESHOLD


def test_mixture_keeps_every_class_at_least_its_prior_share():
    """The defence: q(i|h) >= a p_lu(i) whatever the tree says, where the tree
    alone gives the tail almost nothing."""
    a = 0.3
    tree, mixed = make_sampler(0.0), make_sampler(a)
    # A query the tree is sharp on: a scaled class row.
    h = 6.0 * tree.embeddings.numpy()[None, 11]
    all_ids = np.arange(C)[None, :]
    q_tree = np.exp(tree.log_prob(h, all_ids).numpy()[0])
    q_mixed = np.exp(mixed.log_prob(h, all_ids).numpy()[0])
    floor = a * log_uniform_probabilities(C)
    assert np.all(q_mixed >= floor * (1 - 1e-5))
    assert np.sum(q_tree < 0.01 * floor) > C // 4  # the tail the prior defends
    np.testing.assert_allclose(q_mixed.sum(), 1.0, rtol=1e-4)


def test_partition_function_estimate_is_unbiased():
    """(1/S) sum_s exp(o_s) / q(c_s) has mean Z = sum_c exp(o_c) for every row."""
    sampler = make_sampler(0.4)
    h = queries(seed=3) * 0.5  # tails light enough for a standard error to mean much
    W, b = sampler.embeddings.numpy(), sampler.biases.numpy()
    logits = h.astype(np.float64) @ W.T.astype(np.float64) + b
    exact = np.exp(logits).sum(1)
    per_call, calls = 4, 5000

    @tf.function
    def draw():
        cands = sampler.sample(h, per_call, seed=None)
        return cands.ids, cands.log_q
    estimates = []
    for _ in range(calls):
        ids, log_q = (t.numpy() for t in draw())
        o = np.take_along_axis(logits, ids, 1)
        estimates.append(np.mean(np.exp(o - log_q.astype(np.float64)), 1))
    estimates = np.stack(estimates)
    mean = estimates.mean(0)
    stderr = estimates.std(0, ddof=1) / np.sqrt(calls)
    assert np.all(np.abs(mean - exact) < 5 * stderr), (mean / exact, stderr / exact)
    assert np.all(stderr / exact < 0.01), stderr / exact  # a 5% bias would fail


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), True, "0.5", None])
def test_bad_prior_weight_is_named(bad):
    W = tf.Variable(np.zeros([C, DIM], np.float32))
    raises_naming(ValueError, lambda: tfs.samplers.KernelSampler(W, prior_weight=bad),
                  "prior_weight")
    raises_naming(ValueError, lambda: tfs.layers.SampledSoftmax(
        C, sampler="kernel", sampler_options={"prior_weight": bad}).build((None, DIM)),
        "prior_weight")


def test_raw_ops_reject_bad_prior_weight_without_crashing():
    sampler = make_sampler(0.0)
    library = tfs.load_ops()
    args = dict(nodes=sampler.nodes.handle, embeddings=sampler.embeddings.handle,
                biases=sampler.biases.handle, omega=sampler.omega, inputs=queries(),
                **sampler._attrs)  # pylint: disable=protected-access
    for bad in (-0.5, 1.01, float("nan")):
        raises_naming(tf.errors.InvalidArgumentError,
                      lambda: library.tf_sampled_kernel_tree_sample(
                          true_classes=TRUTH, counter=0, num_sampled=4, prior_weight=bad,
                          **args), "prior_weight")
        raises_naming(tf.errors.InvalidArgumentError,
                      lambda: library.tf_sampled_kernel_tree_log_prob(
                          classes=TRUTH, prior_weight=bad, **args), "prior_weight")


def test_layer_passes_prior_weight_to_its_sampler_and_config():
    layer = tfs.layers.SampledSoftmax(C, sampler="kernel", num_sampled=8,
                                      sampler_options={"prior_weight": 0.25})
    layer.build((None, DIM))
    assert layer.sampler.prior_weight == 0.25
    restored = tfs.layers.SampledSoftmax.from_config(layer.get_config())
    restored.build((None, DIM))
    assert restored.sampler.prior_weight == 0.25


@pytest.mark.parametrize("prior_weight", [0.0, 0.3])
def test_candidate_sampler_takes_the_samplers_prior_weight_by_default(prior_weight):
    sampler = make_sampler(prior_weight)
    h = queries()
    truth = TRUTH[:, :1]
    draws = []
    for explicit in ({}, {"prior_weight": prior_weight}):
        sampler.stream.counter.assign(0)
        draws.append(tfs.random.kernel_candidate_sampler(
            truth, 1, 12, True, C, seed=6, inputs=h, sampler=sampler, **explicit))
    for a, b in zip(*draws):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    sampler.stream.counter.assign(0)
    other = tfs.random.kernel_candidate_sampler(truth, 1, 12, True, C, seed=6, inputs=h,
                                                sampler=sampler, prior_weight=0.9)
    assert not np.array_equal(other[2].numpy(), draws[0][2].numpy())


@pytest.mark.parametrize("prior_weight", [0.3, 1.0])
def test_prior_mixed_in_around_the_tree_ops_is_the_same_proposal(prior_weight):
    """The path a GPU table takes (its kernels draw from the tree alone): each
    slot from log-uniform with probability a, else the tree's draw; log q the
    mixture's. Forced here on the CPU and checked against the same oracle."""
    composed, ops = make_sampler(prior_weight), make_sampler(prior_weight)
    composed._compose_prior = True  # pylint: disable=protected-access
    h = queries()
    expected = kernel_mixture_log_prob(composed, h)
    all_ids = np.tile(np.arange(C), (B, 1))
    np.testing.assert_allclose(composed.log_prob(h, all_ids).numpy(),
                               ops.log_prob(h, all_ids).numpy(), rtol=1e-5, atol=1e-5)
    cands = composed.sample(h, 30_000, true_classes=TRUTH, seed=5)
    ids = cands.ids.numpy()
    np.testing.assert_allclose(cands.log_q.numpy(), np.take_along_axis(expected, ids, 1),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cands.true_log_q.numpy(), np.take_along_axis(expected, TRUTH, 1),
                               rtol=1e-4, atol=1e-4)
    for row in range(B):
        counts = np.bincount(ids[row], minlength=C)
        assert chi_square_p_value(counts, np.exp(expected[row])) > P_THRESHOLD
    # Seeded: the same call twice draws the same; tf.function draws as eager.
    composed.stream.counter.assign(0)
    eager = composed.sample(h, 20, true_classes=TRUTH, seed=8)
    composed.stream.counter.assign(0)
    graph = tf.function(lambda: composed.sample(h, 20, true_classes=TRUTH, seed=8))()
    for a, b in zip(eager, graph):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
