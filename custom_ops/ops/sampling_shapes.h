// Shape functions shared by the sampling ops: the `counter` input every one
// takes (see kernels/candidate_sampling.h, SampleStream), the outputs of the
// per-example samplers and of the batch-shared candidate samplers
// (TensorFlow's triple).
#ifndef TF_SAMPLED_OPS_SAMPLING_SHAPES_H_
#define TF_SAMPLED_OPS_SAMPLING_SHAPES_H_

#include "tensorflow/core/framework/shape_inference.h"

namespace tf_sampled {

// Input `index` (the counter) must be a scalar; unlike WithRank's message,
// the error names the input.
inline absl::Status CounterShape(::tensorflow::shape_inference::InferenceContext* c,
                                 int index) {
  if (c->RankKnown(c->input(index)) && c->Rank(c->input(index)) != 0) {
    return ::tensorflow::errors::InvalidArgument(
        "counter must be a scalar, got shape ", c->DebugString(c->input(index)));
  }
  return absl::OkStatus();
}

// A candidate sampler's checks and outputs, given the batch dimension of its
// queries: true_classes [batch, num_true] (input true_index), the counter
// (input counter_index), then sampled_candidates [num_sampled],
// true_expected_count [batch, num_true], sampled_expected_count
// [num_sampled]. Attribute values are the kernel's to reject; a bad one only
// leaves its dimension unknown here. The true_classes shape is returned.
inline absl::Status CandidateSamplerShapes(
    ::tensorflow::shape_inference::InferenceContext* c,
    ::tensorflow::shape_inference::DimensionHandle batch, int true_index,
    int counter_index, ::tensorflow::shape_inference::ShapeHandle* true_classes) {
  int64_t num_true, num_sampled;
  TF_RETURN_IF_ERROR(c->GetAttr("num_true", &num_true));
  TF_RETURN_IF_ERROR(c->GetAttr("num_sampled", &num_sampled));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(true_index), 2, true_classes));
  TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(*true_classes, 0), &batch));
  TF_RETURN_IF_ERROR(CounterShape(c, counter_index));
  const auto s = num_sampled >= 0 ? c->MakeDim(num_sampled) : c->UnknownDim();
  const auto t = num_true >= 0 ? c->MakeDim(num_true) : c->UnknownDim();
  c->set_output(0, c->Vector(s));
  c->set_output(1, c->Matrix(batch, t));
  c->set_output(2, c->Vector(s));
  return absl::OkStatus();
}

// A log-probability op's check and output, given the batch dimension of its
// queries: classes [batch, n] (input classes_index), then log_q [batch, n].
inline absl::Status LogProbShape(::tensorflow::shape_inference::InferenceContext* c,
                                 ::tensorflow::shape_inference::DimensionHandle batch,
                                 int classes_index) {
  ::tensorflow::shape_inference::ShapeHandle classes;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(classes_index), 2, &classes));
  TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(classes, 0), &batch));
  c->set_output(0, c->Matrix(batch, c->Dim(classes, 1)));
  return absl::OkStatus();
}

// A per-example sampler's checks and outputs, given the batch dimension of
// its queries: true_classes [batch, T] (input true_index), the counter (input
// counter_index), then ids [batch, num_sampled], log_q [batch, num_sampled],
// true_log_q [batch, T]. A bad num_sampled (the kernel's to reject) leaves
// its dimension unknown.
inline absl::Status PerExampleSampleShapes(
    ::tensorflow::shape_inference::InferenceContext* c,
    ::tensorflow::shape_inference::DimensionHandle batch, int true_index,
    int counter_index) {
  ::tensorflow::shape_inference::ShapeHandle true_classes;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(true_index), 2, &true_classes));
  TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(true_classes, 0), &batch));
  TF_RETURN_IF_ERROR(CounterShape(c, counter_index));
  int64_t num_sampled;
  TF_RETURN_IF_ERROR(c->GetAttr("num_sampled", &num_sampled));
  const auto s = num_sampled >= 0 ? c->MakeDim(num_sampled) : c->UnknownDim();
  c->set_output(0, c->Matrix(batch, s));
  c->set_output(1, c->Matrix(batch, s));
  c->set_output(2, c->Matrix(batch, c->Dim(true_classes, 1)));
  return absl::OkStatus();
}

}  // namespace tf_sampled

#endif  // TF_SAMPLED_OPS_SAMPLING_SHAPES_H_
