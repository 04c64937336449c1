"""The sampler protocol shared by every proposal in the package."""
import typing

import tensorflow as tf

from tf_sampled import _variables
from tf_sampled.samplers import stream as stream_lib


class SampledCandidates(typing.NamedTuple):
    """Per-example negatives and the exact log-probabilities they were drawn with.

    Attributes:
      ids: [batch, num_sampled] int64 sampled class ids (with replacement).
      log_q: [batch, num_sampled] float32, log q(ids[b, s] | inputs[b]).
      true_log_q: [batch, num_true] float32, log q of the true classes
        ([batch, 0] when no true classes were given).
    """

    ids: tf.Tensor
    log_q: tf.Tensor
    true_log_q: tf.Tensor


def check_count(name, value, maximum=None):
    """A positive Python int, or ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def as_float32_variable(value, name):
    """The variable itself when it is a float32 variable, else a float32 copy.

    Raises:
      ValueError naming `name` and the dtype for a variable of another dtype
      (a copy would not follow its updates) or a table that is not floating.
    """
    variable = _variables.as_float32_tf_variable(value)
    if variable is not None:
        return variable
    variable = _variables.as_tf_variable(value)
    if variable is not None:
        raise ValueError(
            f"{name} must be a float32 variable (the ops read it in place), got a "
            f"{variable.dtype.name} variable; pass a float32 variable, or a tensor to copy once")
    value = tf.convert_to_tensor(value)
    if not value.dtype.is_floating:
        raise ValueError(f"{name} must be floating point (float32), got dtype {value.dtype.name}")
    return tf.Variable(tf.cast(value, tf.float32), trainable=False, name=name)


def check_table_shape(shape):
    """(num_classes, dim) of a class table's static shape, or ValueError."""
    shape = tf.TensorShape(shape)  # arrays' shapes are tuples
    if shape.rank != 2 or shape[0] is None or shape[1] is None:
        raise ValueError(
            f"embeddings must have a static shape [num_classes, dim], got {shape}")
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"embeddings must be non-empty, got shape {shape}")
    return int(shape[0]), int(shape[1])


def as_query_matrix(inputs, num_classes, dim):
    """float32 [batch, dim] inputs h for a table of [num_classes, dim], or ValueError."""
    inputs = tf.convert_to_tensor(inputs)
    if not inputs.dtype.is_floating:
        raise ValueError(f"inputs must be floating point, got dtype {inputs.dtype.name}")
    if inputs.shape.rank != 2 or inputs.shape[1] != dim:
        raise ValueError(
            f"inputs must have shape [batch, {dim}] to match embeddings "
            f"[{num_classes}, {dim}], got {inputs.shape}")
    return tf.cast(inputs, tf.float32)


def as_class_matrix(classes, name, batch=None):
    """int64 [batch, n] class ids (a [batch] vector becomes [batch, 1])."""
    classes = tf.convert_to_tensor(classes)
    if not classes.dtype.is_integer:
        raise ValueError(f"{name} must hold integer class ids, got dtype {classes.dtype.name}")
    classes = tf.cast(classes, tf.int64)
    if classes.shape.rank == 1:
        classes = classes[:, None]
    if classes.shape.rank != 2:
        raise ValueError(f"{name} must have shape [batch, n], got {classes.shape}")
    if batch is not None and classes.shape[0] is not None and classes.shape[0] != batch:
        raise ValueError(f"{name} must have {batch} rows like inputs, got shape {classes.shape}")
    return classes


def gather_across_replicas(ids):
    """ids [n] of this replica, or of every replica in sync, concatenated.

    For sampler state that each replica of a `MirroredStrategy` holds a copy
    of: updating every copy with the union keeps the copies identical.
    """
    replica = tf.distribute.get_replica_context()
    if replica is not None and replica.num_replicas_in_sync > 1:
        return replica.all_gather(ids, axis=0)
    return ids


def expected_counts(log_q, num_sampled, num_tries):
    """TensorFlow's expected counts: S q without unique, 1 - (1 - q)^tries with it."""
    q = tf.exp(tf.cast(log_q, tf.float64))
    tries = tf.cast(num_tries, tf.float64)
    counts = tf.where(tf.equal(num_tries, num_sampled), q * num_sampled,
                      -tf.math.expm1(tries * tf.math.log1p(-q)))
    return tf.cast(counts, tf.float32)


class Sampler(tf.Module):
    """A proposal q(class | input) over `num_classes` classes.

    Subclasses implement `sample` (per-example negatives), `log_prob` and
    `candidate_sampler` (TensorFlow's batch-shared triple). State lives in
    non-trainable variables, so samplers checkpoint with `tf.train.Checkpoint`
    and work inside `tf.function`.

    Every sampling call draws from `stream` (a `SampleStream`): its draws are
    a function of the seeds and the stream's counter, which the call
    increments, so a restored sampler continues with the samples the saved
    one would have drawn next, and eager and `tf.function` calls agree.
    """

    def __init__(self, num_classes, name=None):
        super().__init__(name=name)
        self.num_classes = check_count("num_classes", num_classes)
        with self.name_scope:
            self.stream = stream_lib.SampleStream()

    def sample(self, inputs, num_sampled, true_classes=None, seed=None):
        """Draws per-example negatives.

        Args:
          inputs: [batch, dim] float queries (ignored by input-free samplers).
          num_sampled: S, draws per example (with replacement).
          true_classes: optional [batch, num_true] (or [batch]) int class ids
            whose log q is returned as `true_log_q`.
          seed: optional int seed: the same seed and stream counter
            (`stream.counter`, incremented by each call) give the same
            samples, in any process. None: the sampler's own random stream
            (`SampleStream.offset`). The global TensorFlow seed does not enter.

        Returns:
          `SampledCandidates` with ids/log_q [batch, S], true_log_q [batch, num_true].
        """
        raise NotImplementedError

    def log_prob(self, inputs, classes):
        """log q(classes[b, k] | inputs[b]) as float32 [batch, n]."""
        raise NotImplementedError

    def candidate_sampler(self, true_classes, num_true, num_sampled, unique, range_max,
                          seed=None, name=None, inputs=None):
        """TensorFlow's candidate-sampler triple, shared by the batch.

        Returns:
          (sampled_candidates [S] int64, true_expected_count [batch, num_true]
          float32, sampled_expected_count [S] float32), as
          `tf.random.log_uniform_candidate_sampler` defines them.
        """
        raise NotImplementedError

    def refresh(self, ids=None):
        """Brings the state up to date with the class table (no-op by default)."""
        del ids

    @property
    def refreshes_ids(self):
        """Whether `refresh(ids)` works (else only the full `refresh()`)."""
        return False

    def _shared_true_classes(self, true_classes, num_true, batch):
        """true_classes as int64 [batch, num_true] for `candidate_sampler`."""
        true_classes = as_class_matrix(true_classes, "true_classes", batch)
        if true_classes.shape[1] is not None and true_classes.shape[1] != num_true:
            raise ValueError(
                f"true_classes must have num_true={num_true} columns, got shape "
                f"{true_classes.shape}")
        return true_classes

    def _check_shared_args(self, num_true, num_sampled, unique, range_max):
        check_count("num_true", num_true)
        check_count("num_sampled", num_sampled)
        if range_max != self.num_classes:
            raise ValueError(
                f"range_max ({range_max!r}) must equal the sampler's num_classes "
                f"({self.num_classes})")
        if unique and num_sampled > range_max:
            raise ValueError(
                f"num_sampled ({num_sampled}) must be <= range_max ({range_max}) "
                f"when unique=True")
