// GPU kernels of the kernel-tree ops (built only with CUDA: setup.py with
// TF_SAMPLED_CUDA=1, Bazel with --config=cuda). Thin wrappers: shapes and
// attributes are checked here on the host exactly as the CPU kernels check
// them; values in device memory (ids, NaN/Inf in inputs, rows and omega) are
// checked by the CUDA core on the device and come back as the same
// InvalidArgument. The core runs on the op's stream and synchronises it once
// per call (to read its error record, and for the update op the output size).
//
// Not on the GPU: TfSampled>KernelTreeCandidateSampler (its unique-draw
// loop and batch mixture are host work; place it on the CPU).
#if GOOGLE_CUDA

#include "custom_ops/cuda/kernel_tree_gpu.h"
#include "custom_ops/kernels/candidate_sampling.h"
#include "custom_ops/kernels/kernel_tree_common.h"
#include "custom_ops/kernels/sampler_ops.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "xla/stream_executor/stream.h"

namespace tf_sampled {

using ::tensorflow::DEVICE_GPU;
using ::tensorflow::OpKernel;
using ::tensorflow::TensorShape;

namespace {

gpu::Stream OpStream(OpKernelContext* ctx) {
  return static_cast<gpu::Stream>(
      ctx->op_device_context()->stream()->platform_specific_handle().stream);
}

absl::Status ToStatus(const gpu::GpuStatus& status) {
  switch (status.code) {
    case gpu::GpuStatus::kOk:
      return absl::OkStatus();
    case gpu::GpuStatus::kInvalidArgument:
      return errors::InvalidArgument(status.message);
    default:
      return errors::Internal(status.message);
  }
}

// A temporary device buffer of `bytes` for the core.
absl::Status AllocateWorkspace(OpKernelContext* ctx, size_t bytes, Tensor* buffer,
                               gpu::Workspace* workspace) {
  TF_RETURN_IF_ERROR(ctx->allocate_temp(
      ::tensorflow::DT_INT8, TensorShape({static_cast<int64_t>(bytes)}), buffer));
  workspace->data = buffer->flat<int8_t>().data();
  workspace->bytes = bytes;
  return absl::OkStatus();
}

gpu::TreeView ViewOf(const TreeInputs& in) {
  gpu::TreeView view;
  view.spec = in.spec;
  view.shape = in.shape;
  view.nodes = in.nodes;
  view.table = in.table;
  return view;
}

}  // namespace

class KernelTreeBuildGpuOp : public OpKernel {
 public:
  explicit KernelTreeBuildGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.Parse(ctx));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("has_bias", &has_bias_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& rows = ctx->input(0);
    OP_REQUIRES_OK(ctx, CheckRank(rows, 2, "rows"));
    OP_REQUIRES(ctx, rows.dim_size(0) >= 1 && rows.dim_size(1) >= 1,
                errors::InvalidArgument(
                    "rows must be a non-empty [num_classes, dim] matrix, got "
                    "shape ", rows.shape().DebugString()));
    FeatureMapSpec spec;
    OP_REQUIRES_OK(ctx, MakeSpec(attrs_, ctx->input(1), rows.dim_size(1), has_bias_,
                                 &spec, /*values_on_host=*/false));
    TreeShape shape;
    shape.num_classes = rows.dim_size(0);
    shape.leaf_size = attrs_.leaf_size;
    OP_REQUIRES_OK(ctx, CheckTree(spec, shape));
    Tensor* nodes = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            0, TensorShape({shape.NumNodeRows(), spec.NumFeatures()}),
                            &nodes));
    Tensor buffer;
    gpu::Workspace workspace;
    OP_REQUIRES_OK(ctx, AllocateWorkspace(ctx, gpu::BuildWorkspaceBytes(spec), &buffer,
                                          &workspace));
    OP_REQUIRES_OK(ctx, ToStatus(gpu::BuildNodeSums(spec, shape, rows.flat<float>().data(),
                                                    nodes->flat<double>().data(),
                                                    workspace, OpStream(ctx))));
  }

 private:
  FeatureAttrs attrs_;
  bool has_bias_;
};

class KernelTreeUpdateGpuOp : public OpKernel {
 public:
  explicit KernelTreeUpdateGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.Parse(ctx));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("has_bias", &has_bias_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& ids = ctx->input(0);
    const Tensor& old_rows = ctx->input(1);
    const Tensor& new_rows = ctx->input(2);
    const Tensor& num_classes_t = ctx->input(4);  // host memory
    OP_REQUIRES_OK(ctx, CheckRank(ids, 1, "ids"));
    OP_REQUIRES_OK(ctx, CheckRank(old_rows, 2, "old_rows"));
    OP_REQUIRES_OK(ctx, CheckRank(new_rows, 2, "new_rows"));
    OP_REQUIRES_OK(ctx, CheckRank(num_classes_t, 0, "num_classes"));
    const int64_t n = ids.dim_size(0);
    OP_REQUIRES(ctx,
                old_rows.dim_size(0) == n && new_rows.dim_size(0) == n &&
                    old_rows.dim_size(1) == new_rows.dim_size(1),
                errors::InvalidArgument(
                    "old_rows and new_rows must both have shape [", n, ", dim] for ", n,
                    " ids, got ", old_rows.shape().DebugString(), " and ",
                    new_rows.shape().DebugString()));
    FeatureMapSpec spec;
    OP_REQUIRES_OK(ctx, MakeSpec(attrs_, ctx->input(3), new_rows.dim_size(1), has_bias_,
                                 &spec, /*values_on_host=*/false));
    TreeShape shape;
    shape.num_classes = num_classes_t.scalar<int64_t>()();
    shape.leaf_size = attrs_.leaf_size;
    OP_REQUIRES_OK(ctx, CheckTree(spec, shape));
    Tensor buffer;
    gpu::Workspace workspace;
    OP_REQUIRES_OK(ctx, AllocateWorkspace(ctx, gpu::UpdateWorkspaceBytes(spec, shape, n),
                                          &buffer, &workspace));
    const gpu::Stream stream = OpStream(ctx);
    int64_t num_nodes = 0;
    OP_REQUIRES_OK(ctx, ToStatus(gpu::PrepareUpdateDeltas(
                            spec, shape, ids.flat<int64_t>().data(),
                            old_rows.flat<float>().data(), new_rows.flat<float>().data(), n,
                            workspace, stream, &num_nodes)));
    Tensor *ids_out = nullptr, *deltas_out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({num_nodes}), &ids_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            1, TensorShape({num_nodes, spec.NumFeatures()}), &deltas_out));
    OP_REQUIRES_OK(ctx, ToStatus(gpu::FinishUpdateDeltas(
                            spec, shape, n, num_nodes, workspace, stream,
                            ids_out->flat<int64_t>().data(),
                            deltas_out->flat<double>().data())));
  }

 private:
  FeatureAttrs attrs_;
  bool has_bias_;
};

// The kernel-tree family of the sampling-op skeleton (sampler_ops.h) on the
// GPU: the same inputs and attributes as the CPU family; values in device
// memory (class ids, NaN/Inf) are checked by the CUDA core.
class KernelTreeGpuFamily {
 public:
  using Inputs = TreeInputs;
  static constexpr const char* kQueries = "inputs";
  static constexpr bool kIdsOnHost = false;

  absl::Status Init(OpKernelConstruction* ctx, SamplerOp) {
    TF_RETURN_IF_ERROR(attrs_.Parse(ctx));
    float prior_weight = 0.0f;
    TF_RETURN_IF_ERROR(ParsePriorWeight(ctx, &prior_weight));
    if (prior_weight > 0.0f) {
      return errors::Unimplemented(
          "prior_weight=", prior_weight, " (a log-uniform share of the proposal) has no GPU "
          "kernel: place the sampling op on the CPU, or use prior_weight=0");
    }
    return absl::OkStatus();
  }
  absl::Status ParseInputs(OpKernelContext* ctx, Inputs* in) const {
    return in->Parse(ctx, attrs_, /*values_on_host=*/false);
  }
  static int64_t Batch(const Inputs& in) { return in.batch; }
  static int64_t NumClasses(const Inputs& in) { return in.shape.num_classes; }

  absl::Status Sample(OpKernelContext* ctx, const Inputs& in,
                      const SampleRequest& r) const {
    // One Philox key per call, from the call's (seed, seed2, counter) block;
    // the core gives query b subsequence b.
    const gpu::RandomStream random{QuerySeed(*r.block, 0), 0};
    const gpu::TreeView view = ViewOf(in);
    Tensor buffer;
    gpu::Workspace workspace;
    TF_RETURN_IF_ERROR(AllocateWorkspace(ctx, gpu::QueryWorkspaceBytes(view, r.batch),
                                         &buffer, &workspace));
    return ToStatus(gpu::Sample(view, in.inputs, r.batch, r.num_sampled, r.true_classes,
                                r.num_true, random, r.ids, r.log_q, r.true_log_q,
                                workspace, OpStream(ctx)));
  }

  absl::Status LogProb(OpKernelContext* ctx, const Inputs& in,
                       const LogProbRequest& r) const {
    const gpu::TreeView view = ViewOf(in);
    Tensor buffer;
    gpu::Workspace workspace;
    TF_RETURN_IF_ERROR(AllocateWorkspace(ctx, gpu::QueryWorkspaceBytes(view, r.batch),
                                         &buffer, &workspace));
    return ToStatus(gpu::LogProb(view, in.inputs, r.batch, r.classes, r.n, r.log_q,
                                 workspace, OpStream(ctx)));
  }

 private:
  FeatureAttrs attrs_;
};

REGISTER_KERNEL_BUILDER(Name("TfSampled>KernelTreeBuild").Device(DEVICE_GPU),
                        KernelTreeBuildGpuOp);
REGISTER_KERNEL_BUILDER(
    Name("TfSampled>KernelTreeUpdate").Device(DEVICE_GPU).HostMemory("num_classes"),
    KernelTreeUpdateGpuOp);
REGISTER_KERNEL_BUILDER(
    Name("TfSampled>KernelTreeSample").Device(DEVICE_GPU).HostMemory("counter"),
    SampleOp<KernelTreeGpuFamily>);
REGISTER_KERNEL_BUILDER(Name("TfSampled>KernelTreeLogProb").Device(DEVICE_GPU),
                        LogProbOp<KernelTreeGpuFamily>);

}  // namespace tf_sampled

#endif  // GOOGLE_CUDA
