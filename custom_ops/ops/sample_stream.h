// Shape check of the `counter` input every sampling op takes (see
// kernels/candidate_sampling.h, SampleStream).
#ifndef TF_SAMPLED_OPS_SAMPLE_STREAM_H_
#define TF_SAMPLED_OPS_SAMPLE_STREAM_H_

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

}  // namespace tf_sampled

#endif  // TF_SAMPLED_OPS_SAMPLE_STREAM_H_
