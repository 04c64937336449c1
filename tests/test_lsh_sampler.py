"""LSHSampler against NumPy oracles: exact log q, retrieval, tables, the schedule.

The contract every sampler keeps (frequencies, log q of the draws, eager and
graph calls, seeds, checkpoints, in-place reads) is in test_sampler_contract.py.
"""
import numpy as np
import pytest
import tensorflow as tf

import lsh_oracles
import tf_sampled as tfs
from sampler_cases import LSH_CLASSES as NUM_CLASSES, LSH_CONFIGS as CONFIGS, LSH_DIM as DIM
from sampler_cases import lsh_inputs_and_truth as inputs_and_truth
from sampler_cases import lsh_reference as reference, lsh_sampler as make_sampler
from stats import P_THRESHOLD, chi_square_p_value



@pytest.fixture(params=[(f, q) for f in CONFIGS for q in ("embedding", "label")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def sampler(request):
    family, query = request.param
    return make_sampler(family, query)


def test_log_prob_matches_brute_force_from_table_contents(sampler):
    h, truth = inputs_and_truth()
    assert sampler.counts.numpy().max() == sampler.bucket_size  # overflow exercised
    ref = reference(sampler, h, truth)
    np.testing.assert_allclose(np.exp(ref).sum(1), 1.0, rtol=1e-12)
    all_ids = np.tile(np.arange(NUM_CLASSES), (3, 1))
    log_q = sampler.log_prob(h, all_ids, true_classes=truth).numpy()
    np.testing.assert_allclose(log_q, ref, rtol=1e-5, atol=1e-5)


def test_every_class_has_probability_at_least_epsilon_over_c(sampler):
    h, truth = inputs_and_truth(batch=8, seed=4)
    all_ids = np.tile(np.arange(NUM_CLASSES), (8, 1))
    q = np.exp(sampler.log_prob(h, all_ids, true_classes=truth).numpy().astype(np.float64))
    assert q.min() >= 0.1 / NUM_CLASSES * (1 - 1e-6)
    # And the buckets matter: the largest q is far above uniform.
    assert q.max(1).min() > 5.0 / NUM_CLASSES


def test_empty_buckets_fall_back_to_uniform():
    """A query whose buckets are all empty samples uniformly (q = 1/C)."""
    sampler = make_sampler("simhash", num_tables=2, num_hashes=12)  # 4096 buckets, 300 classes
    codes = sampler.codes.numpy()
    rng = np.random.RandomState(5)
    for _ in range(200):
        h = rng.normal(size=(1, DIM)).astype(np.float32)
        query_codes, margins = lsh_oracles.codes(sampler, h)
        if margins.min() > 1e-4 and not (codes == query_codes).any():
            break
    else:
        pytest.fail("no query with only empty buckets found")
    log_q = sampler.log_prob(h, np.arange(NUM_CLASSES)[None]).numpy()
    np.testing.assert_allclose(log_q, -np.log(NUM_CLASSES), rtol=1e-6)


@pytest.mark.slow
def test_simhash_retrieval_follows_the_collision_probability():
    """P[class in one of the query's L buckets] = 1 - (1 - p^K)^L, p = 1 - theta / pi.

    Classes sit at fixed angles to one query; the hash functions are redrawn
    `rounds` times (rehash). Classes of one round share the hash functions,
    so the round means, not the classes, are the independent samples: the
    mean of `rounds` of them has standard error at most sqrt(P (1 - P) / rounds).
    """
    dim, per_angle, rounds, num_tables, num_hashes = 16, 20, 150, 4, 3
    angles = np.array([0.1, 0.3, 0.5, 0.7, 0.9, 1.2, np.pi])
    rng = np.random.RandomState(0)
    query = np.zeros(dim, np.float32)
    query[0] = 1.0
    rows = []
    for theta in angles:
        for _ in range(per_angle):
            v = rng.normal(size=dim)
            v[0] = 0
            v /= np.linalg.norm(v)
            rows.append(np.cos(theta) * query + np.sin(theta) * v)
    W = tf.Variable(np.array(rows, np.float32))
    sampler = tfs.samplers.LSHSampler(W, num_tables=num_tables, num_hashes=num_hashes,
                                      bucket_size=len(rows), epsilon=0.5, seed=3)
    num_classes = len(rows)

    @tf.function
    def retrieved():
        sampler.rehash()
        q = tf.exp(tf.cast(sampler.log_prob(query[None], tf.range(num_classes)[None]),
                           tf.float64))[0]
        # The antipodal classes never collide: their q is the uniform part.
        return q > tf.reduce_min(q) * (1 + 1e-6)

    hits = np.array([retrieved().numpy() for _ in range(rounds)]).reshape(
        rounds, len(angles), per_angle)
    observed = hits.mean((0, 2))
    p = 1 - angles / np.pi
    expected = 1 - (1 - p**num_hashes)**num_tables
    bound = 4.5 * np.sqrt(expected * (1 - expected) / rounds) + 0.01
    assert np.all(np.abs(observed - expected) <= bound), (observed, expected, bound)
    assert np.all(np.diff(observed) <= 0.02)  # closer classes are retrieved more often


def check_tables(sampler, rebuilt=True):
    """The tables hold exactly the current codes (oracle), as the layout defines.

    After a rebuild every bucket is as full as its code's classes allow; after
    re-insertion a bucket a row left may hold fewer (the classes that
    overflowed it are not known without an inverted index) until the next
    rebuild.
    """
    W = sampler.embeddings.numpy()
    codes, margins = lsh_oracles.codes(sampler, W)
    clear = margins > 1e-4
    assert clear.mean() > 0.9
    stored = sampler.codes.numpy()
    np.testing.assert_array_equal(stored[clear], codes[clear])
    buckets, counts = sampler.buckets.numpy(), sampler.counts.numpy()
    bs, nb = sampler.bucket_size, sampler.num_buckets
    for table in range(sampler.num_tables):
        for code in range(nb):
            bucket = table * nb + code
            members = buckets[bucket, :counts[bucket]]
            assert np.all(buckets[bucket, counts[bucket]:] == -1)
            assert np.all(np.diff(members) > 0)  # sorted, no duplicates
            named = np.nonzero(stored[:, table] == code)[0]
            if rebuilt:
                assert counts[bucket] == min(bs, len(named))
            else:
                assert counts[bucket] <= min(bs, len(named))
            assert np.all(np.isin(members, named))


@pytest.mark.parametrize("family", list(CONFIGS))
def test_tables_hold_the_current_codes_after_rebuild_and_reinsertion(family):
    sampler = make_sampler(family)
    check_tables(sampler)
    W = sampler.embeddings
    rng = np.random.RandomState(9)
    W.assign(rng.normal(size=W.shape).astype(np.float32))
    sampler.refresh()
    check_tables(sampler)
    ids = np.array([0, 5, 5, 299, 150, 151, 12])  # duplicates on purpose
    W.scatter_update(tf.IndexedSlices(rng.normal(size=(len(ids), DIM)).astype(np.float32), ids))
    sampler.refresh(ids)
    check_tables(sampler, rebuilt=False)
    # A re-inserted row is in its bucket (it evicts a member of a full one).
    for table in range(sampler.num_tables):
        for i in np.unique(ids):
            bucket = table * sampler.num_buckets + sampler.codes.numpy()[i, table]
            assert i in sampler.buckets.numpy()[bucket]


def test_dwta_densifies_empty_bins():
    """Rows with many zeros: empty bins borrow other hashes' values (oracle)."""
    sampler = make_sampler("dwta", bin_size=2, num_hashes=3)
    W = sampler.embeddings
    sparse = np.random.RandomState(2).normal(size=(NUM_CLASSES, DIM)).astype(np.float32)
    sparse[:, 2:] = 0  # most bins see only zeros
    sparse[0] = 0  # an all-zero row: code 0 everywhere
    W.assign(sparse)
    sampler.refresh()
    codes, _ = lsh_oracles.codes(sampler, sparse)
    np.testing.assert_array_equal(sampler.codes.numpy(), codes)
    assert np.all(codes[0] == 0)


def test_shared_candidates_follow_the_batch_mixture():
    sampler = make_sampler("simhash")
    h, truth = inputs_and_truth(batch=4, seed=9)
    q = np.exp(reference(sampler, h, truth)).mean(0)
    draws = 100_000
    sampled, true_count, sampled_count = tfs.random.lsh_candidate_sampler(
        truth[:, :1], 1, draws, False, NUM_CLASSES, seed=5, inputs=h, sampler=sampler)
    sampled = sampled.numpy()
    np.testing.assert_allclose(sampled_count.numpy(), draws * q[sampled], rtol=1e-4)
    np.testing.assert_allclose(true_count.numpy()[:, 0], draws * q[truth[:, 0]], rtol=1e-4)
    assert chi_square_p_value(np.bincount(sampled, minlength=NUM_CLASSES), q) > P_THRESHOLD
    # unique=True: every count is 1 - (1 - q)^num_tries for one num_tries.
    sampled, true_count, sampled_count = tfs.random.lsh_candidate_sampler(
        truth[:, :1], 1, 50, True, NUM_CLASSES, seed=6, inputs=h, sampler=sampler)
    sampled = sampled.numpy()
    assert len(set(sampled)) == 50
    tries = np.log1p(-sampled_count.numpy().astype(np.float64)) / np.log1p(-q[sampled])
    num_tries = int(np.round(np.median(tries)))
    expected = 50 * q if num_tries == 50 else -np.expm1(num_tries * np.log1p(-q))
    np.testing.assert_allclose(sampled_count.numpy(), expected[sampled], rtol=1e-3)
    np.testing.assert_allclose(true_count.numpy()[:, 0], expected[truth[:, 0]], rtol=1e-3)


def test_label_queries_use_the_true_class_embedding():
    sampler = make_sampler("simhash", query="label")
    h, truth = inputs_and_truth(batch=3, seed=2)
    other_h = h * -3.0  # inputs are ignored
    a = sampler.log_prob(h, np.tile(np.arange(NUM_CLASSES), (3, 1)), true_classes=truth)
    b = sampler.log_prob(other_h, np.tile(np.arange(NUM_CLASSES), (3, 1)), true_classes=truth)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="true_classes"):
        sampler.sample(h, 3)


def test_same_constructor_seed_builds_the_same_tables():
    np.testing.assert_array_equal(make_sampler("simhash").buckets.numpy(),
                                  make_sampler("simhash").buckets.numpy())


def test_training_loop_with_schedule_and_sparse_gradients():
    rng = np.random.RandomState(0)
    W = tf.Variable(rng.normal(size=(NUM_CLASSES, DIM)).astype(np.float32) * 0.3)
    b = tf.Variable(tf.zeros([NUM_CLASSES]))
    sampler = tfs.samplers.LSHSampler(W, num_tables=4, num_hashes=4, bucket_size=16,
                                      rebuild_every=3, rehash_every=7, seed=0)
    h = tf.constant(rng.normal(size=(16, DIM)).astype(np.float32))
    labels = tf.constant(rng.randint(0, NUM_CLASSES, size=(16, 1)))

    @tf.function
    def step(i):
        with tf.GradientTape() as tape:
            cands = sampler.sample(h, 8, true_classes=labels)
            loss = tf.reduce_mean(tfs.nn.sampled_softmax_loss(W, b, labels, h, cands))
        grads = tape.gradient(loss, [W, b])
        W.scatter_sub(tf.IndexedSlices(0.5 * grads[0].values, grads[0].indices))
        sampler.maintain(i, tf.concat([labels[:, 0], tf.reshape(cands.ids, [-1])], 0))
        return loss, isinstance(grads[0], tf.IndexedSlices)

    for i in range(1, 9):
        loss, sparse = step(tf.constant(i, tf.int64))
        assert np.isfinite(loss.numpy()) and sparse
    assert sampler.version.numpy() == 1  # rehashed at step 7


def test_sampling_is_flat_in_memory_of_the_query_path():
    """State sizes follow the layout (buckets independent of C)."""
    sampler = make_sampler("simhash")
    mem = sampler.memory_bytes()
    assert mem["buckets"] == 4 * 6 * 16 * (12 + 1)
    assert mem["codes"] == 4 * NUM_CLASSES * 6
    assert tfs.samplers.lsh.default_num_hashes(1_000_000, 64) == 15
