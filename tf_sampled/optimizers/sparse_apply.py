"""Sparse optimizer steps as one multi-threaded op, in place in the variables.

TensorFlow applies an IndexedSlices update with one ResourceScatter op per
variable (and LazyAdam's Python form adds a unique, a segment sum and two
gathers), each walking the rows one at a time on one thread: at 16k touched
rows that costs more than the sampled loss itself. The `TfSampled>SparseApply*`
ops sum duplicate rows, then update each distinct row's weights and slots in
one pass, split over TensorFlow's CPU thread pool.

Each function returns False, having done nothing, when the op cannot take the
variables (not float32 `tf.Variable`s on the CPU, e.g. mirrored or GPU
variables); the caller then runs its plain TensorFlow update.
"""
import tensorflow as tf

from tf_sampled import _ops
from tf_sampled import _variables


def _op_variables(variables):
    """The in-place-updatable float32 tf.Variables behind `variables`, or None."""
    out = _variables.in_place_variables(variables)
    if out is None or any(variable.dtype != tf.float32 for variable in out):
        return None
    return out


def _rows(gradient):
    return gradient.indices, tf.cast(gradient.values, tf.float32)


def _scalar(value):
    return tf.cast(value, tf.float32)


def sgd(variable, gradient, learning_rate):
    """variable[i] -= learning_rate * (summed gradient rows of i).

    Args:
      variable: [num_rows, ...] float32 variable (tf or Keras).
      gradient: `tf.IndexedSlices` with indices [n] and values
        [n, ...variable.shape[1:]].
      learning_rate: scalar.

    Returns:
      True when applied, False when the op cannot update `variable`.
    """
    handles = _op_variables([variable])
    if handles is None:
        return False
    indices, values = _rows(gradient)
    _ops.load_ops().tf_sampled_sparse_apply_sgd(
        var=handles[0].handle, indices=indices, grads=values, lr=_scalar(learning_rate))
    return True


def lazy_adam(variable, m, v, gradient, lr, beta_1, beta_2, epsilon):
    """Adam's update of the touched rows of variable, m and v.

    Args:
      variable, m, v: [num_rows, ...] float32 variables (the weights and
        Adam's moments).
      gradient: `tf.IndexedSlices` over variable's rows.
      lr: scalar step size with Adam's bias correction already applied.
      beta_1, beta_2, epsilon: Adam's scalars.

    Returns:
      True when applied, False when the op cannot update the variables.
    """
    handles = _op_variables([variable, m, v])
    if handles is None:
        return False
    indices, values = _rows(gradient)
    _ops.load_ops().tf_sampled_sparse_apply_lazy_adam(
        var=handles[0].handle, m=handles[1].handle, v=handles[2].handle,
        indices=indices, grads=values, lr=_scalar(lr), beta1=_scalar(beta_1),
        beta2=_scalar(beta_2), epsilon=_scalar(epsilon))
    return True


def adagrad(variable, accumulator, gradient, lr, epsilon):
    """Adagrad's update of the touched rows of variable and its accumulator.

    Args:
      variable, accumulator: [num_rows, ...] float32 variables.
      gradient: `tf.IndexedSlices` over variable's rows.
      lr, epsilon: scalars.

    Returns:
      True when applied, False when the op cannot update the variables.
    """
    handles = _op_variables([variable, accumulator])
    if handles is None:
        return False
    indices, values = _rows(gradient)
    _ops.load_ops().tf_sampled_sparse_apply_adagrad(
        var=handles[0].handle, accumulator=handles[1].handle, indices=indices,
        grads=values, lr=_scalar(lr), epsilon=_scalar(epsilon))
    return True
