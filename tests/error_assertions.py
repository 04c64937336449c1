"""Assertions shared by the bad-input tests of every op family."""
import numpy as np
import pytest
import tensorflow as tf


def raises_naming(exc_types, fn, *fragments):
    """Calls fn, asserts it raises exc_types and the message has every fragment."""
    with pytest.raises(exc_types) as info:
        fn()
    message = str(info.value)
    for fragment in fragments:
        assert str(fragment) in message, (
            f"{type(info.value).__name__} message does not name {fragment!r}: {message}")
    return message


def assert_rejects_bad_counters(call):
    """call(counter) of a sampling op: every malformed stream counter is refused
    with an error naming `counter` (eagerly, and in a graph by the shape function)."""
    invalid = tf.errors.InvalidArgumentError
    for bad in (-1, -(2**63)):
        raises_naming(invalid, lambda: call(np.int64(bad)), "counter", f"got {bad}")
    raises_naming(invalid, lambda: call(np.array([1, 2], np.int64)), "counter", "rank 0")
    # Eagerly TensorFlow's own dtype check fires first ("input #6 ... int64").
    raises_naming((TypeError, invalid), lambda: call(tf.constant(1, tf.int32)), "int64")
    with tf.Graph().as_default():
        raises_naming(ValueError, lambda: call(tf.zeros([2], tf.int64)), "counter", "scalar")
        raises_naming(TypeError, lambda: call(tf.constant(1, tf.int32)), "counter", "int64")
