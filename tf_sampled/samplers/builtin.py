"""TensorFlow's input-free samplers behind the package's sampler protocol.

Per-example `sample` draws iid ids of shape [batch, S] from the same
distribution TensorFlow's op uses and returns its exact log q;
`candidate_sampler` returns TensorFlow's triple (unique draws and expected
counts as TensorFlow defines them), so each can be swapped for a
`KernelSampler`. Draws go through stateless random ops keyed by the
sampler's stream (seed and counter), not TensorFlow's stateful candidate
samplers, whose state lives in a kernel instance: a restored sampler
continues with the samples the saved one would have drawn.
"""
import math

import numpy as np
import tensorflow as tf

from tf_sampled.samplers import base
from tf_sampled.samplers import stream as stream_lib


def _draw_until_distinct(draw, num_sampled, num_classes, key):
    """TensorFlow's unique sampling: one iid sequence until num_sampled distinct ids.

    Args:
      draw: fn(n, key) -> [n] int64 iid ids, key a stateless [2] seed.
      num_sampled: S.
      num_classes: C (bounds the draws, as the sampling ops do).
      key: [2] int64 stateless seed of the call.

    Returns:
      (the S distinct ids in order of first appearance [S] int64, num_tries:
      int32 scalar, the draws up to the last of them).

    Raises:
      InvalidArgumentError: (when run) fewer than S distinct ids in about
        1000 S + 100 C draws (a proposal with its mass on fewer classes):
        an error instead of a hang.
    """
    max_draws = 1000 * num_sampled + 100 * num_classes

    def distinct_count(draws):
        return tf.size(tf.unique(draws)[0])

    def needs_more(draws, _):
        return tf.logical_and(distinct_count(draws) < num_sampled,
                              tf.size(draws) <= max_draws)

    def extend(draws, step):
        # The sequence doubles: O(log) rounds of the loop.
        more = draw(tf.shape(draws)[0], tf.random.experimental.stateless_fold_in(key, step))
        return tf.concat([draws, more], 0), step + 1

    draws = draw(2 * num_sampled + 8, tf.random.experimental.stateless_fold_in(key, 0))
    draws = tf.while_loop(needs_more, extend, [draws, tf.constant(1, tf.int64)],
                          shape_invariants=[tf.TensorShape([None]), tf.TensorShape([])])[0]
    check = tf.debugging.assert_greater_equal(
        distinct_count(draws), num_sampled,
        message=f"Could not find num_sampled={num_sampled} distinct classes in "
                f"{max_draws} draws (unique=True); lower num_sampled "
                f"(range_max={num_classes})")
    with tf.control_dependencies([check]):
        draws = tf.identity(draws)
    distinct, position = tf.unique(draws)
    num_tries = tf.argmax(tf.cast(tf.equal(position, num_sampled - 1), tf.int32),
                          output_type=tf.int32) + 1
    return distinct[:num_sampled], num_tries


class _InputFreeSampler(base.Sampler):
    """A proposal q(class) that ignores the inputs."""

    def _draw(self, shape, key):
        """iid class ids of `shape` (a [k] tensor or list), int64, from stateless key [2]."""
        raise NotImplementedError

    def _log_q(self, ids):
        """log q of int64 ids, float32, same shape."""
        raise NotImplementedError

    def _key(self, seed):
        """The stateless key of one call (advances the stream)."""
        return stream_lib.stateless_key(*self.stream.next(seed))

    def _batch_size(self, inputs, true_classes):
        if inputs is not None:
            return tf.shape(inputs)[0]
        if true_classes is not None:
            return tf.shape(true_classes)[0]
        raise ValueError("sample needs inputs or true_classes to know the batch size")

    def sample(self, inputs, num_sampled, true_classes=None, seed=None):
        base.check_count("num_sampled", num_sampled)
        if true_classes is not None:
            true_classes = base.as_class_matrix(true_classes, "true_classes")
        batch = self._batch_size(inputs, true_classes)
        if true_classes is None:
            true_classes = tf.zeros([batch, 0], tf.int64)
        ids = self._draw(tf.stack([batch, num_sampled]), self._key(seed))
        return base.SampledCandidates(ids, self._log_q(ids), self._log_q(true_classes))

    def log_prob(self, inputs, classes):
        return self._log_q(base.as_class_matrix(classes, "classes"))

    def candidate_sampler(self, true_classes, num_true, num_sampled, unique, range_max,
                          seed=None, name=None, inputs=None):
        return self._shared_candidates(true_classes, num_true, num_sampled, unique,
                                       range_max, seed, name)

    def _shared_candidates(self, true_classes, num_true, num_sampled, unique, range_max,
                           seed, name):
        """TensorFlow's triple from the stream's stateless draws."""
        self._check_shared_args(num_true, num_sampled, unique, range_max)
        true_classes = self._shared_true_classes(true_classes, num_true, None)
        with tf.name_scope(name or f"{type(self).__name__.lower()}_candidate_sampler"):
            key = self._key(seed)
            if unique:
                sampled, num_tries = _draw_until_distinct(
                    lambda n, k: self._draw(tf.reshape(n, [1]), k), num_sampled,
                    self.num_classes, key)
            else:
                sampled = self._draw([num_sampled], key)
                num_tries = tf.constant(num_sampled)
            return (sampled,
                    base.expected_counts(self._log_q(true_classes), num_sampled, num_tries),
                    base.expected_counts(self._log_q(sampled), num_sampled, num_tries))


class Uniform(_InputFreeSampler):
    """q(i) = 1 / num_classes (`tf.random.uniform_candidate_sampler`)."""

    def _draw(self, shape, key):
        return tf.random.stateless_uniform(shape, key, 0, self.num_classes, tf.int64)

    def _log_q(self, ids):
        return tf.fill(tf.shape(ids), tf.constant(-math.log(self.num_classes), tf.float32))


def log_uniform_draw(num_classes, shape, key):
    """iid int64 ids of `shape` from TensorFlow's log-uniform over num_classes
    (inverse CDF), from stateless key [2]."""
    u = tf.random.stateless_uniform(shape, key, dtype=tf.float64)
    ids = tf.cast(tf.floor(tf.exp(u * math.log(num_classes + 1.0))), tf.int64) - 1
    return tf.clip_by_value(ids, 0, num_classes - 1)


def log_uniform_log_q(num_classes, ids):
    """float32 log p(ids) of TensorFlow's log-uniform over num_classes."""
    k = tf.cast(ids, tf.float64)
    log_q = tf.math.log1p(1.0 / (k + 1.0)) / math.log(num_classes + 1.0)
    return tf.cast(tf.math.log(log_q), tf.float32)


class LogUniform(_InputFreeSampler):
    """Zipfian q(i) = log((i + 2) / (i + 1)) / log(num_classes + 1).

    TensorFlow's `log_uniform_candidate_sampler`; suits ids sorted by
    decreasing frequency.
    """

    def _draw(self, shape, key):
        return log_uniform_draw(self.num_classes, shape, key)

    def _log_q(self, ids):
        return log_uniform_log_q(self.num_classes, ids)


def _categorical_draw(log_probs, shape, key):
    flat = tf.random.stateless_categorical(log_probs[None, :], tf.reduce_prod(shape), key,
                                           dtype=tf.int64)
    return tf.reshape(flat, shape)


class Unigram(_InputFreeSampler):
    """q(i) proportional to counts[i] ** distortion (`fixed_unigram_candidate_sampler`).

    Args:
      counts: [num_classes] non-negative class frequencies (a list or array).
      distortion: exponent applied to the counts (0.75 is word2vec's choice).
    """

    def __init__(self, counts, distortion=1.0, name=None):
        counts = np.asarray(counts, np.float64)
        if counts.ndim != 1 or counts.size < 1:
            raise ValueError(f"counts must be a non-empty vector, got shape {counts.shape}")
        if not np.all(np.isfinite(counts)) or np.any(counts < 0) or counts.sum() <= 0:
            raise ValueError("counts must be finite, non-negative and not all zero")
        if not math.isfinite(distortion):
            raise ValueError(f"distortion must be finite, got {distortion!r}")
        super().__init__(int(counts.size), name=name)
        self.counts = counts
        self.distortion = float(distortion)
        weights = counts ** self.distortion
        with np.errstate(divide="ignore"):
            self._log_probs = tf.constant(np.log(weights / weights.sum()), tf.float32)

    def _draw(self, shape, key):
        return _categorical_draw(self._log_probs, shape, key)

    def _log_q(self, ids):
        return tf.gather(self._log_probs, ids)


class LearnedUnigram(_InputFreeSampler):
    """Unigram over the true classes seen so far (`learned_unigram_candidate_sampler`).

    Counts start at one per class, as in TensorFlow, and live in a variable (so
    they checkpoint, unlike TensorFlow's op state). Each call samples with the
    current counts, then adds the given true classes to them (under
    `tf.distribute.MirroredStrategy`, the true classes of every replica).
    """

    def __init__(self, num_classes, name=None):
        super().__init__(num_classes, name=name)
        with self.name_scope:
            self.counts = tf.Variable(tf.ones([num_classes], tf.float64), trainable=False,
                                      name="counts")

    def _log_probs(self):
        return tf.cast(tf.math.log(self.counts / tf.reduce_sum(self.counts)), tf.float32)

    def _draw(self, shape, key):
        return _categorical_draw(self._log_probs(), shape, key)

    def _log_q(self, ids):
        return tf.gather(self._log_probs(), ids)

    def _learn(self, true_classes):
        # Replicas in sync each hold a copy of the counts: all of them learn
        # every replica's classes, so the copies stay identical.
        ids = base.gather_across_replicas(tf.reshape(true_classes, [-1]))
        self.counts.scatter_add(tf.IndexedSlices(tf.ones(tf.shape(ids), tf.float64), ids))

    def sample(self, inputs, num_sampled, true_classes=None, seed=None):
        candidates = super().sample(inputs, num_sampled, true_classes, seed)
        if true_classes is not None:
            with tf.control_dependencies(list(candidates)):
                self._learn(base.as_class_matrix(true_classes, "true_classes"))
        return candidates

    def candidate_sampler(self, true_classes, num_true, num_sampled, unique, range_max,
                          seed=None, name=None, inputs=None):
        result = self._shared_candidates(true_classes, num_true, num_sampled, unique,
                                         range_max, seed, name)
        with tf.control_dependencies(list(result)):
            self._learn(base.as_class_matrix(true_classes, "true_classes"))
        return result
