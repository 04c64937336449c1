// Op registration for the parameter-server trainer's exactly-once guard.
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tf_sampled {

using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

REGISTER_OP("TfSampled>ClaimStep")
    .Input("ring: resource")
    .Input("step: int64")
    .Output("claimed: bool")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle step;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 0, &step));
      c->set_output(0, c->Scalar());
      return absl::OkStatus();
    })
    .Doc(R"doc(
Claims `step` for an update group, atomically: under the exclusive lock of
`ring` (an int64 variable [window] of the step ids applied, slot step % window,
-1 when empty), returns false when ring[step % window] already holds step,
else writes step there and returns true. Two runs of one step (a run the
coordinator retries while the first still updates) cannot both claim it.
step must be >= 0.
)doc");

}  // namespace tf_sampled
