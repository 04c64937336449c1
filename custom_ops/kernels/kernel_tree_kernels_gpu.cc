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
    shape.num_classes = num_classes_t.scalar<int64_t>()();  // range-checked by the core
    shape.leaf_size = attrs_.leaf_size;
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

class KernelTreeSampleGpuOp : public OpKernel {
 public:
  explicit KernelTreeSampleGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.Parse(ctx));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_sampled", &num_sampled_));
    OP_REQUIRES(ctx, num_sampled_ >= 1,
                errors::InvalidArgument("num_sampled must be >= 1, got ", num_sampled_));
    OP_REQUIRES_OK(ctx, stream_.Init(ctx));
  }

  void Compute(OpKernelContext* ctx) override {
    TreeInputs in;
    OP_REQUIRES_OK(ctx, in.Parse(ctx, attrs_, /*values_on_host=*/false));
    const Tensor& true_classes = ctx->input(5);
    OP_REQUIRES_OK(ctx, CheckRank(true_classes, 2, "true_classes"));
    OP_REQUIRES(ctx, true_classes.dim_size(0) == in.batch,
                errors::InvalidArgument("true_classes must have ", in.batch,
                                        " rows like inputs, got shape ",
                                        true_classes.shape().DebugString()));
    const int64_t num_true = true_classes.dim_size(1);
    ::tensorflow::random::PhiloxRandom block;
    OP_REQUIRES_OK(ctx, stream_.CallBlock(ctx, kTreeCounterInput, &block));
    Tensor *ids, *log_q, *true_log_q;
    OP_REQUIRES_OK(ctx, AllocatePerExampleOutputs(ctx, in.batch, num_sampled_, num_true,
                                                  &ids, &log_q, &true_log_q));
    if (in.batch == 0) return;
    // One Philox key per call, from the call's (seed, seed2, counter) block;
    // the core gives query b subsequence b.
    const gpu::RandomStream random{QuerySeed(block, 0), 0};
    const gpu::TreeView view = ViewOf(in);
    Tensor buffer;
    gpu::Workspace workspace;
    OP_REQUIRES_OK(ctx, AllocateWorkspace(ctx, gpu::QueryWorkspaceBytes(view, in.batch),
                                          &buffer, &workspace));
    OP_REQUIRES_OK(ctx, ToStatus(gpu::Sample(
                            view, in.inputs, in.batch, num_sampled_,
                            true_classes.flat<int64_t>().data(), num_true, random,
                            ids->flat<int64_t>().data(), log_q->flat<float>().data(),
                            true_log_q->flat<float>().data(), workspace, OpStream(ctx))));
  }

 private:
  FeatureAttrs attrs_;
  int64_t num_sampled_;
  SampleStream stream_;
};

class KernelTreeLogProbGpuOp : public OpKernel {
 public:
  explicit KernelTreeLogProbGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.Parse(ctx));
  }

  void Compute(OpKernelContext* ctx) override {
    TreeInputs in;
    OP_REQUIRES_OK(ctx, in.Parse(ctx, attrs_, /*values_on_host=*/false));
    const Tensor& classes = ctx->input(5);
    OP_REQUIRES_OK(ctx, CheckRank(classes, 2, "classes"));
    OP_REQUIRES(ctx, classes.dim_size(0) == in.batch,
                errors::InvalidArgument("classes must have ", in.batch,
                                        " rows like inputs, got shape ",
                                        classes.shape().DebugString()));
    const int64_t n = classes.dim_size(1);
    Tensor* log_q;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({in.batch, n}), &log_q));
    if (in.batch == 0 || n == 0) return;
    const gpu::TreeView view = ViewOf(in);
    Tensor buffer;
    gpu::Workspace workspace;
    OP_REQUIRES_OK(ctx, AllocateWorkspace(ctx, gpu::QueryWorkspaceBytes(view, in.batch),
                                          &buffer, &workspace));
    OP_REQUIRES_OK(ctx, ToStatus(gpu::LogProb(view, in.inputs, in.batch,
                                              classes.flat<int64_t>().data(), n,
                                              log_q->flat<float>().data(), workspace,
                                              OpStream(ctx))));
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
    KernelTreeSampleGpuOp);
REGISTER_KERNEL_BUILDER(Name("TfSampled>KernelTreeLogProb").Device(DEVICE_GPU),
                        KernelTreeLogProbGpuOp);

}  // namespace tf_sampled

#endif  // GOOGLE_CUDA
