"""Chunked full-softmax statistics against the full logits in NumPy."""
import numpy as np
import pytest
import tensorflow as tf

import tf_sampled as tfs

C, D, B = 103, 5, 17


def oracle(W, b, labels, h):
    logits = h.astype(np.float64) @ W.T.astype(np.float64) + b
    lse = logits.max(1) + np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1))
    true = logits[np.arange(len(h)), labels]
    rank = (logits > true[:, None]).sum(1)
    return lse - true, rank


@pytest.mark.parametrize("chunk_size", [1, 10, 103, 1000])
def test_cross_entropy_and_rank_match_full_logits(chunk_size):
    rng = np.random.RandomState(0)
    W = rng.normal(size=(C, D)).astype(np.float32) * 3
    b = rng.normal(size=C).astype(np.float32)
    h = rng.normal(size=(B, D)).astype(np.float32)
    labels = rng.randint(0, C, size=B)
    ce, rank = tfs.layers.full_softmax_stats(tf.Variable(W), tf.Variable(b), labels, h,
                                             chunk_size=chunk_size)
    expected_ce, expected_rank = oracle(W, b, labels, h)
    np.testing.assert_allclose(ce.numpy(), expected_ce, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(rank.numpy(), expected_rank)
    logits = tf.constant(h @ W.T + b)
    for k in (1, 5):
        np.testing.assert_array_equal(rank.numpy() < k,
                                      tf.math.in_top_k(labels, logits, k).numpy())


def test_no_bias_and_column_labels():
    rng = np.random.RandomState(1)
    W, h = rng.normal(size=(C, D)).astype(np.float32), rng.normal(size=(B, D)).astype(np.float32)
    labels = rng.randint(0, C, size=(B, 1))
    ce, _ = tfs.layers.full_softmax_stats(W, None, labels, h, chunk_size=32)
    np.testing.assert_allclose(ce.numpy(), oracle(W, np.zeros(C), labels[:, 0], h)[0],
                               rtol=1e-4, atol=1e-4)


def test_bad_labels():
    W, h = np.zeros([C, D], np.float32), np.zeros([B, D], np.float32)
    with pytest.raises(ValueError, match="labels"):
        tfs.layers.full_softmax_stats(W, None, np.zeros([B], np.float32), h)
    with pytest.raises(ValueError, match="labels"):
        tfs.layers.full_softmax_stats(W, None, np.zeros([B, 2], np.int64), h)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes"):
        tfs.layers.full_softmax_stats(W, None, np.full([B], C), h)
    with pytest.raises(ValueError, match="chunk_size"):
        tfs.layers.full_softmax_stats(W, None, np.zeros([B], np.int64), h, chunk_size=0)
