"""Plain SGD whose sparse steps are one multi-threaded op (Keras 3)."""
import keras
import tensorflow as tf

from tf_sampled.optimizers import sparse_apply


@keras.saving.register_keras_serializable(package="tf_sampled")
class SparseSGD(keras.optimizers.SGD):
    """Keras 3's SGD with its sparse steps run by `TfSampled>SparseApplySgd`.

    Keras' SGD applies an IndexedSlices gradient with TensorFlow's
    `ResourceScatterSub`, which walks the rows one at a time on one thread; a
    per-example sampled softmax step touches B (S + 1) rows, and that scatter
    then costs more than the loss (`benchmarks/bench_fused_loss.py`). This
    optimizer sums duplicate rows and updates the distinct ones in one pass
    over TensorFlow's thread pool: the same weights, faster.

    Only momentum 0 has a sparse step (Keras' momentum slot is dense): with
    momentum, and for variables the op cannot take (mirrored, GPU, not
    float32), the step is Keras' own. Arguments are `keras.optimizers.SGD`'s.
    """

    def update_step(self, gradient, variable, learning_rate):
        if (isinstance(gradient, tf.IndexedSlices) and not self.momentum
                and sparse_apply.sgd(variable, gradient, learning_rate)):
            return None
        return super().update_step(gradient, variable, learning_rate)
