"""Pooled negatives at equal wall-clock: a cheap adaptive pool, and its brute-force bound.

A pooled step draws K negatives per example from that example's proposal
q(.|h_b), pools the B K draws, and scores the pool for every example with one
[B, d] x [d, B K] matmul (tf.nn.sampled_softmax_loss with the pool as its
`sampled_values`). Every logit is corrected by the pool's exact density, the
batch mixture q_bar(c) = (1/B) sum_b q(c|h_b) (expected count B K q_bar(c)):
with equal allocation (K draws from each example's proposal) the estimate
(1/(B K)) sum_j exp(o_bj) / q_bar(c_j) of every example's partition function
is unbiased, so the pool keeps the matmul throughput of batch-shared
negatives and the adaptivity of per-example ones.

Two proposals, added to examples/compare_samplers.py as objectives `name@P`
(P = B K, a multiple of the batch size):

  pooled_cluster   q(c|h) = softmax_k(h . mu_k + log M_k)[k(c)] * u(c|k(c)):
                   the classes are clustered by k-means on their embeddings
                   (one warm-started Lloyd iteration per refresh, on the
                   trainer's --refresh_every schedule); mu_k is the
                   exp(b)-weighted centroid, M_k = sum_{c in k} exp(b_c), and
                   inside a cluster u(c|k) = exp(b_c) / M_k does not depend on
                   the example, so q_bar is exact from one [B, N] matmul.
  pooled_oracle    q(.|h) = the model's exact softmax (a full [B, C] matmul
                   per step to draw and to weigh): no real sampler can do
                   better; its step count to a target, at the step cost of a
                   log-uniform step of the same P, bounds what any pooled
                   sampler can gain at equal time.

Run (GCIDE, the budget of 800 log-uniform steps at S = 1024; by steps, so
per-step quality is compared):
  python -m benchmarks.pooled_negatives --dataset=gcide --optimizer=lazy_adam \\
      --objectives=full,log_uniform@1024,pooled_cluster@1024,pooled_oracle@1024,\\
pooled_oracle@4096 --steps=800 --time_budget_s=0 --eval_every=100 --eval_every_s=0
and at equal time:
  python -m benchmarks.pooled_negatives --dataset=gcide --optimizer=lazy_adam \\
      --objectives=log_uniform@1024,log_uniform@4096,pooled_cluster@1024,\\
pooled_cluster@4096 --time_budget_s=20 --eval_every_s=4 --round_steps=5
"""
import os
import sys

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "examples"))
import compare_samplers  # noqa: E402  pylint: disable=wrong-import-position
import sampler_objectives  # noqa: E402  pylint: disable=wrong-import-position

DEFAULT_CLUSTERS = 256
# Rows per chunk of the k-means assignment ([chunk, N] scores at a time).
_ASSIGN_CHUNK = 16384


def per_example_draws(pool_size, batch_size):
    """K = pool_size / batch_size, or ValueError naming both."""
    if pool_size < batch_size or pool_size % batch_size:
        raise ValueError(f"a pool of {pool_size} negatives must be a positive multiple of the "
                         f"batch size {batch_size} (K draws from each example's proposal)")
    return pool_size // batch_size


class ClusterProposal(tf.Module):
    """q(c|h) = P(cluster k(c) | h) u(c | k(c)); u independent of h.

    State (non-trainable variables): centroids [N, d], log cluster masses
    [N], the class -> cluster assignment [C], the classes sorted by cluster
    with the cluster offsets [N + 1] and the cumulative in-cluster weights
    [C + 1] (float64) that an inverse-CDF draw inside a cluster reads.

    Args:
      embeddings: [C, d] float32 variable (the class table, read at refresh).
      biases: [C] float32 variable.
      num_clusters: N (at most C).
      seed: int; the initial centroids and the draws.
      init_iterations: Lloyd iterations at construction.
    """

    def __init__(self, embeddings, biases, num_clusters=DEFAULT_CLUSTERS, seed=0,
                 init_iterations=3):
        super().__init__(name="cluster_proposal")
        self.num_classes, self.dim = (int(n) for n in embeddings.shape)
        if not 1 <= num_clusters <= self.num_classes:
            raise ValueError(f"num_clusters must be in [1, {self.num_classes}] (the class "
                             f"count), got {num_clusters}")
        self.embeddings, self.biases = embeddings, biases
        self.num_clusters, self.seed = int(num_clusters), int(seed)
        start = np.random.default_rng(seed).choice(self.num_classes, num_clusters, replace=False)
        self.centroids = tf.Variable(tf.gather(embeddings, start), trainable=False)
        self.log_mass = tf.Variable(tf.zeros([num_clusters]), trainable=False)
        self.assignment = tf.Variable(tf.zeros([self.num_classes], tf.int32), trainable=False)
        self.order = tf.Variable(tf.range(self.num_classes), trainable=False)
        self.offsets = tf.Variable(tf.zeros([num_clusters + 1], tf.int32), trainable=False)
        self.cumulative = tf.Variable(tf.zeros([self.num_classes + 1], tf.float64),
                                      trainable=False)
        self.log_within = tf.Variable(tf.zeros([self.num_classes]), trainable=False)
        self.counter = tf.Variable(0, dtype=tf.int64, trainable=False)
        for _ in range(init_iterations):
            self.refresh()

    def __repr__(self):
        return f"ClusterProposal(num_clusters={self.num_clusters})"

    @tf.function
    def refresh(self):
        """One Lloyd iteration on the current table: reassign, then recentre."""
        table = tf.convert_to_tensor(self.embeddings)
        bias = tf.convert_to_tensor(self.biases)
        centroids = tf.convert_to_tensor(self.centroids)
        # argmin |w - mu|^2 = argmax w . mu - |mu|^2 / 2
        offset = 0.5 * tf.reduce_sum(centroids * centroids, 1)
        assignment = tf.concat(
            [tf.argmax(tf.matmul(table[s:s + _ASSIGN_CHUNK], centroids, transpose_b=True)
                       - offset, 1, output_type=tf.int32)
             for s in range(0, self.num_classes, _ASSIGN_CHUNK)], 0)
        top = tf.reduce_max(bias)
        weight = tf.exp(tf.cast(bias - top, tf.float64))  # exp(b) / exp(max b)
        mass = tf.math.unsorted_segment_sum(weight, assignment, self.num_clusters)
        within = weight / tf.gather(mass, assignment)
        recentred = tf.math.unsorted_segment_sum(tf.cast(within, tf.float32)[:, None] * table,
                                                 assignment, self.num_clusters)
        # An empty cluster keeps its centroid and gets mass 0 (never drawn).
        occupied = mass > 0
        order = tf.argsort(assignment, stable=True)
        counts = tf.math.bincount(assignment, minlength=self.num_clusters,
                                  maxlength=self.num_clusters)
        self.centroids.assign(tf.where(occupied[:, None], recentred, centroids))
        self.log_mass.assign(tf.where(
            occupied, tf.cast(tf.math.log(tf.where(occupied, mass, 1.0)), tf.float32) + top,
            -np.inf))
        self.assignment.assign(assignment)
        self.order.assign(tf.cast(order, tf.int32))
        self.offsets.assign(tf.concat([[0], tf.cumsum(counts)], 0))
        self.cumulative.assign(tf.concat([tf.zeros([1], tf.float64),
                                          tf.cumsum(tf.gather(weight, order))], 0))
        self.log_within.assign(tf.cast(tf.math.log(within), tf.float32))

    def cluster_logits(self, inputs):
        """[B, N] unnormalised log P(k | h_b)."""
        return tf.matmul(inputs, self.centroids, transpose_b=True) + self.log_mass

    def draw(self, inputs, per_example):
        """K draws from each example's proposal.

        Args:
          inputs: [B, d] float32 queries h.
          per_example: K, a Python int.

        Returns:
          (ids [B K] int64, the example by example draws flattened;
           mixture(ids [any] int64) -> q_bar(ids) float32, the batch mixture).
        """
        self.counter.assign_add(1)
        seed = tf.stack([tf.constant(self.seed, tf.int64), self.counter])
        logits = self.cluster_logits(inputs)
        clusters = tf.reshape(tf.random.stateless_categorical(
            logits, per_example, seed, dtype=tf.int32), [-1])
        start, stop = tf.gather(self.offsets, clusters), tf.gather(self.offsets, clusters + 1)
        low, high = tf.gather(self.cumulative, start), tf.gather(self.cumulative, stop)
        uniform = tf.random.stateless_uniform(tf.shape(clusters), seed + 1, dtype=tf.float64)
        position = tf.searchsorted(self.cumulative[1:], low + uniform * (high - low),
                                   side="right", out_type=tf.int32)
        # Rounding at a segment's end must not leave the cluster.
        position = tf.clip_by_value(position, start, stop - 1)
        ids = tf.cast(tf.gather(self.order, position), tf.int64)
        cluster_prob = tf.reduce_mean(tf.nn.softmax(logits), 0)  # [N]

        def mixture(classes):
            return tf.exp(tf.gather(self.log_within, classes)) * tf.gather(
                cluster_prob, tf.gather(self.assignment, classes))
        return ids, mixture

    def log_prob(self, inputs, classes):
        """[B, n] log q(classes[b, j] | h_b) (a test oracle's counterpart)."""
        log_cluster = tf.nn.log_softmax(self.cluster_logits(inputs))
        return tf.gather(log_cluster, tf.gather(self.assignment, classes), batch_dims=1) + \
            tf.gather(self.log_within, classes)


class OracleProposal(tf.Module):
    """q(.|h) = the model's exact softmax over all classes (a brute-force bound).

    Args:
      embeddings: [C, d] float32 variable; biases: [C] float32 variable.
      seed: int, the draws' seed.
    """

    def __init__(self, embeddings, biases, seed=0):
        super().__init__(name="oracle_proposal")
        self.embeddings, self.biases, self.seed = embeddings, biases, int(seed)
        self.counter = tf.Variable(0, dtype=tf.int64, trainable=False)

    def __repr__(self):
        return "OracleProposal(exact softmax)"

    def refresh(self):
        """Nothing to refresh: every draw reads the current table."""
        return None

    def draw(self, inputs, per_example):
        """As `ClusterProposal.draw`, from each example's exact softmax."""
        self.counter.assign_add(1)
        seed = tf.stack([tf.constant(self.seed, tf.int64), self.counter])
        logits = tf.matmul(inputs, self.embeddings, transpose_b=True) + self.biases
        ids = tf.reshape(tf.random.stateless_categorical(logits, per_example, seed), [-1])
        mean_softmax = tf.reduce_mean(tf.nn.softmax(logits), 0)
        return ids, lambda classes: tf.gather(mean_softmax, classes)


def pooled_loss_fn(W, b, proposal, pool_size, batch_size):
    """loss_fn(h [B, d], labels [B]) -> [B] sampled-softmax losses over a pooled set.

    The pool's expected counts are pool_size * q_bar: tf.nn.sampled_softmax_loss
    subtracts their log from the sampled logits (and the true one).
    """
    per_example = per_example_draws(pool_size, batch_size)
    num_classes = int(W.shape[0])

    def loss_fn(h, labels):
        true = labels[:, None]
        ids, mixture = proposal.draw(tf.stop_gradient(h), per_example)
        ids = tf.ensure_shape(ids, [pool_size])
        sampled = (ids, pool_size * mixture(true), pool_size * mixture(ids))
        return tf.nn.sampled_softmax_loss(
            W, b, true, h, pool_size, num_classes,
            sampled_values=tuple(tf.stop_gradient(t) for t in sampled))
    return loss_fn


def _objective(proposal_class):
    def factory(W, b, num_sampled, seed, batch_size):
        proposal = proposal_class(W, b, seed=seed)
        return pooled_loss_fn(W, b, proposal, num_sampled, batch_size), proposal
    return factory


STUDY_OBJECTIVES = {"pooled_cluster": _objective(ClusterProposal),
                    "pooled_oracle": _objective(OracleProposal)}


def main():
    sampler_objectives.STUDY_OBJECTIVES.update(STUDY_OBJECTIVES)
    compare_samplers.flags.FLAGS.set_default("output_dir", "/tmp/tf_sampled_pooled")
    compare_samplers.app.run(compare_samplers.main)


if __name__ == "__main__":
    main()
