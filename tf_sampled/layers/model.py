"""A functional Keras model that trains its SampledSoftmax head on the sampled loss."""
import warnings

import keras
import tensorflow as tf

from tf_sampled import optimizers as optimizers_lib
from tf_sampled.layers import metrics as metrics_lib
from tf_sampled.layers.sampled_softmax import SampledSoftmax, check_label_shape


def _check_label_array(y):
    """ValueError for array labels of a shape the head refuses (datasets pass).

    Checked before Keras runs a step: a step function traced for [batch] and
    [batch, 1] labels takes labels of any rank, so it could only fail at run time.
    """
    if getattr(y, "shape", None) is not None:
        check_label_shape(y.shape)


def head_and_input(model):
    """The SampledSoftmax layer producing the model's output, and its input tensor."""
    outputs = tf.nest.flatten(model.outputs)  # top_k gives two: scores and ids
    heads = {id(o._keras_history.operation): o for o in outputs}
    output = outputs[0]
    head = output._keras_history.operation
    if len(heads) != 1 or not isinstance(head, SampledSoftmax):
        raise ValueError(
            f"SampledSoftmaxModel's output must be that of one tf_sampled.layers.SampledSoftmax "
            f"layer, got outputs from {[type(o._keras_history.operation).__name__ for o in outputs]}")
    node = head._inbound_nodes[output._keras_history.node_index]
    return head, node.input_tensors[0]


@keras.saving.register_keras_serializable(package="tf_sampled")
class SampledSoftmaxModel(keras.Model):
    """`keras.Model(inputs, outputs)` whose output is a `SampledSoftmax` layer.

    - `fit` trains on the layer's sampled loss (no [batch, num_classes]
      tensor) and refreshes its sampler after every optimizer step; it reports
      `loss` (the sampled loss) and `sampler_ess` (effective sample size of the
      negatives' importance weights over S: near 1 for a proposal close to the
      model's softmax, small for a poor or stale one).
    - `evaluate` computes the full softmax of the layer's scores (logits, or
      logits + log p_n(y|x) with loss="negative_sampling") in class chunks:
      `loss` (full cross-entropy, nats), `perplexity` and `top_k_accuracy`
      for the layer's eval_top_k.
    - `predict`, calling the model and `export` give the layer's inference
      output (full logits, probabilities or top-k) from plain TensorFlow ops.

    `compile` takes no loss or metrics (the model defines them); its default
    optimizer is `tf_sampled.optimizers.LazyAdam()`, and it warns when the
    optimizer would update the whole class table every step. The model never
    jit-compiles (the sampling ops have no XLA kernels).

    Args:
      inputs: the functional model's inputs.
      outputs: the output of a `SampledSoftmax` layer.
      name: model name.
      **kwargs: `keras.Model` arguments.
    """

    def __init__(self, inputs, outputs, name=None, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        head, head_input = head_and_input(self)
        # Kept out of Keras' tracking: the trunk shares the model's layers, and
        # tracking it would save their weights twice.
        object.__setattr__(self, "_sampled_head", head)
        object.__setattr__(self, "_trunk", keras.Model(self.inputs, head_input))
        self._ess_tracker = keras.metrics.Mean(name="sampler_ess")
        self._perplexity = metrics_lib.Perplexity()
        self._top_k = [metrics_lib.TopKFromRank(k) for k in head.eval_top_k]

    @property
    def sampled_softmax(self):
        """The model's `SampledSoftmax` output layer."""
        return self._sampled_head

    def compile(self, optimizer=None, loss=None, metrics=None, **kwargs):
        """`keras.Model.compile` without loss and metrics (the model defines them).

        Args:
          optimizer: a Keras optimizer (or name); defaults to
            `tf_sampled.optimizers.LazyAdam()`.
          loss: must be None.
          metrics: must be None.
          **kwargs: other `keras.Model.compile` arguments (jit_compile=True is
            turned off with a warning).
        """
        if loss is not None or metrics is not None or kwargs.get("weighted_metrics"):
            raise ValueError(f"SampledSoftmaxModel defines its own loss and metrics (sampled "
                             f"loss in fit, full-softmax metrics in evaluate); got "
                             f"loss={loss!r}, metrics={metrics!r}")
        optimizer = keras.optimizers.get(optimizer or optimizers_lib.LazyAdam())
        reason = optimizers_lib.densifying_reason(optimizer)
        if reason:
            warnings.warn(
                f"{reason}: every step will update all {self._sampled_head.num_classes} rows of "
                f"the SampledSoftmax class table (O(num_classes) per step). Use "
                f"tf_sampled.optimizers.LazyAdam, tf_sampled.optimizers.SparseAdagrad or "
                f"plain SGD to keep a step O(rows touched).", stacklevel=2)
        super().compile(optimizer=optimizer, **kwargs)

    def fit(self, x=None, y=None, *args, **kwargs):
        _check_label_array(y)
        validation = kwargs.get("validation_data")
        if isinstance(validation, (tuple, list)) and len(validation) > 1:
            _check_label_array(validation[1])
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        _check_label_array(y)
        return super().evaluate(x, y, *args, **kwargs)

    def train_on_batch(self, x, y=None, *args, **kwargs):
        _check_label_array(y)
        return super().train_on_batch(x, y, *args, **kwargs)

    def test_on_batch(self, x, y=None, *args, **kwargs):
        _check_label_array(y)
        return super().test_on_batch(x, y, *args, **kwargs)

    def compile_from_config(self, config):
        # Keras skips a custom compile() when loading; this one is safe to call.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)  # so its slots load too

    def _scaled_mean(self, values, sample_weight):
        """Mean over the batch (weighted as Keras' sum_over_batch_size), per replica."""
        if sample_weight is not None:
            values = values * tf.cast(tf.reshape(sample_weight, [-1]), values.dtype)
        mean = tf.reduce_mean(values)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return mean / replicas if replicas > 1 else mean

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        head = self._sampled_head
        with tf.GradientTape() as tape:
            h = self._trunk(x, training=True)
            losses, touched, ess = head.sampled_loss(h, y)
            loss = self._scaled_mean(losses, sample_weight)
            if self.losses:
                loss += tf.add_n(self.losses)
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        head.update_sampler(touched)
        self._loss_tracker.update_state(losses, sample_weight=sample_weight)
        self._ess_tracker.update_state(ess)
        return {"loss": self._loss_tracker.result(), "sampler_ess": self._ess_tracker.result()}

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        h = self._trunk(x, training=False)
        cross_entropy, rank = self._sampled_head.full_softmax_stats(h, y)
        self._loss_tracker.update_state(cross_entropy, sample_weight=sample_weight)
        self._perplexity.update_state(cross_entropy, sample_weight=sample_weight)
        for metric in self._top_k:
            metric.update_state(rank, sample_weight=sample_weight)
        return {metric.name: metric.result()
                for metric in [self._loss_tracker, self._perplexity, *self._top_k]}
