// Op registrations for the sparse optimizer steps: one multi-threaded update
// of the rows an IndexedSlices gradient touches, in place in the variables.
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tf_sampled {

using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

namespace {

// Inputs from `first`: indices [n], grads [n, ...], then `num_scalars`
// hyperparameters.
absl::Status SparseApplyShape(InferenceContext* c, int first, int num_scalars) {
  ShapeHandle indices, grads, scalar;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(first), 1, &indices));
  TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(first + 1), 1, &grads));
  auto rows = c->Dim(grads, 0);
  TF_RETURN_IF_ERROR(c->Merge(rows, c->Dim(indices, 0), &rows));
  for (int i = 0; i < num_scalars; ++i) {
    TF_RETURN_IF_ERROR(c->WithRank(c->input(first + 2 + i), 0, &scalar));
  }
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("TfSampled>SparseApplySgd")
    .Input("var: resource")
    .Input("indices: Tindices")
    .Input("grads: float")
    .Input("lr: float")
    .Attr("Tindices: {int32, int64}")
    .SetShapeFn([](InferenceContext* c) { return SparseApplyShape(c, 1, 1); })
    .Doc(R"doc(
var[i] -= lr * g_i for each distinct i in indices, g_i the sum of the rows of
grads whose index is i. var: float32 variable [num_rows, ...]; grads
[n, ...var.shape[1:]]. Rows are split over the CPU thread pool.
)doc");

REGISTER_OP("TfSampled>SparseApplyLazyAdam")
    .Input("var: resource")
    .Input("m: resource")
    .Input("v: resource")
    .Input("indices: Tindices")
    .Input("grads: float")
    .Input("lr: float")
    .Input("beta1: float")
    .Input("beta2: float")
    .Input("epsilon: float")
    .Attr("Tindices: {int32, int64}")
    .SetShapeFn([](InferenceContext* c) { return SparseApplyShape(c, 3, 4); })
    .Doc(R"doc(
Adam on the touched rows only: for each distinct i in indices with summed
gradient g, m[i] = beta1 m[i] + (1 - beta1) g, v[i] = beta2 v[i] +
(1 - beta2) g^2, var[i] -= lr m[i] / (sqrt(v[i]) + epsilon), where lr already
holds Adam's bias correction. m and v have var's shape.
)doc");

REGISTER_OP("TfSampled>SparseApplyAdagrad")
    .Input("var: resource")
    .Input("accumulator: resource")
    .Input("indices: Tindices")
    .Input("grads: float")
    .Input("lr: float")
    .Input("epsilon: float")
    .Attr("Tindices: {int32, int64}")
    .SetShapeFn([](InferenceContext* c) { return SparseApplyShape(c, 2, 2); })
    .Doc(R"doc(
Adagrad on the touched rows: for each distinct i in indices with summed
gradient g, accumulator[i] += g^2, var[i] -= lr g / sqrt(accumulator[i] +
epsilon). accumulator has var's shape.
)doc");

}  // namespace tf_sampled
