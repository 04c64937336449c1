"""KernelSampler against the brute-force proposal: the normalised distribution,
the batch-shared proposal, leaf sizes, gradients and memory.

The contract every sampler keeps (frequencies, log q of the draws, eager and
graph calls, seeds, checkpoints, in-place reads) is in test_sampler_contract.py.
"""
import numpy as np
import pytest
import tensorflow as tf

import tf_sampled as tfs
from oracles import kernel_log_prob
from sampler_cases import KERNEL_CLASSES as NUM_CLASSES, KERNEL_MAPS as MAPS
from sampler_cases import kernel_queries as queries, kernel_sampler as make_sampler
from stats import P_THRESHOLD, chi_square_p_value


@pytest.fixture(params=[(name, biases) for name in MAPS for biases in (True, False)],
                ids=lambda p: f"{p[0]}-{'bias' if p[1] else 'nobias'}")
def sampler(request):
    name, biases = request.param
    return make_sampler(MAPS[name](), biases=biases)


def assert_log_close(actual, expected):
    """Within 1e-4 relative (log q values near 0 compare absolutely)."""
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


def test_distribution_is_normalised(sampler):
    ref = kernel_log_prob(sampler, queries())
    np.testing.assert_allclose(np.exp(ref).sum(1), 1.0, rtol=1e-9)
    all_ids = np.tile(np.arange(NUM_CLASSES), (3, 1))
    assert_log_close(sampler.log_prob(queries(), all_ids).numpy(), ref)


def mixture_query(sampler, h):
    """phi-bar and x-bar of the batch-shared proposal, computed independently."""
    fmap = sampler.feature_map
    x = np.concatenate([h, np.ones([len(h), 1])], 1) if sampler.biases is not None else h
    x = x.astype(np.float64)
    omega = sampler.omega.numpy()
    has_bias = sampler.biases is not None
    phi = fmap.reference_features(x, omega, has_bias, query=True).numpy()
    rows = sampler.rows.numpy().astype(np.float64)
    root = fmap.reference_features(rows, omega, has_bias).numpy().sum(0)
    mass = phi @ root
    if np.any(mass > 0):
        weights = np.where(mass > 0, 1.0 / np.where(mass > 0, mass, 1.0), 0.0)
        mixture = (phi * weights[:, None]).mean(0)
    else:
        mixture = phi.mean(0)
    return mixture[None, :], x.mean(0, keepdims=True)


def shared_reference(sampler, h):
    if isinstance(sampler.feature_map, tfs.features.GaussianMoments):
        # No mixture identity: the shared query is the mean input.
        x_bar = np.concatenate([h, np.ones([len(h), 1])], 1) if sampler.biases is not None else h
        return np.exp(kernel_log_prob(sampler, h[:1], query_rows=x_bar.mean(0, keepdims=True)))[0]
    phi_bar, x_bar = mixture_query(sampler, h)
    return np.exp(kernel_log_prob(sampler, h[:1], query_features=phi_bar, query_rows=x_bar))[0]


SHARED_TRUTH = np.array([[1], [2], [500], [999]])


def shared_draw(sampler, num_sampled, unique, seed):
    """The drop-in triple for 4 queries, and the shared proposal it should follow."""
    h = queries(batch=4, seed=9)
    triple = tfs.random.kernel_candidate_sampler(
        SHARED_TRUTH, 1, num_sampled, unique, NUM_CLASSES, seed=seed, inputs=h, sampler=sampler,
        prior_weight=0.0)  # the tree's proposal alone (the prior: test_kernel_shared_prior)
    return triple, shared_reference(sampler, h)


def test_shared_frequencies_and_expected_counts(sampler):
    truth = SHARED_TRUTH
    draws = 200_000
    (sampled, true_count, sampled_count), q = shared_draw(sampler, draws, False, seed=5)
    np.testing.assert_allclose(sampled_count.numpy(), draws * q[sampled.numpy()], rtol=1e-4)
    np.testing.assert_allclose(true_count.numpy()[:, 0], draws * q[truth[:, 0]], rtol=1e-4)
    counts = np.bincount(sampled.numpy(), minlength=NUM_CLASSES)
    assert chi_square_p_value(counts, q) > P_THRESHOLD


def test_unique_expected_counts_follow_tensorflow_definition(sampler):
    truth = SHARED_TRUTH
    num_sampled = 100
    (sampled, true_count, sampled_count), q = shared_draw(sampler, num_sampled, True, seed=6)
    sampled = sampled.numpy()
    assert len(set(sampled)) == num_sampled
    # Every count is 1 - (1 - q)^num_tries for one integer num_tries >= S.
    tries = np.log1p(-sampled_count.numpy().astype(np.float64)) / np.log1p(-q[sampled])
    num_tries = int(np.round(np.median(tries)))
    assert num_tries >= num_sampled
    expected = -np.expm1(num_tries * np.log1p(-q))
    if num_tries == num_sampled:
        expected = num_sampled * q
    np.testing.assert_allclose(sampled_count.numpy(), expected[sampled], rtol=1e-3)
    np.testing.assert_allclose(true_count.numpy()[:, 0], expected[truth[:, 0]], rtol=1e-3)


def test_unique_first_draws_follow_the_proposal():
    """With unique=True the first sampled id is a plain draw from q-bar."""
    sampler = make_sampler(MAPS["positive"]())
    h = queries(batch=4, seed=9)
    truth = np.zeros([4, 1], np.int64)

    @tf.function
    def first_ids():
        return tf.stack([tfs.random.kernel_candidate_sampler(
            truth, 1, 2, True, NUM_CLASSES, seed=8 + i, inputs=h, sampler=sampler,
            prior_weight=0.0)[0][0]
            for i in range(50)])

    ids = np.concatenate([first_ids().numpy() for _ in range(200)])  # 10k first draws
    q = shared_reference(sampler, h)
    assert chi_square_p_value(np.bincount(ids, minlength=NUM_CLASSES), q) > P_THRESHOLD


def test_leaf_size_one_and_single_leaf_trees():
    for leaf_size in (1, NUM_CLASSES, 5000):
        sampler = make_sampler(MAPS["positive"](), leaf_size=leaf_size)
        h = queries()
        cands = sampler.sample(h, 20, seed=2)
        ref = kernel_log_prob(sampler, h)
        assert_log_close(cands.log_q.numpy(), np.take_along_axis(ref, cands.ids.numpy(), 1))


def test_single_leaf_is_the_exact_softmax():
    """With one leaf the proposal is the kernel itself: softmax of the logits."""
    sampler = make_sampler(MAPS["positive"](), leaf_size=NUM_CLASSES)
    h = queries()
    logits = h @ sampler.embeddings.numpy().T + sampler.biases.numpy()
    log_softmax = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1,
                                  keepdims=True)) - logits.max(1, keepdims=True)
    all_ids = np.tile(np.arange(NUM_CLASSES), (3, 1))
    assert_log_close(sampler.log_prob(h, all_ids).numpy(), log_softmax)


def test_sampling_has_no_gradient_and_loss_gradient_is_sparse():
    sampler = make_sampler(MAPS["positive"]())
    h = tf.constant(queries())
    labels = tf.constant([[1], [2], [3]], tf.int64)
    with tf.GradientTape() as tape:
        tape.watch(h)
        cands = sampler.sample(h, 10, true_classes=labels, seed=1)
        loss = tfs.nn.sampled_softmax_loss(sampler.embeddings, sampler.biases, labels, h, cands)
    grads = tape.gradient(loss, [sampler.embeddings, sampler.biases, h])
    assert isinstance(grads[0], tf.IndexedSlices) and isinstance(grads[1], tf.IndexedSlices)
    # One row per distinct class read (the fused loss deduplicates).
    read = np.unique(np.concatenate([labels.numpy().ravel(), cands.ids.numpy().ravel()]))
    np.testing.assert_array_equal(grads[0].indices.numpy(), read)
    assert np.all(np.isfinite(grads[2].numpy()))


def test_memory_is_small_at_default_leaf_size():
    W = tf.Variable(tf.zeros([10_000, 128]))
    sampler = tfs.samplers.KernelSampler(W, feature_map=tfs.features.PositiveRandom(128, seed=0),
                                         biases=tf.Variable(tf.zeros([10_000])))
    table_bytes = 10_000 * 128 * 4
    assert sampler.memory_bytes()["nodes"] <= table_bytes / 2


def test_refresh_ids_by_node_deltas_equals_the_in_place_update():
    """refresh(ids, in_place=False): the node-delta path (of mirrored and GPU
    variables) on plain CPU variables, with the in-place op's result."""
    ids = np.array([0, 5, 5, 999, 500, 17])  # duplicates on purpose
    rows = np.random.RandomState(2).normal(size=(len(ids), 8)).astype(np.float32)
    samplers = {}
    for in_place in (True, False):
        sampler = make_sampler(MAPS["positive"]())
        sampler.embeddings.scatter_update(tf.IndexedSlices(rows, ids))
        refresh = tf.function(lambda: sampler.refresh(ids, in_place=in_place))
        op_types = {op.type for op in refresh.get_concrete_function().graph.get_operations()}
        assert ("TfSampled>KernelTreeRefreshRows" in op_types) == in_place, op_types
        refresh()
        samplers[in_place] = sampler
    np.testing.assert_array_equal(samplers[False].rows.numpy(), samplers[True].rows.numpy())
    np.testing.assert_allclose(samplers[False].nodes.numpy(), samplers[True].nodes.numpy(),
                               rtol=1e-12, atol=1e-12)
