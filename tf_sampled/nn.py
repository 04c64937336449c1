"""Sampled softmax loss for per-example candidates and for TensorFlow's triple."""
import tensorflow as tf

from tf_sampled import _fused_loss
from tf_sampled.samplers.base import SampledCandidates, as_class_matrix

# What TensorFlow adds to the logit of an accidental hit.
_ACCIDENTAL_HIT_PENALTY = -tf.float32.max


def _class_logits(weights, biases, ids, inputs):
    """Logits of classes `ids` [batch, n] for `inputs` [batch, dim]: [batch, n].

    Gathers rows (so the gradient w.r.t. a variable table is IndexedSlices).
    """
    rows = tf.gather(weights, ids)  # [batch, n, dim]
    logits = tf.einsum("bd,bnd->bn", inputs, rows)
    if biases is not None:
        logits += tf.gather(biases, ids)
    return logits


def _candidate_ids(sampled):
    """int64 [batch, S] ids of per-example candidates."""
    ids = tf.convert_to_tensor(sampled.ids)
    if ids.shape.rank != 2:
        raise ValueError(f"sampled.ids must have shape [batch, S], got {ids.shape}")
    if not ids.dtype.is_integer:
        raise ValueError(f"sampled.ids must hold integer class ids, got dtype {ids.dtype.name}")
    return tf.cast(ids, tf.int64)


def _is_hit(sampled, labels):
    """[batch, S] bool: sampled id equals one of the row's true ids.

    sampled: [batch, S] (per-example) or [S] (shared); labels: [batch, num_true].
    """
    if sampled.shape.rank == 1:
        sampled = sampled[None, :]
    return tf.reduce_any(tf.equal(sampled[:, :, None], labels[:, None, :]), axis=2)


def _checked_inputs(weights, biases, labels, inputs):
    """(inputs [batch, dim], labels int64 [batch, num_true]) after the shape and dtype checks."""
    inputs = tf.convert_to_tensor(inputs)
    if not inputs.dtype.is_floating:
        raise ValueError(f"inputs must be floating point, got dtype {inputs.dtype.name}")
    for name, table in (("weights", weights), ("biases", biases)):
        dtype = tf.as_dtype(table.dtype) if table is not None else inputs.dtype
        if dtype != inputs.dtype:
            raise ValueError(
                f"inputs (dtype {inputs.dtype.name}) and {name} (dtype {dtype.name}) must "
                f"have one float dtype: cast the inputs to {dtype.name} (the fused op needs "
                f"float32)")
    if inputs.shape.rank != 2:
        raise ValueError(f"inputs must have shape [batch, dim], got {inputs.shape}")
    weights_shape = tf.TensorShape(weights.shape)  # arrays and Keras variables too
    if weights_shape.rank != 2 or weights_shape[1] != inputs.shape[1]:
        raise ValueError(
            f"weights must have shape [num_classes, {inputs.shape[1]}] to match inputs "
            f"{inputs.shape}, got {weights_shape}")
    return inputs, as_class_matrix(labels, "labels", inputs.shape[0])


def _assert_labels_in_range(weights, labels):
    # tf.gather would fail with a message that does not name labels (and
    # return zeros on GPU), so check the range here.
    num_classes = tf.shape(weights, out_type=tf.int64)[0]
    tf.debugging.assert_non_negative(labels, message="labels must be >= 0")
    tf.debugging.assert_less(labels, num_classes,
                             message="labels must be < num_classes (rows of weights)")


def _sampled_logits(weights, biases, inputs, sampled):
    """The candidates' logits and log expected counts, composed of TensorFlow ops.

    Returns (ids, logits, log_count, true_log_count): per-example candidates
    give ids and logits [batch, S], log_count = log(S q) [batch, S] and
    true_log_count = log(S q(true)) [batch, num_true]; TensorFlow's triple
    gives ids [S], logits [batch, S] and the logs of its expected counts,
    [S] and [batch, num_true].
    """
    if isinstance(sampled, SampledCandidates):
        ids = _candidate_ids(sampled)
        log_s = tf.math.log(tf.cast(tf.shape(ids)[1], inputs.dtype))
        return (ids, _class_logits(weights, biases, ids, inputs),
                log_s + tf.cast(sampled.log_q, inputs.dtype),
                log_s + tf.cast(sampled.true_log_q, inputs.dtype))
    if len(sampled) != 3:
        raise ValueError("sampled must be SampledCandidates or TensorFlow's triple "
                         "(sampled_candidates, true_expected_count, "
                         f"sampled_expected_count), got {sampled!r}")
    ids, true_expected, sampled_expected = (tf.convert_to_tensor(t) for t in sampled)
    if ids.shape.rank != 1:
        raise ValueError(f"sampled_candidates must have shape [S], got {ids.shape}")
    rows = tf.gather(weights, ids)  # [S, dim]: shared by the batch, one matmul
    logits = tf.matmul(inputs, rows, transpose_b=True)
    if biases is not None:
        logits += tf.gather(biases, ids)
    return (ids, logits, tf.math.log(tf.cast(sampled_expected, inputs.dtype)),
            tf.math.log(tf.cast(true_expected, inputs.dtype)))


def sampled_softmax_loss(weights, biases, labels, inputs, sampled, *,
                         remove_accidental_hits=True, subtract_log_q_true=True,
                         fused=True, name=None):
    """Sampled softmax cross-entropy with the log q correction, per example.

    Corrected sampled logits are o_s - log(expected count of s): log(S q(s|h))
    for per-example candidates, TensorFlow's `sampled_expected_count` for its
    triple. With num_true > 1 each true class gets target 1/num_true, as in
    `tf.nn.sampled_softmax_loss`.

    Per-example candidates go through one fused op (`fused=True`): it reads
    the B (T + S) rows in place (from the variables' buffers, no copy of the
    table), never materialises [batch, S, dim], and its gradient gives
    `inputs` densely and `weights`, `biases` as IndexedSlices over the
    distinct rows read. It needs float32 inputs and weights/biases that are
    both float32 variables (tf or Keras) or both tensors, outside XLA
    (`jit_compile`); otherwise, and with `fused=False`, the same loss is
    composed of TensorFlow ops (the reference). The triple always uses the composition (its S rows are
    shared: one matmul). The fused op rejects an empty batch
    (InvalidArgumentError); the reference returns an empty loss.

    Args:
      weights: [num_classes, dim] class embeddings (a variable: its gradient is
        IndexedSlices over the gathered rows, never a dense [num_classes, dim]).
      biases: [num_classes] class biases, or None.
      labels: [batch, num_true] (or [batch]) int target classes.
      inputs: [batch, dim] float layer input h.
      sampled: per-example `SampledCandidates` (ids/log_q [batch, S],
        true_log_q [batch, num_true]) or TensorFlow's triple
        (sampled_candidates [S], true_expected_count [batch, num_true],
        sampled_expected_count [S]).
      remove_accidental_hits: push the logit of a sampled id that equals a true
        id of the same row to -inf (TensorFlow's convention).
      subtract_log_q_true: also correct the true logit by its expected count
        (TensorFlow / Jean et al.); False leaves it as is (Bengio & Senecal,
        Blanc & Rendle).
      fused: use the fused op for per-example candidates where it applies.
      name: optional name scope.

    Returns:
      [batch] float32 losses.
    """
    with tf.name_scope(name or "sampled_softmax_loss"):
        inputs, labels = _checked_inputs(weights, biases, labels, inputs)
        if isinstance(sampled, SampledCandidates):
            table = _fused_loss.table_arguments(weights, biases, inputs) if fused else None
            if table is not None:
                ids = _candidate_ids(sampled)
                log_s = tf.math.log(tf.cast(tf.shape(ids)[1], tf.float32))
                # The op checks every id's range and every count's finiteness.
                return _fused_loss.loss(
                    table, labels, inputs, ids,
                    log_s + tf.cast(sampled.log_q, tf.float32),
                    log_s + tf.cast(sampled.true_log_q, tf.float32),
                    remove_accidental_hits, subtract_log_q_true)
        _assert_labels_in_range(weights, labels)
        num_true = tf.shape(labels)[1]
        true_logits = _class_logits(weights, biases, labels, inputs)
        ids, sampled_logits, log_count, true_correction = _sampled_logits(
            weights, biases, inputs, sampled)
        sampled_logits -= log_count

        if subtract_log_q_true:
            true_logits -= true_correction
        if remove_accidental_hits:
            hits = _is_hit(ids, labels)
            sampled_logits += tf.where(hits, tf.cast(_ACCIDENTAL_HIT_PENALTY, inputs.dtype),
                                       tf.zeros([], inputs.dtype))
        logits = tf.concat([true_logits, sampled_logits], axis=1)
        targets = tf.concat(
            [tf.ones_like(true_logits) / tf.cast(num_true, inputs.dtype),
             tf.zeros_like(sampled_logits)], axis=1)
        return tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits)


def check_regularizer(value, name="regularizer"):
    """The negative-sampling regulariser lambda as a float >= 0, or ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            0 <= value < float("inf")):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def negative_sampling_loss(weights, biases, labels, inputs, sampled, *, regularizer=0.0,
                           remove_accidental_hits=False, name=None):
    """The negative-sampling (logistic) loss of Bamler & Mandt (2020), per example.

    loss = -log sigmoid(xi_y) - sum_s log sigmoid(-xi_s)
           + regularizer * [(xi_y + log p_n(y|x))^2 + sum_s (xi_s + log p_n(s|x))^2],
    with xi = inputs . w + b and negatives s ~ p_n(.|x). No log q enters the
    data terms: the noise distribution's bias is removed at prediction time,
    score_y = xi_y + log p_n(y|x) (`AdversarialSampler.correct_logits`); the
    optional regulariser keeps those scores small. With num_true > 1 the
    positive terms are averaged over the true columns. Accidental hits are
    kept by default (the theorem assumes negatives drawn from p_n as is).

    Args:
      weights: [num_classes, dim] class embeddings.
      biases: [num_classes] class biases, or None.
      labels: [batch, num_true] (or [batch]) int target classes.
      inputs: [batch, dim] float layer input h.
      sampled: per-example `SampledCandidates` (ids/log_q [batch, S],
        true_log_q [batch, num_true]: log p_n) or TensorFlow's triple, whose
        expected counts give log p_n = log(count / S) (exact without unique).
      regularizer: lambda >= 0 of the optional regulariser.
      remove_accidental_hits: drop the negative terms of sampled ids equal to a
        true id of the same row.
      name: optional name scope.

    Returns:
      [batch] float losses.
    """
    regularizer = check_regularizer(regularizer)
    with tf.name_scope(name or "negative_sampling_loss"):
        inputs, labels = _checked_inputs(weights, biases, labels, inputs)
        _assert_labels_in_range(weights, labels)
        true_logits = _class_logits(weights, biases, labels, inputs)
        ids, sampled_logits, log_count, true_log_count = _sampled_logits(
            weights, biases, inputs, sampled)
        # log p_n = log(expected count / S).
        log_s = tf.math.log(tf.cast(tf.shape(sampled_logits)[1], inputs.dtype))
        sampled_log_p = tf.broadcast_to(log_count - log_s, tf.shape(sampled_logits))
        true_log_p = true_log_count - log_s
        keep = tf.ones_like(sampled_logits)
        if remove_accidental_hits:
            keep = tf.where(_is_hit(ids, labels), tf.zeros_like(keep), keep)
        positive = -tf.reduce_mean(tf.math.log_sigmoid(true_logits), axis=1)
        negative = -tf.reduce_sum(keep * tf.math.log_sigmoid(-sampled_logits), axis=1)
        loss = positive + negative
        if regularizer:
            loss += regularizer * (
                tf.reduce_sum(tf.square(true_logits + true_log_p), axis=1)
                + tf.reduce_sum(keep * tf.square(sampled_logits + sampled_log_p), axis=1))
        return loss
