"""Adam that updates only the rows a sparse gradient touches (Keras 3)."""
import keras
import tensorflow as tf

from tf_sampled.optimizers import sparse_apply


def sum_duplicates(gradient):
    """(unique indices [n], summed rows [n, ...]) of an IndexedSlices gradient."""
    unique, position = tf.unique(gradient.indices)
    rows = tf.math.unsorted_segment_sum(gradient.values, position, tf.shape(unique)[0])
    return unique, rows


@keras.saving.register_keras_serializable(package="tf_sampled")
class LazyAdam(keras.optimizers.Adam):
    """Adam whose moments and weights change only on the rows of a sparse gradient.

    Keras 3's Adam turns the IndexedSlices gradient of a gathered table (class
    embeddings, word embeddings) into a dense update of every row: O(table)
    per step however few rows the batch touched. LazyAdam (as
    tensorflow-addons' LazyAdam for Keras 2) applies Adam's moment and weight
    update to the touched rows only, so a step costs O(rows touched).

    On a row it touches, a step is exactly Adam's (duplicate indices are
    summed first, as a dense gradient would sum them); the bias correction uses
    the optimizer's global step. Rows a step does not touch keep their weights
    and moments, where dense Adam would decay the moments and keep moving the
    weights. Dense gradients get dense Adam unchanged. Arguments are
    `keras.optimizers.Adam`'s.
    """

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        lr = tf.cast(learning_rate, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        alpha = lr * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        if not self.amsgrad and sparse_apply.lazy_adam(
                variable, m, v, gradient, alpha, beta_1, beta_2, self.epsilon):
            return None

        ids, grad = sum_duplicates(gradient)
        grad = tf.cast(grad, dtype)
        m_rows = beta_1 * tf.gather(m.value, ids) + (1 - beta_1) * grad
        v_rows = beta_2 * tf.gather(v.value, ids) + (1 - beta_2) * tf.square(grad)
        self.assign(m, tf.IndexedSlices(m_rows, ids))
        self.assign(v, tf.IndexedSlices(v_rows, ids))
        if self.amsgrad:
            v_hat = self._velocity_hats[index]
            v_rows = tf.maximum(tf.gather(v_hat.value, ids), v_rows)
            self.assign(v_hat, tf.IndexedSlices(v_rows, ids))
        self.assign_sub(variable, tf.IndexedSlices(
            alpha * m_rows / (tf.sqrt(v_rows) + tf.cast(self.epsilon, dtype)), ids))
        return None
