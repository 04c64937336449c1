// The parameter-server trainer's exactly-once guard: check and record of a
// step id as one critical section on the ring variable's mutex.
#include "custom_ops/kernels/common.h"

namespace tf_sampled {

class ClaimStepOp : public ::tensorflow::OpKernel {
 public:
  explicit ClaimStepOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& step_t = ctx->input(1);
    OP_REQUIRES_OK(ctx, CheckRank(step_t, 0, "step"));
    const int64_t step = step_t.scalar<int64_t>()();
    OP_REQUIRES(ctx, step >= 0,
                errors::InvalidArgument("step must be >= 0, got ", step));
    LockedVariables variables;
    OP_REQUIRES_OK(ctx, variables.Lock(ctx, {{0, "ring"}}, LockedVariables::Access::kWrite));
    OP_REQUIRES_OK(ctx, CheckDtype(variables.tensor(0), ::tensorflow::DT_INT64, "ring"));
    OP_REQUIRES_OK(ctx, CheckRank(variables.tensor(0), 1, "ring"));
    const int64_t window = variables.tensor(0).dim_size(0);
    OP_REQUIRES(ctx, window >= 1,
                errors::InvalidArgument("ring must hold at least one slot, got shape ",
                                        variables.tensor(0).shape().DebugString()));
    Tensor* ring = nullptr;
    OP_REQUIRES_OK(ctx, variables.MutableTensor(ctx, 0, &ring));
    int64_t& slot = ring->flat<int64_t>()(step % window);
    const bool claimed = slot != step;
    if (claimed) slot = step;
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ::tensorflow::TensorShape({}), &out));
    out->scalar<bool>()() = claimed;
  }
};

REGISTER_KERNEL_BUILDER(Name("TfSampled>ClaimStep").Device(::tensorflow::DEVICE_CPU),
                        ClaimStepOp);

}  // namespace tf_sampled
