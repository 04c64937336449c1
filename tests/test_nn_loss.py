"""tfs.nn.sampled_softmax_loss against tf.nn's and a NumPy oracle."""
import numpy as np
import pytest
import tensorflow as tf

import tf_sampled as tfs

C, D, B = 50, 4, 6


@pytest.fixture
def model():
    rng = np.random.RandomState(0)
    return (tf.Variable(rng.normal(size=(C, D)).astype(np.float32)),
            tf.Variable(rng.normal(size=(C,)).astype(np.float32)),
            rng.normal(size=(B, D)).astype(np.float32))


@pytest.mark.parametrize("num_true", [1, 2])
@pytest.mark.parametrize("remove_hits", [True, False])
def test_triple_path_equals_tf_nn(model, num_true, remove_hits):
    W, b, h = model
    labels = np.random.RandomState(1).randint(0, C, size=(B, num_true)).astype(np.int64)
    triple = tf.random.log_uniform_candidate_sampler(labels, num_true, 20, True, C, seed=4)
    labels[0, 0] = triple[0][5]  # an accidental hit (expected counts stay TF's)
    expected = tf.nn.sampled_softmax_loss(W, b, labels, h, 20, C, num_true=num_true,
                                          sampled_values=triple,
                                          remove_accidental_hits=remove_hits)
    actual = tfs.nn.sampled_softmax_loss(W, b, labels, h, triple,
                                         remove_accidental_hits=remove_hits)
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def numpy_loss(W, b, labels, h, ids, log_q, true_log_q, remove_hits, subtract_true):
    S = ids.shape[1]
    out = []
    for r in range(len(h)):
        true = W[labels[r]] @ h[r] + b[labels[r]]
        if subtract_true:
            true = true - np.log(S) - true_log_q[r]
        sampled = W[ids[r]] @ h[r] + b[ids[r]] - np.log(S) - log_q[r]
        if remove_hits:
            sampled = np.where(np.isin(ids[r], labels[r]), -np.inf, sampled)
        logits = np.concatenate([true, sampled])
        lse = logits.max() + np.log(np.exp(logits - logits.max()).sum())
        out.append(-(true - lse).mean())
    return np.array(out)


@pytest.mark.parametrize("subtract_true", [True, False])
@pytest.mark.parametrize("remove_hits", [True, False])
def test_per_example_path_equals_numpy(model, subtract_true, remove_hits):
    W, b, h = model
    rng = np.random.RandomState(2)
    labels = rng.randint(0, C, size=(B, 2)).astype(np.int64)
    ids = rng.randint(0, C, size=(B, 7)).astype(np.int64)
    ids[0, 0] = labels[0, 1]
    log_q = np.log(rng.uniform(0.01, 0.1, size=ids.shape)).astype(np.float32)
    true_log_q = np.log(rng.uniform(0.01, 0.1, size=labels.shape)).astype(np.float32)
    cands = tfs.samplers.SampledCandidates(ids, log_q, true_log_q)
    actual = tfs.nn.sampled_softmax_loss(W, b, labels, h, cands,
                                         remove_accidental_hits=remove_hits,
                                         subtract_log_q_true=subtract_true)
    expected = numpy_loss(W.numpy(), b.numpy(), labels, h, ids, log_q, true_log_q,
                          remove_hits, subtract_true)
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-5)


def test_gradients_are_indexed_slices_in_both_modes(model):
    W, b, h = model
    labels = np.arange(B)[:, None]
    sampler = tfs.samplers.LogUniform(C)
    for sampled in (sampler.sample(h, 5, true_classes=labels, seed=1),
                    sampler.candidate_sampler(labels, 1, 5, True, C, seed=1)):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tfs.nn.sampled_softmax_loss(W, b, labels, h, sampled))
        grad_w, grad_b = tape.gradient(loss, [W, b])
        assert isinstance(grad_w, tf.IndexedSlices) and isinstance(grad_b, tf.IndexedSlices)


def test_works_in_tf_function(model):
    W, b, h = model
    sampler = tfs.samplers.KernelSampler(W, biases=b, leaf_size=8,
                                         feature_map=tfs.features.PositiveRandom(16, seed=0))
    labels = tf.constant(np.arange(B)[:, None], tf.int64)

    @tf.function
    def loss_fn(h):
        return tfs.nn.sampled_softmax_loss(W, b, labels, h,
                                           sampler.sample(h, 8, true_classes=labels, seed=3))

    assert loss_fn(tf.constant(h)).shape == (B,)


def test_bad_shapes_are_value_errors(model):
    W, b, h = model
    cands = tfs.samplers.SampledCandidates(np.zeros([B, 3], np.int64), np.zeros([B, 3], np.float32),
                                           np.zeros([B, 1], np.float32))
    with pytest.raises(ValueError, match="weights"):
        tfs.nn.sampled_softmax_loss(tf.zeros([C, D + 1]), b, np.zeros([B, 1], np.int64), h, cands)
    with pytest.raises(ValueError, match="labels"):
        tfs.nn.sampled_softmax_loss(W, b, np.zeros([B, 1], np.float32), h, cands)
    with pytest.raises(ValueError, match="sampled"):
        tfs.nn.sampled_softmax_loss(W, b, np.zeros([B, 1], np.int64), h, (1, 2))
