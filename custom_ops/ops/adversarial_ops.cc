// Op registrations for the adversarial auxiliary-model sampler (Bamler &
// Mandt 2020): fitting the tree, and sampling / log p_n from it. Inputs are
// the PCA-projected inputs [batch, k]; the tree is params [C, k + 1],
// class_of_leaf and leaf_of_class [C] (see core/adversarial_tree.h). The kernels
// check everything again with messages naming the argument.
#include "custom_ops/ops/sampling_shapes.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tf_sampled {

using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

REGISTER_OP("TfSampled>AdversarialTreeFit")
    .Input("features: float")
    .Input("labels: int64")
    .Output("params: float")
    .Output("leaf_of_class: int64")
    .Output("class_of_leaf: int64")
    .Attr("num_classes: int")
    .Attr("num_iterations: int = 2")
    .Attr("newton_steps: int = 2")
    .Attr("l2: float = 0.1")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle features, labels;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &features));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &labels));
      int64_t num_classes;
      TF_RETURN_IF_ERROR(c->GetAttr("num_classes", &num_classes));
      DimensionHandle rows = num_classes >= 2 ? c->MakeDim(num_classes)
                                              : c->UnknownDim();
      DimensionHandle cols = c->UnknownDim();
      if (c->ValueKnown(c->Dim(features, 1))) {
        cols = c->MakeDim(c->Value(c->Dim(features, 1)) + 1);
      }
      c->set_output(0, c->Matrix(rows, cols));
      c->set_output(1, c->Vector(rows));
      c->set_output(2, c->Vector(rows));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Fits the auxiliary tree greedily top-down to projected features [N, k] and
labels [N] in [0, num_classes): per node, Newton steps of a ridge logistic
regression (penalty l2 (|w|^2 + b^2)) alternated num_iterations times with a
balanced re-assignment of the classes to the children. Deterministic.
params [num_classes, k + 1] (row v = [w_v, b_v] of internal node v; row 0
unused), leaf_of_class and class_of_leaf [num_classes] (inverse permutations).
)doc");

// Inputs 0..3 of every query op: params, class_of_leaf, leaf_of_class,
// inputs [batch, k]. Returns the batch dimension.
static absl::Status TreeQueryShape(InferenceContext* c, DimensionHandle* batch) {
  ShapeHandle params, class_of_leaf, leaf_of_class, inputs;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &params));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &class_of_leaf));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &leaf_of_class));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 2, &inputs));
  *batch = c->Dim(inputs, 0);
  return absl::OkStatus();
}

REGISTER_OP("TfSampled>AdversarialTreeSample")
    .Input("params: float")
    .Input("class_of_leaf: int64")
    .Input("leaf_of_class: int64")
    .Input("inputs: float")
    .Input("true_classes: int64")
    .Input("counter: int64")
    .Output("ids: int64")
    .Output("log_q: float")
    .Output("true_log_q: float")
    .Attr("num_sampled: int >= 1")
    .Attr("seed: int = 0")
    .Attr("seed2: int = 0")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      DimensionHandle batch;
      TF_RETURN_IF_ERROR(TreeQueryShape(c, &batch));
      return PerExampleSampleShapes(c, batch, 4, 5);
    })
    .Doc(R"doc(
Per-example negatives: num_sampled iid classes per row from p_n(.|inputs[b])
(one descent per row, the draws split down the tree), their exact log p_n,
and log p_n of the true classes.
The draws are a function of (seed, seed2, counter) alone: counter (a scalar
>= 0, the caller's stream position, e.g. a checkpointed call count) selects
the call's stream, so the same seeds and counter give the same samples in any
process.
)doc");

REGISTER_OP("TfSampled>AdversarialTreeLogProb")
    .Input("params: float")
    .Input("class_of_leaf: int64")
    .Input("leaf_of_class: int64")
    .Input("inputs: float")
    .Input("classes: int64")
    .Output("log_q: float")
    .SetShapeFn([](InferenceContext* c) {
      DimensionHandle batch;
      TF_RETURN_IF_ERROR(TreeQueryShape(c, &batch));
      return LogProbShape(c, batch, 4);
    })
    .Doc(R"doc(
log p_n(classes[b, j] | inputs[b]) under the auxiliary tree.
)doc");

REGISTER_OP("TfSampled>AdversarialTreeCandidateSampler")
    .Input("params: float")
    .Input("class_of_leaf: int64")
    .Input("leaf_of_class: int64")
    .Input("inputs: float")
    .Input("true_classes: int64")
    .Input("counter: int64")
    .Output("sampled_candidates: int64")
    .Output("true_expected_count: float")
    .Output("sampled_expected_count: float")
    .Attr("num_true: int >= 1")
    .Attr("num_sampled: int >= 1")
    .Attr("unique: bool")
    .Attr("range_max: int >= 1")
    .Attr("seed: int = 0")
    .Attr("seed2: int = 0")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      DimensionHandle batch;
      TF_RETURN_IF_ERROR(TreeQueryShape(c, &batch));
      ShapeHandle true_classes;
      return CandidateSamplerShapes(c, batch, 4, 5, &true_classes);
    })
    .Doc(R"doc(
Batch-shared candidates with TensorFlow's candidate-sampler contract, drawn
from the batch mixture (1/B) sum_b p_n(.|inputs[b]) (a row picked uniformly,
then its tree descended), with exact expected counts for that mixture
(num_sampled * q, or 1 - (1 - q)^num_tries with unique=True). An empty batch
samples from p_n(.|0), the tree at the mean projected input.
The draws are a function of (seed, seed2, counter) alone: counter (a scalar
>= 0, the caller's stream position, e.g. a checkpointed call count) selects
the call's stream, so the same seeds and counter give the same samples in any
process.
)doc");

}  // namespace tf_sampled
