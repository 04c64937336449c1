"""benchmarks/pooled_negatives.py: the pooled proposals' densities, draws and estimates.

NumPy oracles over all classes: the cluster proposal's state and density, the
batch mixture of each proposal, chi-square of the pooled draws against the
stratified expectation, and the unbiasedness of every example's
partition-function estimate through the pool.
"""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import pooled_negatives as pooled
import compare_samplers  # the examples/ folder is on sys.path through the benchmark
import sampler_objectives
from stats import P_THRESHOLD, chi_square_p_value
import tf_sampled as tfs

C, D, B = 300, 6, 4


def _table(seed=0, num_classes=C, scale=1.0):
    rng = np.random.default_rng(seed)
    W = tf.Variable(rng.normal(scale=scale, size=(num_classes, D)).astype(np.float32))
    b = tf.Variable(rng.normal(scale=1.5, size=num_classes).astype(np.float32))
    h = tf.constant(rng.normal(size=(B, D)).astype(np.float32))
    return W, b, h


def _softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def _cluster_oracle(proposal, W, b, h):
    """q(c|h_b) [B, C] over all classes, from the assignment alone (float64)."""
    k = proposal.assignment.numpy()
    n = proposal.num_clusters
    w, bias = W.numpy().astype(np.float64), b.numpy().astype(np.float64)
    weight = np.exp(bias)
    mass = np.bincount(k, weights=weight, minlength=n)
    within = weight / mass[k]
    centroids = np.zeros((n, D))
    np.add.at(centroids, k, within[:, None] * w)
    occupied = mass > 0
    # The state holds the centroids of this assignment (empty clusters keep theirs).
    np.testing.assert_allclose(proposal.centroids.numpy()[occupied], centroids[occupied],
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(proposal.log_mass.numpy()[occupied], np.log(mass[occupied]),
                               rtol=1e-5, atol=1e-5)
    assert np.all(np.isneginf(proposal.log_mass.numpy()[~occupied]))
    logits = h.numpy().astype(np.float64) @ proposal.centroids.numpy().T.astype(np.float64)
    logits = np.where(occupied, logits + np.log(np.where(occupied, mass, 1.0)), -np.inf)
    return _softmax(logits)[:, k] * within


def _oracle_softmax(W, b, h):
    return _softmax(h.numpy().astype(np.float64) @ W.numpy().T + b.numpy())


def _assignment_is_nearest(proposal, W, centroids_before):
    d2 = ((W.numpy()[:, None, :] - centroids_before[None]) ** 2).sum(-1)
    best = d2.min(1)
    chosen = d2[np.arange(len(d2)), proposal.assignment.numpy()]
    np.testing.assert_allclose(chosen, best, rtol=1e-4, atol=1e-4)


def test_cluster_state_and_density_match_a_brute_force_computation():
    W, b, h = _table()
    proposal = pooled.ClusterProposal(W, b, num_clusters=16, seed=1, init_iterations=2)
    before = proposal.centroids.numpy().copy()
    W.assign_add(0.3 * tf.random.stateless_normal(W.shape, [1, 2]))
    b.assign_add(0.3 * tf.random.stateless_normal(b.shape, [3, 4]))
    proposal.refresh()  # follows the changed table
    _assignment_is_nearest(proposal, W, before)
    q = _cluster_oracle(proposal, W, b, h)
    np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-6)
    classes = tf.constant(np.tile(np.arange(C), (B, 1)), tf.int64)
    np.testing.assert_allclose(np.exp(proposal.log_prob(h, classes).numpy()), q,
                               rtol=1e-4, atol=1e-9)
    _, mixture = proposal.draw(h, 1)
    np.testing.assert_allclose(mixture(tf.range(C, dtype=tf.int64)).numpy(), q.mean(0),
                               rtol=1e-4, atol=1e-9)


def test_oracle_mixture_is_the_mean_softmax():
    W, b, h = _table(1)
    _, mixture = pooled.OracleProposal(W, b, seed=0).draw(h, 2)
    np.testing.assert_allclose(mixture(tf.range(C, dtype=tf.int64)).numpy(),
                               _oracle_softmax(W, b, h).mean(0), rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("kind", ["cluster", "oracle"])
def test_pooled_draws_follow_each_examples_proposal(kind):
    """K draws per example from q(.|h_b): row b of the pool against q(.|h_b) (chi-square)."""
    W, b, h = _table(2)
    if kind == "cluster":
        proposal = pooled.ClusterProposal(W, b, num_clusters=12, seed=3)
        q = _cluster_oracle(proposal, W, b, h)
    else:
        proposal = pooled.OracleProposal(W, b, seed=3)
        q = _oracle_softmax(W, b, h)
    per_example, calls = 50, 400  # 20,000 draws per example
    draw = tf.function(lambda: proposal.draw(h, per_example)[0])
    ids = np.stack([draw().numpy().reshape(B, per_example) for _ in range(calls)], 1)
    for row in range(B):
        counts = np.bincount(ids[row].ravel(), minlength=C).astype(np.float64)
        assert counts[q[row] == 0].sum() == 0
        assert chi_square_p_value(counts, q[row]) > P_THRESHOLD, (kind, row)


@pytest.mark.parametrize("kind", ["cluster", "oracle"])
def test_every_examples_partition_function_estimate_is_unbiased(kind):
    """(1/P) sum_j exp(o_bj) / q_bar(c_j) over a pool has mean Z_b = sum_c exp(o_bc)."""
    W, b, h = _table(3, scale=0.5)  # tails light enough for a standard error to mean much
    proposal = (pooled.ClusterProposal(W, b, num_clusters=10, seed=4) if kind == "cluster"
                else pooled.OracleProposal(W, b, seed=4))
    per_example, pools = 2, 4000  # pools of B K = 8: a real variance to average out
    logits = h.numpy().astype(np.float64) @ W.numpy().T + b.numpy()
    exact = np.exp(logits).sum(1)

    @tf.function
    def estimate():
        ids, mixture = proposal.draw(h, per_example)
        o = tf.gather(tf.constant(logits), ids, axis=1)  # [B, P]
        return tf.reduce_mean(tf.exp(o) / tf.cast(mixture(ids), tf.float64), 1)
    estimates = np.stack([estimate().numpy() for _ in range(pools)])
    mean = estimates.mean(0)
    stderr = estimates.std(0, ddof=1) / np.sqrt(pools)
    assert np.all(np.abs(mean - exact) < 5 * stderr), (mean / exact, stderr / exact)
    # Precise enough that a bias of a few percent fails.
    assert np.all(stderr / exact < 0.02), stderr / exact


def test_pooled_loss_trains_and_draws_repeat_with_the_seed():
    W, b, h = _table(4)
    labels = tf.constant([0, 5, 7, 299], tf.int64)
    results = []
    for _ in range(2):
        proposal = pooled.ClusterProposal(W, b, num_clusters=8, seed=7)
        loss_fn = tf.function(pooled.pooled_loss_fn(W, b, proposal, 8 * B, B))
        results.append([loss_fn(h, labels).numpy() for _ in range(3)])
    np.testing.assert_array_equal(results[0], results[1])
    assert np.all(np.isfinite(results[0])) and np.asarray(results[0]).shape == (3, B)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(loss_fn(h, labels))
    grad_w, grad_b = tape.gradient(loss, [W, b])
    assert isinstance(grad_w, tf.IndexedSlices)  # rows of the pool, never [C, d]
    assert np.all(np.isfinite(grad_w.values.numpy())) and np.all(np.isfinite(grad_b.values))


@pytest.mark.parametrize("pool, batch, message", [
    (6, 4, "multiple of the batch size 4"), (2, 4, "a pool of 2 negatives")])
def test_a_pool_that_does_not_divide_into_the_batch_is_a_value_error(pool, batch, message):
    with pytest.raises(ValueError, match=message):
        pooled.per_example_draws(pool, batch)


@pytest.mark.parametrize("clusters", [0, C + 1])
def test_cluster_count_outside_the_classes_is_a_value_error(clusters):
    W, b, _ = _table()
    with pytest.raises(ValueError, match=f"num_clusters must be in \\[1, {C}\\].*{clusters}"):
        pooled.ClusterProposal(W, b, num_clusters=clusters)


def test_degenerate_sizes():
    for num_classes, clusters in [(1, 1), (2, 1), (2, 2), (64, 64)]:
        W, b, h = _table(5, num_classes)
        proposal = pooled.ClusterProposal(W, b, num_clusters=clusters, seed=0)
        ids, mixture = proposal.draw(h, 3)
        assert ids.shape == [3 * B] and np.all((ids.numpy() >= 0) & (ids.numpy() < num_classes))
        np.testing.assert_allclose(
            mixture(tf.range(num_classes, dtype=tf.int64)).numpy().sum(), 1.0, rtol=1e-5)


def test_study_objectives_run_in_the_main_job(tmp_path):
    """The objectives train through compare_samplers; an unknown study name is refused."""
    sampler_objectives.STUDY_OBJECTIVES.update(pooled.STUDY_OBJECTIVES)
    try:
        data = tfs.datasets.load_wordnet()
        data = dataclasses.replace(data, x_train=data.x_train[:1024], y_train=data.y_train[:1024])
        config = compare_samplers.RunConfig(steps=4, batch_size=32, eval_every=2,
                                            eval_every_s=0, eval_examples=128, refresh_every=2)
        summary = compare_samplers.run(["log_uniform@64", "pooled_cluster@64",
                                        "pooled_oracle@64"], [0], str(tmp_path), data, config)
        assert [s["objective"] for s in summary] == ["log_uniform@64", "pooled_cluster@64",
                                                     "pooled_oracle@64"]
        assert all(np.isfinite(s["val_ce"]) for s in summary)
        with pytest.raises(ValueError, match="multiple of the batch size 32"):
            compare_samplers.run(["pooled_cluster@48"], [0], str(tmp_path), data, config)
    finally:
        for name in pooled.STUDY_OBJECTIVES:
            sampler_objectives.STUDY_OBJECTIVES.pop(name)
    with pytest.raises(ValueError, match="Unknown objective 'pooled_cluster'"):
        sampler_objectives.parse_objective("pooled_cluster@64", 16, 1000)
