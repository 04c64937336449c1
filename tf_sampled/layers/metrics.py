"""Training and evaluation signals for sampled-softmax models."""
import keras
import tensorflow as tf


def importance_ess(logits, log_q, valid=None):
    """Effective sample size of the importance weights exp(logit - log q), over S.

    With S draws from a proposal q, the weights w_s = exp(o_s) / q(s) estimate
    the softmax's normaliser; ESS = (sum w)^2 / sum w^2 is S when q is
    proportional to exp(o) (the ideal proposal) and near 1 when one draw
    dominates. The fraction ESS / S is a cheap signal of how close the sampler
    is to the model's softmax: it drops when the sampler is poor or stale.

    Args:
      logits: [batch, S] logits of the sampled classes (no correction).
      log_q: [batch, S] log proposal (or log expected count) of each draw.
      valid: optional [batch, S] bool; False drops a draw (an accidental hit).

    Returns:
      [batch] float32 ESS / S in [1/S, 1] (0 for a row with no valid draw).
    """
    log_w = tf.cast(logits, tf.float32) - tf.cast(log_q, tf.float32)
    if valid is not None:
        log_w = tf.where(valid, log_w, -float("inf"))
    num_sampled = tf.cast(tf.shape(log_w)[1], tf.float32)
    log_ess = 2.0 * tf.reduce_logsumexp(log_w, axis=1) - tf.reduce_logsumexp(2.0 * log_w, axis=1)
    return tf.where(tf.math.is_finite(log_ess), tf.exp(log_ess), 0.0) / num_sampled


@keras.saving.register_keras_serializable(package="tf_sampled")
class Perplexity(keras.metrics.Mean):
    """exp of the mean cross-entropy (nats) over the examples seen."""

    def __init__(self, name="perplexity", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def result(self):
        return tf.exp(super().result())


@keras.saving.register_keras_serializable(package="tf_sampled")
class TopKFromRank(keras.metrics.Mean):
    """Top-k accuracy from the true class's rank (classes scoring strictly higher)."""

    def __init__(self, k, name=None, dtype=None):
        super().__init__(name=name or f"top_{k}_accuracy", dtype=dtype)
        self.k = k

    def update_state(self, rank, sample_weight=None):
        return super().update_state(tf.cast(rank < self.k, tf.float32), sample_weight)

    def get_config(self):
        return dict(super().get_config(), k=self.k)
