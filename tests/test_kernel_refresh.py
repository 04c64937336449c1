"""Incremental refresh: equal to a full rebuild, and free of drift."""
import numpy as np
import pytest
import tensorflow as tf

import tf_sampled as tfs

NUM_CLASSES, DIM = 700, 6


def make(fmap, seed=0):
    rng = np.random.RandomState(seed)
    W = tf.Variable(rng.normal(size=(NUM_CLASSES, DIM)).astype(np.float32) * 0.5)
    b = tf.Variable(rng.normal(size=(NUM_CLASSES,)).astype(np.float32) * 0.1)
    return tfs.samplers.KernelSampler(W, feature_map=fmap, leaf_size=9, biases=b)


def rebuilt_nodes(sampler):
    fresh = tfs.samplers.KernelSampler(sampler.embeddings, feature_map=sampler.feature_map,
                                       leaf_size=sampler.leaf_size, biases=sampler.biases)
    return fresh.nodes.numpy()


def assert_nodes_close(actual, expected):
    scale = np.abs(expected).max(0, keepdims=True)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-9 * scale.max() + 1e-12)


@pytest.fixture(params=[True, False], ids=["in_place", "node_deltas"])
def in_place(request):
    """refresh(ids) through the in-place op, or through the node-delta op and
    scatter-add that mirrored and GPU variables take."""
    return request.param


def test_refresh_ids_equals_full_rebuild(in_place):
    for fmap in (tfs.features.PositiveRandom(32, seed=1), tfs.features.RandomFourier(16, seed=2),
                 tfs.features.Quadratic(alpha=5.0), tfs.features.GaussianMoments()):
        sampler = make(fmap)
        rng = np.random.RandomState(3)
        ids = np.array([0, 5, 5, 699, 350, 351, 12])  # duplicates on purpose
        sampler.embeddings.scatter_update(tf.IndexedSlices(
            rng.normal(size=(len(ids), DIM)).astype(np.float32), ids))
        sampler.biases.scatter_update(tf.IndexedSlices(
            rng.normal(size=(len(ids),)).astype(np.float32), ids))
        sampler.refresh(ids, in_place=in_place)
        assert_nodes_close(sampler.nodes.numpy(), rebuilt_nodes(sampler))
        np.testing.assert_array_equal(sampler.rows.numpy()[:, :DIM], sampler.embeddings.numpy())


def test_ten_thousand_incremental_updates_do_not_drift(in_place):
    sampler = make(tfs.features.PositiveRandom(32, seed=4))
    rng = np.random.RandomState(5)

    @tf.function
    def step(ids, values):
        sampler.embeddings.scatter_update(tf.IndexedSlices(values, ids))
        sampler.refresh(ids, in_place=in_place)

    for _ in range(100):  # 100 x 100 = 10k row updates
        ids = rng.choice(NUM_CLASSES, 100, replace=False)
        step(tf.constant(ids), tf.constant(rng.normal(size=(100, DIM)).astype(np.float32)))
    assert_nodes_close(sampler.nodes.numpy(), rebuilt_nodes(sampler))


def test_full_refresh_follows_the_embeddings():
    sampler = make(tfs.features.PositiveRandom(32, seed=6))
    sampler.embeddings.assign(sampler.embeddings * -1.5)
    sampler.refresh()
    assert_nodes_close(sampler.nodes.numpy(), rebuilt_nodes(sampler))


def test_stale_tree_still_returns_the_exact_log_q():
    """The tree lags the embeddings; log q describes what was actually sampled
    (the default proposal: log-uniform mixed into the tree's)."""
    from sampler_cases import kernel_mixture_log_prob
    sampler = make(tfs.features.PositiveRandom(32, seed=7))
    assert sampler.prior_weight == 0.5
    sampler.embeddings.assign_add(tf.random.normal([NUM_CLASSES, DIM], seed=1))
    h = np.random.RandomState(8).normal(size=(2, DIM)).astype(np.float32)
    cands = sampler.sample(h, 40, seed=9)
    ref = kernel_mixture_log_prob(sampler, h)  # stale node sums, current in-leaf logits
    np.testing.assert_allclose(cands.log_q.numpy(), np.take_along_axis(ref, cands.ids.numpy(), 1),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.exp(ref).sum(1), 1.0, rtol=1e-9)


def test_without_snapshot_only_full_refresh_is_allowed():
    rng = np.random.RandomState(9)
    W = tf.Variable(rng.normal(size=(NUM_CLASSES, DIM)).astype(np.float32))
    sampler = tfs.samplers.KernelSampler(W, feature_map=tfs.features.PositiveRandom(16, seed=1),
                                         leaf_size=9, incremental=False)
    assert sampler.memory_bytes()["rows"] == 0
    W.assign(W * 0.5)
    sampler.refresh()
    expected = tfs.samplers.KernelSampler(W, feature_map=sampler.feature_map, leaf_size=9)
    assert_nodes_close(sampler.nodes.numpy(), expected.nodes.numpy())
    with pytest.raises(ValueError, match="incremental"):
        sampler.refresh([1, 2])


def test_in_place_refresh_leaves_earlier_reads_unchanged():
    """A dense read taken before refresh(ids) keeps its values (the op copies a
    buffer still shared before writing it)."""
    sampler = make(tfs.features.PositiveRandom(32, seed=10))
    nodes_before, rows_before = tf.identity(sampler.nodes), tf.identity(sampler.rows)
    expected_nodes, expected_rows = nodes_before.numpy().copy(), rows_before.numpy().copy()
    sampler.embeddings.scatter_update(tf.IndexedSlices(tf.ones([2, DIM]), [4, 600]))
    sampler.refresh([4, 600])
    np.testing.assert_array_equal(nodes_before.numpy(), expected_nodes)
    np.testing.assert_array_equal(rows_before.numpy(), expected_rows)
    assert not np.array_equal(sampler.nodes.numpy(), expected_nodes)
    assert_nodes_close(sampler.nodes.numpy(), rebuilt_nodes(sampler))
