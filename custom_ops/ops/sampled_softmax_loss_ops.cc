// Op registrations for the fused per-example sampled softmax loss and its
// gradient. Shapes are checked here as far as they are known at graph time;
// the kernels check everything again.
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tf_sampled {

using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

namespace {

// Inputs 0 and 3..6 of both forward ops: inputs [B, d], labels [B, T],
// sampled [B, S], sampled_log_count [B, S], true_log_count [B, T].
// `weights` is the [C, d] table when known (the tensor op), else null.
absl::Status ForwardShape(InferenceContext* c, const ShapeHandle* weights) {
  ShapeHandle inputs, labels, sampled, sampled_log_count, true_log_count;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &inputs));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 2, &labels));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 2, &sampled));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(5), 2, &sampled_log_count));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(6), 2, &true_log_count));
  TF_RETURN_IF_ERROR(c->Merge(sampled, sampled_log_count, &sampled));
  TF_RETURN_IF_ERROR(c->Merge(labels, true_log_count, &labels));
  DimensionHandle batch = c->Dim(inputs, 0), dim = c->Dim(inputs, 1);
  TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(labels, 0), &batch));
  TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(sampled, 0), &batch));
  if (weights != nullptr) {
    TF_RETURN_IF_ERROR(c->Merge(dim, c->Dim(*weights, 1), &dim));
  }
  DimensionHandle columns;
  TF_RETURN_IF_ERROR(c->Add(c->Dim(labels, 1), c->Dim(sampled, 1), &columns));
  c->set_output(0, c->Vector(batch));
  c->set_output(1, c->Matrix(batch, columns));
  c->set_output(2, c->Matrix(batch, dim));
  return absl::OkStatus();
}

}  // namespace

#define TF_SAMPLED_LOSS_INTERFACE                               \
  Input("labels: int64")                                        \
      .Input("sampled: int64")                                  \
      .Input("sampled_log_count: float")                        \
      .Input("true_log_count: float")                           \
      .Output("loss: float")                                    \
      .Output("logit_grads: float")                             \
      .Output("input_grads: float")                             \
      .Attr("remove_accidental_hits: bool = true")              \
      .Attr("subtract_log_q_true: bool = true")

REGISTER_OP("TfSampled>SampledSoftmaxLoss")
    .Input("inputs: float")
    .Input("weights: float")
    .Input("biases: float")
    .TF_SAMPLED_LOSS_INTERFACE
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle weights, biases;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &weights));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &biases));
      return ForwardShape(c, &weights);
    })
    .Doc(R"doc(
Per-example sampled softmax cross-entropy, fused. For example b the logits of
its true classes labels[b] and candidates sampled[b] are
inputs[b] . weights[id] + biases[id] minus the log expected count of the
column (sampled_log_count = log(S q); true_log_count only when
subtract_log_q_true); the loss is the cross-entropy against target 1/T on each
true column. Sampled ids equal to a true id of their row are dropped when
remove_accidental_hits. biases: [num_classes], or [0] for none.

loss: [B]. logit_grads: [B, T + S] d loss_b / d logit (true columns first).
input_grads: [B, d] d loss_b / d inputs[b]. The gradient op turns the last two
into the gradients of weights and biases over the rows the batch read.
)doc");

REGISTER_OP("TfSampled>ResourceSampledSoftmaxLoss")
    .Input("inputs: float")
    .Input("weights: resource")
    .Input("biases: resource")
    .TF_SAMPLED_LOSS_INTERFACE
    .Attr("has_biases: bool = true")
    .SetShapeFn([](InferenceContext* c) { return ForwardShape(c, nullptr); })
    .Doc(R"doc(
SampledSoftmaxLoss with the class table and biases read in place from float32
variables (no copy of the table). With has_biases = false the biases input is
ignored (pass any variable handle, e.g. the weights').
)doc");

#undef TF_SAMPLED_LOSS_INTERFACE

REGISTER_OP("TfSampled>SampledSoftmaxLossGrad")
    .Input("loss_grad: float")
    .Input("logit_grads: float")
    .Input("inputs: float")
    .Input("labels: int64")
    .Input("sampled: int64")
    .Output("row_ids: int64")
    .Output("row_grads: float")
    .Output("bias_grads: float")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle loss_grad, logit_grads, inputs, labels, sampled;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 1, &loss_grad));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &logit_grads));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &inputs));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 2, &labels));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 2, &sampled));
      DimensionHandle rows = c->UnknownDim();
      c->set_output(0, c->Vector(rows));
      c->set_output(1, c->Matrix(rows, c->Dim(inputs, 1)));
      c->set_output(2, c->Vector(rows));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Gradient of the fused sampled softmax loss w.r.t. the class table: for each
distinct id u among labels and sampled (ascending), row_grads[u] = sum over the
columns (b, j) that read row u of loss_grad[b] * logit_grads[b, j] * inputs[b],
and bias_grads[u] the same sum without inputs[b].
)doc");

}  // namespace tf_sampled
