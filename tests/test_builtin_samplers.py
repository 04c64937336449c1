"""TensorFlow's samplers behind the protocol: exact log q, frequencies, triples."""
import numpy as np
import pytest
import tensorflow as tf

import tf_sampled as tfs
from stats import P_THRESHOLD, chi_square_p_value

C = 300
COUNTS = np.random.RandomState(0).randint(0, 50, size=C).astype(np.float64) + 1


def samplers():
    return {"uniform": tfs.samplers.Uniform(C), "log_uniform": tfs.samplers.LogUniform(C),
            "unigram": tfs.samplers.Unigram(COUNTS, distortion=0.75),
            "learned_unigram": tfs.samplers.LearnedUnigram(C)}


def tf_probabilities(name):
    """q over all classes from TensorFlow's own op (expected counts / S)."""
    all_ids = np.arange(C, dtype=np.int64)[None, :]
    fns = {"uniform": tf.random.uniform_candidate_sampler,
           "log_uniform": tf.random.log_uniform_candidate_sampler,
           "unigram": lambda *a, **k: tf.random.fixed_unigram_candidate_sampler(
               *a, distortion=0.75, unigrams=COUNTS.tolist(), **k),
           "learned_unigram": tf.random.learned_unigram_candidate_sampler}
    _, true_count, _ = fns[name](all_ids, C, 1, False, C, seed=1)
    return true_count.numpy()[0]


@pytest.mark.parametrize("name", ["uniform", "log_uniform", "unigram", "learned_unigram"])
def test_log_prob_equals_tensorflows_distribution(name):
    sampler = samplers()[name]
    log_q = sampler.log_prob(None, np.arange(C)[None, :]).numpy()[0]
    np.testing.assert_allclose(np.exp(log_q), tf_probabilities(name), rtol=1e-5)
    np.testing.assert_allclose(np.exp(log_q).sum(), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", ["uniform", "log_uniform", "unigram"])
def test_per_example_frequencies_pass_chi_square(name):
    sampler = samplers()[name]
    cands = sampler.sample(tf.zeros([4, 2]), 50_000, seed=3)
    assert cands.ids.shape == (4, 50_000) and cands.true_log_q.shape == (4, 0)
    q = np.exp(sampler.log_prob(None, np.arange(C)[None, :]).numpy()[0])
    counts = np.bincount(cands.ids.numpy().ravel(), minlength=C)
    assert chi_square_p_value(counts, q) > P_THRESHOLD
    np.testing.assert_allclose(cands.log_q.numpy(), np.log(q)[cands.ids.numpy()], rtol=1e-5)


@pytest.mark.parametrize("name", ["uniform", "log_uniform", "unigram"])
def test_candidate_sampler_follows_tensorflows_contract(name):
    labels = np.array([[0], [7]], np.int64)
    sampled, true_count, sampled_count = samplers()[name].candidate_sampler(
        labels, 1, 20, True, C, seed=5)
    assert len(set(sampled.numpy())) == 20 and true_count.shape == (2, 1)
    assert np.all(sampled_count.numpy() > 0)


def test_learned_unigram_learns_and_checkpoints(tmp_path):
    sampler = tfs.samplers.LearnedUnigram(C)
    labels = np.full([64, 1], 7, np.int64)
    first = sampler.sample(None, 10, true_classes=labels, seed=1)
    np.testing.assert_allclose(first.true_log_q.numpy(), np.log(1.0 / C), rtol=1e-5)
    second = sampler.sample(None, 10, true_classes=labels, seed=1)
    np.testing.assert_allclose(second.true_log_q.numpy(), np.log(65.0 / (C + 64)), rtol=1e-5)
    path = tf.train.Checkpoint(s=sampler).save(str(tmp_path / "c"))
    restored = tfs.samplers.LearnedUnigram(C)
    tf.train.Checkpoint(s=restored).restore(path)
    np.testing.assert_array_equal(restored.counts.numpy(), sampler.counts.numpy())


def test_learned_unigram_unique_triple_follows_tensorflows_definition():
    sampler = tfs.samplers.LearnedUnigram(C)
    sampler.counts.assign(COUNTS)
    q = COUNTS / COUNTS.sum()
    labels = np.array([[3], [4]], np.int64)
    sampled, true_count, sampled_count = sampler.candidate_sampler(labels, 1, 40, True, C, seed=2)
    sampled = sampled.numpy()
    assert len(set(sampled)) == 40
    tries = np.log1p(-sampled_count.numpy().astype(np.float64)) / np.log1p(-q[sampled])
    num_tries = int(np.round(np.median(tries)))
    expected = -np.expm1(num_tries * np.log1p(-q)) if num_tries > 40 else 40 * q
    np.testing.assert_allclose(sampled_count.numpy(), expected[sampled], rtol=1e-3)
    np.testing.assert_allclose(true_count.numpy()[:, 0], expected[labels[:, 0]], rtol=1e-3)
    # Then it learned the true classes.
    assert sampler.counts.numpy()[3] == COUNTS[3] + 1


def test_learned_unigram_unique_first_draws_follow_counts():
    sampler = tfs.samplers.LearnedUnigram(C)
    sampler.counts.assign(COUNTS)
    labels = np.zeros([0, 1], np.int64)

    @tf.function
    def first():
        return tf.stack([sampler.candidate_sampler(labels, 1, 3, True, C, seed=10 + i)[0][0]
                         for i in range(10)])

    # (Each call draws at the next counter: 500 runs, 5000 independent draws.)
    ids = np.concatenate([first().numpy() for _ in range(500)])
    counts = np.bincount(ids, minlength=C)
    assert chi_square_p_value(counts, COUNTS / COUNTS.sum()) > P_THRESHOLD


def test_protocol_errors_name_the_argument():
    with pytest.raises(ValueError, match="range_max"):
        tfs.samplers.Uniform(C).candidate_sampler(np.zeros([1, 1]), 1, 5, True, C + 1)
    with pytest.raises(ValueError, match="num_sampled"):
        tfs.samplers.Uniform(C).candidate_sampler(np.zeros([1, 1]), 1, C + 1, True, C)
    with pytest.raises(ValueError, match="num_sampled"):
        tfs.samplers.LogUniform(C).sample(tf.zeros([2, 2]), 0)
    with pytest.raises(ValueError, match="counts"):
        tfs.samplers.Unigram([1.0, -2.0])


def test_unique_with_too_few_reachable_classes_is_an_error_not_a_hang():
    sampler = tfs.samplers.Unigram([1.0, 1.0, 0.0, 0.0, 0.0])
    assert sorted(sampler.candidate_sampler([[0]], 1, 2, True, 5, seed=1)[0].numpy()) == [0, 1]
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_sampled=3 distinct"):
        sampler.candidate_sampler([[0]], 1, 3, True, 5, seed=1)
