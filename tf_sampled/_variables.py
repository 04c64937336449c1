"""The tf.Variable behind what users pass as a table (tf or Keras 3 variables)."""
import tensorflow as tf


def as_tf_variable(value):
    """The `tf.Variable` that holds `value`, or None when it is not a variable.

    A Keras 3 variable (e.g. a layer weight) wraps a tf.Variable as `.value`;
    the ops read that variable in place through its handle.
    """
    if isinstance(value, tf.Variable):
        return value
    inner = getattr(value, "value", None)
    return inner if isinstance(inner, tf.Variable) else None


def as_float32_tf_variable(value):
    """The float32 `tf.Variable` that holds `value`, or None (not a variable,
    or another dtype)."""
    variable = as_tf_variable(value)
    return variable if variable is not None and variable.dtype == tf.float32 else None


def in_place_variables(values):
    """The tf.Variables behind `values` when a CPU op may update them in place
    through their handles, else None (one is not a variable, is mirrored or
    lives on a GPU)."""
    out = []
    for value in values:
        variable = as_tf_variable(value)
        if (variable is None or isinstance(variable, tf.distribute.DistributedValues)
                or "GPU" in (variable.device or "").upper()):
            return None
        out.append(variable)
    return out
