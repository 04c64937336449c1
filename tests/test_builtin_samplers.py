"""TensorFlow's samplers behind the protocol: exact log q, triples, learning.

The contract every sampler keeps (frequencies, log q of the draws, eager and
graph calls, seeds, checkpoints) is in test_sampler_contract.py.
"""
import numpy as np
import pytest
import tensorflow as tf

import tf_sampled as tfs
from oracles import builtin_probabilities
from sampler_cases import BUILTIN_CLASSES as C, BUILTIN_COUNTS as COUNTS, BUILTIN_DISTORTION
from sampler_cases import builtin_sampler
from stats import P_THRESHOLD, chi_square_p_value


@pytest.mark.parametrize("name", ["uniform", "log_uniform", "unigram", "learned_unigram"])
def test_log_prob_equals_tensorflows_distribution(name):
    sampler = builtin_sampler(name)
    log_q = sampler.log_prob(None, np.arange(C)[None, :]).numpy()[0]
    np.testing.assert_allclose(np.exp(log_q),
                               builtin_probabilities(name, C, COUNTS, BUILTIN_DISTORTION),
                               rtol=1e-5)
    np.testing.assert_allclose(np.exp(log_q).sum(), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", ["uniform", "log_uniform", "unigram"])
def test_candidate_sampler_follows_tensorflows_contract(name):
    labels = np.array([[0], [7]], np.int64)
    sampled, true_count, sampled_count = builtin_sampler(name).candidate_sampler(
        labels, 1, 20, True, C, seed=5)
    assert len(set(sampled.numpy())) == 20 and true_count.shape == (2, 1)
    assert np.all(sampled_count.numpy() > 0)


def test_learned_unigram_learns_the_true_classes():
    sampler = tfs.samplers.LearnedUnigram(C)
    labels = np.full([64, 1], 7, np.int64)
    first = sampler.sample(None, 10, true_classes=labels, seed=1)
    np.testing.assert_allclose(first.true_log_q.numpy(), np.log(1.0 / C), rtol=1e-5)
    second = sampler.sample(None, 10, true_classes=labels, seed=1)
    np.testing.assert_allclose(second.true_log_q.numpy(), np.log(65.0 / (C + 64)), rtol=1e-5)


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
