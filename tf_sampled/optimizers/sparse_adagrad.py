"""Adagrad with row-sparse updates for sparse gradients (Keras 3)."""
import keras
import tensorflow as tf

from tf_sampled.optimizers import sparse_apply
from tf_sampled.optimizers.lazy_adam import sum_duplicates


@keras.saving.register_keras_serializable(package="tf_sampled")
class SparseAdagrad(keras.optimizers.Adagrad):
    """Keras 3's Adagrad, computed on the touched rows only.

    Adagrad leaves a row with a zero gradient exactly as it is, so this gives
    the weights `keras.optimizers.Adagrad` gives on the dense gradient, but
    Keras 3's Adagrad evaluates its update densely, O(table) per step
    (measured: 1M x 64 table, 300 ms per step against 0.7 ms for plain SGD),
    where this one costs O(rows touched). Repeated rows of an IndexedSlices
    gradient are summed before squaring, as in the dense gradient (Keras'
    Adagrad squares them one by one). Arguments are Adagrad's.

    A sparse step on float32 CPU variables is one multi-threaded op
    (`TfSampled>SparseApplyAdagrad`); other variables (mirrored, GPU, other
    dtypes) take the same update in plain TensorFlow ops.
    """

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        accumulator = self._accumulators[self._get_variable_index(variable)]
        if sparse_apply.adagrad(variable, accumulator, gradient, learning_rate,
                                self.epsilon):
            return None
        ids, grad = sum_duplicates(gradient)
        grad = tf.cast(grad, dtype)
        acc_rows = tf.gather(accumulator.value, ids) + tf.square(grad)
        self.assign(accumulator, tf.IndexedSlices(acc_rows, ids))
        self.assign_sub(variable, tf.IndexedSlices(
            tf.cast(learning_rate, dtype) * grad
            / tf.sqrt(acc_rows + tf.cast(self.epsilon, dtype)), ids))
        return None
