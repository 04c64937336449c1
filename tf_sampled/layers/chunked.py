"""Full-softmax statistics in class chunks (streaming log-sum-exp).

Evaluating a model with a million classes on the full softmax needs the
normaliser over every class, but never all [batch, num_classes] logits at
once: one chunk of classes at a time updates a running maximum and a running
sum of exponentials, and counts how many classes outscore the true one (that
count is the true class's rank, which gives top-k accuracy for every k).
The scores may carry a per-class offset (a model trained by negative
sampling scores logit + log p_n(y|x)): a `ClassChunks` says how the classes
are split and what each chunk adds.
"""
import tensorflow as tf

DEFAULT_CHUNK_SIZE = 8192


def _as_variable(table):
    """The tf.Variable behind a Keras 3 variable (so gathers read rows in place)."""
    inner = getattr(table, "value", None)
    return inner if isinstance(inner, tf.Variable) else table


class ClassChunks:
    """The classes in chunks of consecutive ids, scored by their plain logits.

    Subclasses add a per-class offset to the scores (and may split the
    classes in another order); every class must lie in exactly one chunk.
    """

    def num_chunks(self, num_classes, chunk_size):
        """int64 scalar: how many chunks (num_classes: int64 scalar tensor)."""
        return (num_classes + chunk_size - 1) // chunk_size

    def chunk(self, inputs, index, num_classes, chunk_size):
        """(ids [n] int64, offsets [batch or 1, n] or None) of chunk `index`.

        Args:
          inputs: [batch, dim] float32 queries.
          index: int64 scalar in [0, num_chunks).
          num_classes: int64 scalar.
          chunk_size: int, classes per chunk (a guide for subclasses).
        """
        start = index * chunk_size
        return tf.range(start, tf.minimum(start + chunk_size, num_classes)), None

    def offsets_of(self, inputs, labels):
        """[batch] offsets of the true classes (labels: [batch] int64), or None."""
        del inputs, labels
        return None


def full_softmax_stats(weights, biases, labels, inputs, chunk_size=DEFAULT_CHUNK_SIZE,
                       chunks=None):
    """Full-softmax cross-entropy and true-class rank, one class chunk at a time.

    Memory is O(batch * chunk_size), never O(batch * num_classes); the table
    is read by row gathers (a variable is not copied).

    Args:
      weights: [num_classes, dim] class embeddings (variable or tensor).
      biases: [num_classes] class biases, or None.
      labels: [batch] (or [batch, 1]) int true class ids in [0, num_classes).
      inputs: [batch, dim] float queries.
      chunk_size: classes scored per chunk.
      chunks: a `ClassChunks` (how the classes are split, per-class score
        offsets); None: consecutive ids, plain logits.

    Returns:
      (cross_entropy [batch] float32, rank [batch] int64): -log softmax of the
      true class's score, and the number of classes whose score is strictly
      greater than the true class's (top-k correct iff rank < k, as
      tf.math.in_top_k).
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    weights, biases = _as_variable(weights), _as_variable(biases)
    inputs = tf.cast(tf.convert_to_tensor(inputs), tf.float32)
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape.rank != 1 or not labels.dtype.is_integer:
        raise ValueError(f"labels must be int class ids of shape [batch] or [batch, 1], got "
                         f"{labels.dtype.name} {labels.shape}")
    labels = tf.cast(labels, tf.int64)
    num_classes = tf.shape(weights, out_type=tf.int64)[0]
    # Gathers must not read a bad id before the checks (their error would not name labels).
    with tf.control_dependencies([
            tf.debugging.assert_non_negative(labels, message="labels must be >= 0"),
            tf.debugging.assert_less(labels, num_classes, message="labels must be < num_classes")]):
        labels = tf.identity(labels)

    def logits_of(ids):  # ids: [n] -> [batch, n]
        logits = tf.matmul(inputs, tf.gather(weights, ids), transpose_b=True)
        if biases is not None:
            logits += tf.gather(biases, ids)[None, :]
        return logits

    true_logit = tf.reduce_sum(inputs * tf.gather(weights, labels), axis=1)
    if biases is not None:
        true_logit += tf.gather(biases, labels)
    chunks = chunks or ClassChunks()
    true_offset = chunks.offsets_of(inputs, labels)
    if true_offset is not None:
        true_logit += tf.cast(true_offset, true_logit.dtype)
    batch = tf.shape(inputs)[0]

    def body(index, running_max, running_sum, rank):
        ids, offsets = chunks.chunk(inputs, index, num_classes, chunk_size)
        logits = logits_of(ids)
        if offsets is not None:
            logits += tf.cast(offsets, logits.dtype)
        chunk_max = tf.reduce_max(logits, axis=1)
        new_max = tf.maximum(running_max, chunk_max)
        running_sum = (running_sum * tf.exp(running_max - new_max)
                       + tf.reduce_sum(tf.exp(logits - new_max[:, None]), axis=1))
        # The true class is left out of the count: its chunk logit may differ
        # from true_logit by rounding and must not outscore itself.
        not_true = tf.not_equal(ids[None, :], labels[:, None])
        greater = tf.logical_and(logits > true_logit[:, None], not_true)
        rank += tf.reduce_sum(tf.cast(greater, tf.int64), axis=1)
        return index + 1, new_max, running_sum, rank

    # One chunk in flight at a time: the memory bound is the point.
    num_chunks = chunks.num_chunks(num_classes, chunk_size)
    _, running_max, running_sum, rank = tf.while_loop(
        lambda index, *_: index < num_chunks, body,
        [tf.constant(0, tf.int64), tf.fill([batch], -float("inf")), tf.zeros([batch]),
         tf.zeros([batch], tf.int64)],
        parallel_iterations=1)
    cross_entropy = running_max + tf.math.log(running_sum) - true_logit
    return cross_entropy, rank
