"""Negative sampling in the SampledSoftmax layer: which samplers, and the correction.

Trained with the negative-sampling (logistic) loss against S negatives drawn
iid from a noise distribution p_n(.|x), the logits xi converge to
log p(y|x) - log p_n(y|x) - log S (Bamler & Mandt 2020, Thm. 1): the model's
scores are xi_y(x) + log p_n(y|x), up to a constant per x. The layer adds
log p_n at inference and in its full-softmax evaluation. That needs

- negatives drawn iid from a p_n(.|x) that the layer can name: per-example
  draws, or batch-shared draws from an input-free p_n without `unique`
  (distinct draws have inclusion probabilities 1 - (1 - p)^tries, not S p; an
  input-dependent sampler's shared draws come from the batch mixture);
- a p_n that does not follow the class table (the theorem's noise is fixed;
  the kernel and LSH samplers are built from the table they train), with
  log p_n of every class in plain TensorFlow, so an exported serving graph
  holds no custom op: the adversarial tree (`all_log_probs`) and the
  input-free samplers (`log_prob` of all ids: -log C for uniform, a
  per-class constant for log_uniform and unigram, the counts so far for
  learned_unigram, whose noise settles as its counts do);
- the negatives' terms kept when a draw hits the true class: dropping them
  makes the optimum log p - log(1 - p) - log p_n, not log p - log p_n.
"""
import tensorflow as tf

from tf_sampled import nn
from tf_sampled import samplers as samplers_lib
from tf_sampled.layers import chunked

LOSSES = ("sampled_softmax", "negative_sampling")
# Samplers (by name, and their classes) the layer can train by negative sampling.
SAMPLERS = {"uniform": samplers_lib.Uniform, "log_uniform": samplers_lib.LogUniform,
            "unigram": samplers_lib.Unigram, "learned_unigram": samplers_lib.LearnedUnigram,
            "adversarial": samplers_lib.AdversarialSampler}
_INPUT_FREE = tuple(kind for name, kind in SAMPLERS.items() if name != "adversarial")


def check_options(loss, sampler, shared_negatives, unique, remove_accidental_hits,
                  subtract_log_q_true, regularizer):
    """Validates the layer's loss options; returns their resolved values.

    Args:
      loss: one of LOSSES.
      sampler: a sampler name or `Sampler` instance.
      shared_negatives, unique: the layer's arguments (bools).
      remove_accidental_hits, subtract_log_q_true: bool, or None for the loss's
        default.
      regularizer: the negative-sampling regulariser lambda.

    Returns:
      (remove_accidental_hits bool, subtract_log_q_true bool or None,
      regularizer float).
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    regularizer = nn.check_regularizer(regularizer, "negative_sampling_regularizer")
    if loss == "sampled_softmax":
        if regularizer:
            raise ValueError(f"negative_sampling_regularizer={regularizer!r} applies to "
                             f"loss='negative_sampling', got loss='sampled_softmax'")
        return (True if remove_accidental_hits is None else bool(remove_accidental_hits),
                True if subtract_log_q_true is None else bool(subtract_log_q_true), 0.0)
    name = sampler if isinstance(sampler, str) else None
    if name not in SAMPLERS and not isinstance(sampler, tuple(SAMPLERS.values())):
        raise ValueError(
            f"loss='negative_sampling' needs a fixed noise distribution whose log p_n of every "
            f"class the layer adds at inference; got sampler={sampler!r}. Use one of "
            f"{list(SAMPLERS)} (or an instance of those samplers); the kernel and LSH samplers "
            f"are built from the class table being trained: use loss='sampled_softmax' there")
    input_free = name != "adversarial" and not isinstance(
        sampler, samplers_lib.AdversarialSampler)
    if shared_negatives and not input_free:
        raise ValueError(
            f"shared_negatives=True with loss='negative_sampling' and sampler={sampler!r}: "
            f"batch-shared negatives come from the batch's mixture of p_n(.|x), not from each "
            f"example's p_n(.|x), so xi + log p_n(y|x) would not be the model's score; use "
            f"shared_negatives=False")
    if shared_negatives and unique:
        raise ValueError(
            "unique=True with shared_negatives=True and loss='negative_sampling': distinct "
            "negatives are not iid draws from p_n (class y is included with probability "
            "1 - (1 - p_n(y))^tries), so the correction log p_n(y) would be biased; pass "
            "unique=False")
    if remove_accidental_hits:
        raise ValueError(
            "remove_accidental_hits=True with loss='negative_sampling': dropping the negatives "
            "that hit the true class moves the optimum to log p - log(1 - p) - log p_n, so the "
            "corrected scores would not be log p(y|x); leave remove_accidental_hits=None")
    if subtract_log_q_true is not None:
        raise ValueError(f"subtract_log_q_true={subtract_log_q_true!r} applies to "
                         f"loss='sampled_softmax' (the negative-sampling loss has no log q); "
                         f"leave it None with loss='negative_sampling'")
    return False, None, regularizer


def correction_for(sampler):
    """The `NoiseCorrection` of a sampler accepted by `check_options`."""
    if isinstance(sampler, samplers_lib.AdversarialSampler):
        return _TreeNoise(sampler)
    if isinstance(sampler, _INPUT_FREE):
        return _InputFreeNoise(sampler)
    raise ValueError(f"No prediction-time correction for the sampler {sampler!r}")


class NoiseCorrection(chunked.ClassChunks):
    """log p_n(y|x) of a layer's noise, for all classes or in evaluation chunks.

    Every method is plain TensorFlow except `offsets_of` (evaluation only),
    which may use the sampler's log_prob op.
    """

    def __init__(self, sampler):
        self.sampler = sampler

    def all(self, inputs):
        """[batch or 1, num_classes] log p_n(y | inputs) (inputs: [batch, dim] float32)."""
        raise NotImplementedError

    def offsets_of(self, inputs, labels):
        return self.sampler.log_prob(inputs, labels[:, None])[:, 0]

    def queried_with(self, query):
        """This correction computed from `query` instead of the scored inputs.

        full_softmax_stats passes its `inputs` (the model's h) to the chunks;
        a sampler queried with other features of x (the adversarial tree on
        fixed features) must see those: query is [batch, k] float32, row i
        the sampler's query of example i.
        """
        return _FixedQuery(self, query)


class _FixedQuery(chunked.ClassChunks):
    """A NoiseCorrection whose sampler reads a fixed query, not the inputs."""

    def __init__(self, correction, query):
        self.correction, self.query = correction, query

    def num_chunks(self, num_classes, chunk_size):
        return self.correction.num_chunks(num_classes, chunk_size)

    def chunk(self, inputs, index, num_classes, chunk_size):
        del inputs
        return self.correction.chunk(self.query, index, num_classes, chunk_size)

    def offsets_of(self, inputs, labels):
        del inputs
        return self.correction.offsets_of(self.query, labels)


class _InputFreeNoise(NoiseCorrection):
    """p_n(y) without x: one [1, n] row of log-probabilities serves the batch."""

    def _log_probs(self, ids):
        return self.sampler.log_prob(None, ids[None, :])  # inputs are ignored

    def all(self, inputs):
        del inputs
        return self._log_probs(tf.range(self.sampler.num_classes, dtype=tf.int64))

    def chunk(self, inputs, index, num_classes, chunk_size):
        ids, _ = super().chunk(inputs, index, num_classes, chunk_size)
        return ids, self._log_probs(ids)


class _TreeNoise(NoiseCorrection):
    """The adversarial tree, chunked by subtrees of one or two classes each."""

    def all(self, inputs):
        return self.sampler.all_log_probs(inputs)

    @staticmethod
    def _subtrees_per_chunk(chunk_size):
        return max(1, chunk_size // 2)  # <= chunk_size classes

    def num_chunks(self, num_classes, chunk_size):
        del num_classes
        per = self._subtrees_per_chunk(chunk_size)
        return tf.constant(-(-self.sampler.num_subtrees // per), tf.int64)

    def chunk(self, inputs, index, num_classes, chunk_size):
        del num_classes
        per = self._subtrees_per_chunk(chunk_size)
        start = index * per
        return self.sampler.subtree_log_probs(
            inputs, start, tf.minimum(start + per, self.sampler.num_subtrees))
