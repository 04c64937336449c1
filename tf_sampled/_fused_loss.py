"""The fused per-example sampled softmax loss op and its registered gradient.

`tf_sampled.nn.sampled_softmax_loss` calls `loss` for per-example candidates;
the composition of TensorFlow ops there stays as the reference.
"""
import tensorflow as tf
# variable_accessed has no public equivalent: it tells GradientTapes (and
# tf.function) that an op read the variable through its handle, as
# ResourceVariable.sparse_read does before ResourceGather.
from tensorflow.python.ops import control_flow_util
from tensorflow.python.ops import resource_variable_ops

from tf_sampled import _ops
from tf_sampled import _variables

_LOSS = "TfSampled>SampledSoftmaxLoss"
_RESOURCE_LOSS = "TfSampled>ResourceSampledSoftmaxLoss"


def table_arguments(weights, biases, inputs):
    """How the fused op can read the table: ("resource" | "tensor", w, b), or None.

    Variables are read in place through their handles; tensors are passed as
    they are. None (use the reference path) for other dtypes than float32, for
    a variable paired with a tensor, and inside XLA compilation (the op has no
    XLA kernel; Keras compiles train steps with XLA when a GPU is visible).
    """
    if inputs.dtype != tf.float32 or control_flow_util.GraphOrParentsInXlaContext(
            tf.compat.v1.get_default_graph()):
        return None
    table = [weights] if biases is None else [weights, biases]
    variables = [_variables.as_tf_variable(t) for t in table]
    if all(v is not None for v in variables):
        kind, values = "resource", variables
    elif all(v is None for v in variables):
        kind, values = "tensor", [tf.convert_to_tensor(t) for t in table]
    else:
        return None
    if any(v.dtype != tf.float32 for v in values):
        return None
    return kind, values[0], values[1] if len(values) > 1 else None


def loss(table, labels, inputs, sampled, sampled_log_count, true_log_count,
         remove_accidental_hits, subtract_log_q_true):
    """[batch] losses from the fused op.

    Args:
      table: what `table_arguments` returned (not None).
      labels: [batch, num_true] int64; sampled: [batch, S] int64.
      inputs: [batch, dim] float32.
      sampled_log_count, true_log_count: [batch, S], [batch, num_true]: the log
        expected counts subtracted from the logits.
      remove_accidental_hits, subtract_log_q_true: as in
        `tf_sampled.nn.sampled_softmax_loss`.
    """
    library = _ops.load_ops()
    kind, weights, biases = table
    common = dict(inputs=inputs, labels=labels, sampled=sampled,
                  sampled_log_count=tf.cast(sampled_log_count, tf.float32),
                  true_log_count=tf.cast(true_log_count, tf.float32),
                  remove_accidental_hits=remove_accidental_hits,
                  subtract_log_q_true=subtract_log_q_true)
    if kind == "tensor":
        return library.tf_sampled_sampled_softmax_loss(
            weights=weights, biases=tf.zeros([0]) if biases is None else biases,
            **common)[0]
    for variable in (weights, biases):
        if variable is not None:
            resource_variable_ops.variable_accessed(variable)
    return library.tf_sampled_resource_sampled_softmax_loss(
        weights=weights.handle, biases=(weights if biases is None else biases).handle,
        has_biases=biases is not None, **common)[0]


def _table_shape(op, index):
    if op.inputs[index].dtype == tf.resource:
        return resource_variable_ops.variable_shape(op.inputs[index])
    return tf.shape(op.inputs[index])


def _has_biases(op):
    if op.type == _RESOURCE_LOSS:
        return op.get_attr("has_biases")
    # The tensor form takes [0] biases for none.
    biases = op.inputs[2]
    return not (biases.shape.rank == 1 and biases.shape[0] == 0)


@tf.RegisterGradient(_LOSS)
@tf.RegisterGradient(_RESOURCE_LOSS)
def _sampled_softmax_loss_grad(op, loss_grad, *unused_output_grads):
    """Gradients: inputs densely, table and biases as IndexedSlices over the
    distinct rows the batch read, and the log counts' (minus the logits')."""
    del unused_output_grads  # logit_grads and input_grads feed only this function
    inputs, labels, sampled = op.inputs[0], op.inputs[3], op.inputs[4]
    logit_grads, input_grads = op.outputs[1], op.outputs[2]
    row_ids, row_grads, bias_grads = _ops.load_ops().tf_sampled_sampled_softmax_loss_grad(
        loss_grad=loss_grad, logit_grads=logit_grads, inputs=inputs, labels=labels,
        sampled=sampled)
    scaled = loss_grad[:, None] * logit_grads  # d total / d logit, [batch, T + S]
    num_true = tf.shape(labels)[1]
    weights_grad = tf.IndexedSlices(row_grads, row_ids, _table_shape(op, 1))
    biases_grad = (tf.IndexedSlices(bias_grads, row_ids, _table_shape(op, 2))
                   if _has_biases(op) else None)
    true_count_grad = -scaled[:, :num_true] if op.get_attr("subtract_log_q_true") else None
    return [loss_grad[:, None] * input_grads, weights_grad, biases_grad, None, None,
            -scaled[:, num_true:], true_count_grad]
