// Op registrations for the kernel sampling tree. Shapes are checked here as
// far as they are known at graph time; the kernels check everything again.
#include "custom_ops/ops/sampling_shapes.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tf_sampled {

using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

#define TF_SAMPLED_FEATURE_ATTRS                                         \
  Attr("feature_map: {'quadratic', 'random_fourier', 'positive_random', " \
           "'gaussian_moments'}")                                         \
      .Attr("alpha: float = 100.0")                                      \
      .Attr("temperature: float = 1.0")                                  \
      .Attr("leaf_size: int >= 1")

REGISTER_OP("TfSampled>KernelTreeBuild")
    .Input("rows: float")
    .Input("omega: float")
    .Output("nodes: double")
    .Attr("has_bias: bool = false")
    .TF_SAMPLED_FEATURE_ATTRS
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle rows, omega;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &rows));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &omega));
      c->set_output(0, c->Matrix(c->UnknownDim(), c->UnknownDim()));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Builds the node sums [2N, F] of a kernel sampling tree from augmented class
rows [C, dim] (N = ceil(C / leaf_size) leaves; row 0 is unused). has_bias:
the last column of rows is the class bias.
)doc");

REGISTER_OP("TfSampled>KernelTreeUpdate")
    .Input("ids: int64")
    .Input("old_rows: float")
    .Input("new_rows: float")
    .Input("omega: float")
    .Input("num_classes: int64")
    .Output("node_ids: int64")
    .Output("node_deltas: double")
    .Attr("has_bias: bool = false")
    .TF_SAMPLED_FEATURE_ATTRS
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle ids, old_rows, new_rows, omega, num_classes;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 1, &ids));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &old_rows));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &new_rows));
      TF_RETURN_IF_ERROR(c->Merge(old_rows, new_rows, &new_rows));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 2, &omega));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 0, &num_classes));
      c->set_output(0, c->Vector(c->UnknownDim()));
      c->set_output(1, c->Matrix(c->UnknownDim(), c->UnknownDim()));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Node-sum changes for replacing the given class rows: phi(new) - phi(old)
summed onto every node of each row's path. Add node_deltas to the node rows
node_ids (e.g. with a scatter-add) to update the tree.
)doc");

REGISTER_OP("TfSampled>KernelTreeRefreshRows")
    .Input("nodes: resource")
    .Input("rows: resource")
    .Input("embeddings: resource")
    .Input("biases: resource")
    .Input("omega: float")
    .Input("ids: int64")
    .TF_SAMPLED_FEATURE_ATTRS
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle omega;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 2, &omega));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Brings the tree up to date for the classes `ids` (any shape, duplicates
allowed), in place: reads their current rows from `embeddings` (and
`biases`, or a [0] variable for none), replaces phi(old) by phi(new) in their
leaves' sums, where old is the snapshot `rows` [num_classes, dim (+1)], sums
the internal nodes above them again and copies the new rows into `rows`. All
variables are used in place under their locks; on a bad input nothing changes.
)doc");

// Checks the inputs shared by the sampling ops and returns the batch size.
// nodes, embeddings and biases are variable handles (read in place), so
// their shapes are checked by the kernels.
static absl::Status TreeInputsShape(InferenceContext* c, DimensionHandle* batch) {
  ShapeHandle omega, inputs;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 2, &omega));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 2, &inputs));
  *batch = c->Dim(inputs, 0);
  return absl::OkStatus();
}

REGISTER_OP("TfSampled>KernelTreeSample")
    .Input("nodes: resource")
    .Input("embeddings: resource")
    .Input("biases: resource")
    .Input("omega: float")
    .Input("inputs: float")
    .Input("true_classes: int64")
    .Input("counter: int64")
    .Output("ids: int64")
    .Output("log_q: float")
    .Output("true_log_q: float")
    .Attr("num_sampled: int >= 1")
    .Attr("seed: int = 0")
    .Attr("seed2: int = 0")
    .Attr("prior_weight: float = 0.0")
    .TF_SAMPLED_FEATURE_ATTRS
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      DimensionHandle batch;
      TF_RETURN_IF_ERROR(TreeInputsShape(c, &batch));
      return PerExampleSampleShapes(c, batch, 5, 6);
    })
    .Doc(R"doc(
Per-example negatives: num_sampled iid classes per input row from the kernel
tree's proposal q(.|inputs[b]), with exact log q, and log q of the true classes.
prior_weight: a in [0, 1]; the proposal is a p_lu + (1 - a) q_tree(.|inputs[b]),
p_lu TensorFlow's log-uniform over the tree's classes (0, the default: the
tree alone; CPU only for a > 0).
The draws are a function of (seed, seed2, counter) alone: counter (a scalar
>= 0, the caller's stream position, e.g. a checkpointed call count) selects
the call's stream, so the same seeds and counter give the same samples in any
process.
)doc");

REGISTER_OP("TfSampled>KernelTreeLogProb")
    .Input("nodes: resource")
    .Input("embeddings: resource")
    .Input("biases: resource")
    .Input("omega: float")
    .Input("inputs: float")
    .Input("classes: int64")
    .Output("log_q: float")
    .Attr("prior_weight: float = 0.0")
    .TF_SAMPLED_FEATURE_ATTRS
    .SetShapeFn([](InferenceContext* c) {
      DimensionHandle batch;
      TF_RETURN_IF_ERROR(TreeInputsShape(c, &batch));
      return LogProbShape(c, batch, 5);
    })
    .Doc(R"doc(
log q(classes[b, k] | inputs[b]) under the kernel tree's proposal, with the
log-uniform share prior_weight as in KernelTreeSample.
)doc");

REGISTER_OP("TfSampled>KernelTreeCandidateSampler")
    .Input("nodes: resource")
    .Input("embeddings: resource")
    .Input("biases: resource")
    .Input("omega: float")
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
    .Attr("prior_weight: float = 0.0")
    .TF_SAMPLED_FEATURE_ATTRS
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      DimensionHandle batch;
      TF_RETURN_IF_ERROR(TreeInputsShape(c, &batch));
      ShapeHandle true_classes;
      TF_RETURN_IF_ERROR(CandidateSamplerShapes(c, batch, 5, 6, &true_classes));
      int64_t num_true;
      TF_RETURN_IF_ERROR(c->GetAttr("num_true", &num_true));
      DimensionHandle unused;
      return c->WithValue(c->Dim(true_classes, 1), num_true, &unused);
    })
    .Doc(R"doc(
Batch-shared candidates with TensorFlow's candidate-sampler contract: one set
of num_sampled classes for the whole batch, drawn from the batch's mixture
proposal, and expected counts as TensorFlow defines them (num_sampled * q, or
1 - (1 - q)^num_tries with unique=True).
prior_weight: a in [0, 1]; the proposal is q = a p_lu + (1 - a) q_tree, with
p_lu(i) = log((i + 2) / (i + 1)) / log(range_max + 1) TensorFlow's
log-uniform (class ids by decreasing frequency) and q_tree the tree's batch
mixture; every log q and expected count is that of q. 0 (the default) is the
tree alone, 1 exactly log-uniform.
The draws are a function of (seed, seed2, counter) alone: counter (a scalar
>= 0, the caller's stream position, e.g. a checkpointed call count) selects
the call's stream, so the same seeds and counter give the same samples in any
process.
)doc");

#undef TF_SAMPLED_FEATURE_ATTRS

}  // namespace tf_sampled
