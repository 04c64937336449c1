"""On a softmax with known logits, the kernel proposal beats TF's built-ins.

Measures KL(proposal || softmax) and the bias of the sampled-softmax gradient
(averaged over many draws) for PositiveRandom(128) against uniform and
log-uniform, and prints the figures (`pytest -s` shows them).
"""
import numpy as np
import pytest
import tensorflow as tf

import tf_sampled as tfs

C, D, B, REPEATS = 2048, 16, 16, 400


@pytest.fixture(scope="module")
def problem():
    rng = np.random.RandomState(0)
    W = tf.Variable(rng.normal(size=(C, D)).astype(np.float32) * 0.6)
    # Zipf-like biases with ids in frequency order, as log-uniform assumes.
    b = tf.Variable((-1.0 * np.log1p(np.arange(C))).astype(np.float32))
    h = rng.normal(size=(B, D)).astype(np.float32)
    labels = tf.random.stateless_categorical(h @ W.numpy().T + b.numpy(), 1, seed=[1, 2])
    kernel = tfs.samplers.KernelSampler(
        W, biases=b, leaf_size=32, feature_map=tfs.features.PositiveRandom(128, seed=3))
    moments = tfs.samplers.KernelSampler(
        W, biases=b, leaf_size=32, feature_map=tfs.features.GaussianMoments())
    return W, b, h, labels, {"kernel": kernel, "moments": moments,
                             "uniform": tfs.samplers.Uniform(C),
                             "log_uniform": tfs.samplers.LogUniform(C)}


def kl_to_softmax(sampler, W, b, h):
    logits = h @ W.numpy().T + b.numpy()
    log_p = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - logits.max(1, keepdims=True)
    log_q = sampler.log_prob(h, np.tile(np.arange(C), (len(h), 1))).numpy().astype(np.float64)
    return float(np.mean(np.sum(np.exp(log_q) * (log_q - log_p), 1)))


def gradient_bias(sampler, W, b, h, labels, num_sampled):
    """|E[grad_h sampled loss] - grad_h full loss| / |grad_h full loss|, mean over queries."""
    hs = tf.constant(np.repeat(h, REPEATS, 0))
    ys = tf.repeat(labels, REPEATS, 0)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(hs)
        cands = sampler.sample(hs, num_sampled, true_classes=ys, seed=5)
        sampled = tfs.nn.sampled_softmax_loss(W, b, ys, hs, cands)
        full = tf.nn.sparse_softmax_cross_entropy_with_logits(
            ys[:, 0], tf.matmul(hs, W, transpose_b=True) + b)
    mean_sampled = tf.reduce_mean(tf.reshape(tape.gradient(sampled, hs), [B, REPEATS, D]), 1)
    exact = tf.reshape(tape.gradient(full, hs), [B, REPEATS, D])[:, 0]
    return float(tf.reduce_mean(tf.norm(mean_sampled - exact, axis=1) / tf.norm(exact, axis=1)))


@pytest.mark.parametrize("num_sampled", [16, 64])
def test_kernel_proposal_has_lower_kl_and_gradient_bias(problem, num_sampled):
    W, b, h, labels, samplers = problem
    kl = {name: kl_to_softmax(s, W, b, h) for name, s in samplers.items()}
    bias = {name: gradient_bias(s, W, b, h, labels, num_sampled) for name, s in samplers.items()}
    print(f"\nS={num_sampled}  KL(q||softmax): " + ", ".join(f"{k} {v:.3f}" for k, v in kl.items())
          + "\n      gradient bias: " + ", ".join(f"{k} {v:.3f}" for k, v in bias.items()))
    # "Much smaller" KL: under half of the better built-in's.
    for adaptive in ("kernel", "moments"):
        assert kl[adaptive] < 0.5 * min(kl["uniform"], kl["log_uniform"])
        assert bias[adaptive] < min(bias["uniform"], bias["log_uniform"])
