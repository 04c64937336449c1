// Op registrations for the LSH sampler (Daghaghi et al. 2021, with an exact
// proposal; see core/lsh_proposal.h). The table state (buckets, counts,
// codes) and the embeddings are variables read in place through their
// handles, so their shapes are checked by the kernels.
#include "custom_ops/ops/sampling_shapes.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tf_sampled {

using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// Attribute ranges are checked again by the kernels, with messages that name
// the argument (a graph can carry any value).
#define TF_SAMPLED_LSH_ATTRS                      \
  Attr("family: {'simhash', 'dwta'}")             \
      .Attr("num_tables: int")                    \
      .Attr("num_hashes: int")                    \
      .Attr("bin_size: int = 8")                  \
      .Attr("seed: int = 0")                      \
      .Attr("seed2: int = 0")

REGISTER_OP("TfSampled>LshBuild")
    .Input("embeddings: resource")
    .Input("hash_params: float")
    .Output("buckets: int32")
    .Output("counts: int32")
    .Output("codes: int32")
    .Attr("bucket_size: int")
    .TF_SAMPLED_LSH_ATTRS
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle params;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &params));
      c->set_output(0, c->Matrix(c->UnknownDim(), c->UnknownDim()));
      c->set_output(1, c->Vector(c->UnknownDim()));
      c->set_output(2, c->Matrix(c->UnknownDim(), c->UnknownDim()));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Hashes every row of embeddings [C, d] into num_tables tables of
2^code_bits buckets of bucket_size class ids: buckets [L * 2^code_bits,
bucket_size] (members ascending, -1 padding), counts [L * 2^code_bits], codes
[C, L]. An overflowing bucket keeps a uniformly random subset, chosen by
seed and seed2 alone (the same seeds and rows build the same tables).
)doc");

REGISTER_OP("TfSampled>LshUpdate")
    .Input("buckets: resource")
    .Input("counts: resource")
    .Input("codes: resource")
    .Input("embeddings: resource")
    .Input("hash_params: float")
    .Input("ids: int64")
    .Output("unique_ids: int64")
    .Output("new_codes: int32")
    .Output("bucket_ids: int64")
    .Output("bucket_rows: int32")
    .Output("bucket_counts: int32")
    .TF_SAMPLED_LSH_ATTRS
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle params, ids;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 2, &params));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(5), 1, &ids));
      c->set_output(0, c->Vector(c->UnknownDim()));
      c->set_output(1, c->Matrix(c->UnknownDim(), c->UnknownDim()));
      c->set_output(2, c->Vector(c->UnknownDim()));
      c->set_output(3, c->Matrix(c->UnknownDim(), c->UnknownDim()));
      c->set_output(4, c->Vector(c->UnknownDim()));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Re-inserts the rows `ids` (duplicates allowed) at their current codes. Returns
the changes to scatter into the state: codes[unique_ids] = new_codes,
buckets[bucket_ids] = bucket_rows, counts[bucket_ids] = bucket_counts. A full
bucket evicts a random member (chosen by seed and seed2 alone).
)doc");

// Checks the query inputs shared by the sampling ops and returns the batch size.
static absl::Status LshQueryShape(InferenceContext* c, DimensionHandle* batch) {
  ShapeHandle params, queries;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 2, &params));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 2, &queries));
  *batch = c->Dim(queries, 0);
  return absl::OkStatus();
}

REGISTER_OP("TfSampled>LshSample")
    .Input("buckets: resource")
    .Input("counts: resource")
    .Input("codes: resource")
    .Input("hash_params: float")
    .Input("queries: float")
    .Input("true_classes: int64")
    .Input("counter: int64")
    .Output("ids: int64")
    .Output("log_q: float")
    .Output("true_log_q: float")
    .Attr("num_sampled: int >= 1")
    .Attr("epsilon: float = 0.05")
    .TF_SAMPLED_LSH_ATTRS
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      DimensionHandle batch;
      TF_RETURN_IF_ERROR(LshQueryShape(c, &batch));
      return PerExampleSampleShapes(c, batch, 5, 6);
    })
    .Doc(R"doc(
Per-example negatives: num_sampled iid classes per query row from the LSH
proposal of queries[b] (the input h, or the true class's embedding), with
exact log q, and log q of the true classes.
The draws are a function of (seed, seed2, counter) alone: counter (a scalar
>= 0, the caller's stream position, e.g. a checkpointed call count) selects
the call's stream, so the same seeds and counter give the same samples in any
process.
)doc");

REGISTER_OP("TfSampled>LshLogProb")
    .Input("buckets: resource")
    .Input("counts: resource")
    .Input("codes: resource")
    .Input("hash_params: float")
    .Input("queries: float")
    .Input("classes: int64")
    .Output("log_q: float")
    .Attr("epsilon: float = 0.05")
    .TF_SAMPLED_LSH_ATTRS
    .SetShapeFn([](InferenceContext* c) {
      DimensionHandle batch;
      TF_RETURN_IF_ERROR(LshQueryShape(c, &batch));
      return LogProbShape(c, batch, 5);
    })
    .Doc(R"doc(
log q(classes[b, k] | queries[b]) under the LSH proposal.
)doc");

REGISTER_OP("TfSampled>LshCandidateSampler")
    .Input("buckets: resource")
    .Input("counts: resource")
    .Input("codes: resource")
    .Input("hash_params: float")
    .Input("queries: float")
    .Input("true_classes: int64")
    .Input("counter: int64")
    .Output("sampled_candidates: int64")
    .Output("true_expected_count: float")
    .Output("sampled_expected_count: float")
    .Attr("num_true: int >= 1")
    .Attr("num_sampled: int >= 1")
    .Attr("unique: bool")
    .Attr("range_max: int >= 1")
    .Attr("epsilon: float = 0.05")
    .TF_SAMPLED_LSH_ATTRS
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      DimensionHandle batch;
      TF_RETURN_IF_ERROR(LshQueryShape(c, &batch));
      ShapeHandle true_classes;
      return CandidateSamplerShapes(c, batch, 5, 6, &true_classes);
    })
    .Doc(R"doc(
Batch-shared candidates with TensorFlow's candidate-sampler contract, drawn
from the mixture (1/B) sum_b q(.|queries[b]) of the batch's LSH proposals;
expected counts num_sampled * q_bar, or 1 - (1 - q_bar)^num_tries with unique.
The draws are a function of (seed, seed2, counter) alone: counter (a scalar
>= 0, the caller's stream position, e.g. a checkpointed call count) selects
the call's stream, so the same seeds and counter give the same samples in any
process.
)doc");

#undef TF_SAMPLED_LSH_ATTRS

}  // namespace tf_sampled
