// Building the tree's node sums and updating them for changed rows.
#include <algorithm>
#include <vector>

#include "custom_ops/kernels/kernel_tree_common.h"

namespace tf_sampled {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::TensorShape;

// Node ids (2 * leaves) must fit in int64 with room to spare.
constexpr int64_t kMaxClasses = int64_t{1} << 48;

class KernelTreeBuildOp : public OpKernel {
 public:
  explicit KernelTreeBuildOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
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
    OP_REQUIRES_OK(ctx, MakeSpec(attrs_, ctx->input(1), rows.dim_size(1),
                                 has_bias_, &spec));
    TreeShape shape;
    shape.num_classes = rows.dim_size(0);
    shape.leaf_size = attrs_.leaf_size;
    const int64_t num_features = spec.NumFeatures();
    Tensor* nodes_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            0, TensorShape({shape.NumNodeRows(), num_features}),
                            &nodes_t));
    double* nodes = nodes_t->flat<double>().data();
    std::fill(nodes, nodes + num_features, 0.0);  // unused row 0

    const float* row_data = rows.flat<float>().data();
    const int64_t num_leaves = shape.NumLeaves();
    ShardFailure failure;
    ParallelFor(ctx, num_leaves, attrs_.leaf_size * num_features * spec.dim,
                [&](int64_t begin, int64_t end) {
                  FeatureScratch scratch;
                  std::vector<double> features;
                  for (int64_t leaf = begin; leaf < end; ++leaf) {
                    double* sum = nodes + shape.NodeOfLeaf(leaf) * num_features;
                    if (!SumLeafFeatures(spec, shape, row_data, leaf, sum,
                                         &scratch, &features)) {
                      failure.Record(leaf);
                    }
                  }
                });
    OP_REQUIRES(ctx, !failure.failed(),
                errors::InvalidArgument(
                    "rows must be finite (embeddings and biases): leaf ",
                    failure.item(), " (classes from ",
                    shape.LeafBegin(failure.item()),
                    ") holds a NaN/Inf value or its features overflow"));
    SumInternalNodes(shape, num_features, nodes);
  }

 private:
  FeatureAttrs attrs_;
  bool has_bias_;
};

class KernelTreeUpdateOp : public OpKernel {
 public:
  explicit KernelTreeUpdateOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.Parse(ctx));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("has_bias", &has_bias_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& ids = ctx->input(0);
    const Tensor& old_rows = ctx->input(1);
    const Tensor& new_rows = ctx->input(2);
    const Tensor& num_classes_t = ctx->input(4);
    OP_REQUIRES_OK(ctx, CheckRank(ids, 1, "ids"));
    OP_REQUIRES_OK(ctx, CheckRank(old_rows, 2, "old_rows"));
    OP_REQUIRES_OK(ctx, CheckRank(new_rows, 2, "new_rows"));
    OP_REQUIRES_OK(ctx, CheckRank(num_classes_t, 0, "num_classes"));
    const int64_t n = ids.dim_size(0);
    OP_REQUIRES(ctx,
                old_rows.dim_size(0) == n && new_rows.dim_size(0) == n &&
                    old_rows.dim_size(1) == new_rows.dim_size(1),
                errors::InvalidArgument(
                    "old_rows and new_rows must both have shape [", n,
                    ", dim] for ", n, " ids, got ",
                    old_rows.shape().DebugString(), " and ",
                    new_rows.shape().DebugString()));
    const int64_t num_classes = num_classes_t.scalar<int64_t>()();
    OP_REQUIRES(ctx, num_classes >= 1 && num_classes <= kMaxClasses,
                errors::InvalidArgument("num_classes must be in [1, ",
                                        kMaxClasses, "], got ", num_classes));
    OP_REQUIRES_OK(ctx, CheckClassIds(ids, num_classes, "ids"));
    FeatureMapSpec spec;
    OP_REQUIRES_OK(ctx, MakeSpec(attrs_, ctx->input(3), new_rows.dim_size(1),
                                 has_bias_, &spec));
    TreeShape shape;
    shape.num_classes = num_classes;
    shape.leaf_size = attrs_.leaf_size;
    const int64_t num_features = spec.NumFeatures();

    std::vector<double> row_deltas(n * num_features);
    const float* old_data = old_rows.flat<float>().data();
    const float* new_data = new_rows.flat<float>().data();
    ShardFailure failure;
    // Chunks of rows, so each thread's features are blocked products.
    constexpr int64_t kChunk = 32;
    const int64_t num_chunks = (n + kChunk - 1) / kChunk;
    ParallelFor(ctx, num_chunks, 2 * kChunk * num_features * spec.dim,
                [&](int64_t begin, int64_t end) {
                  FeatureScratch scratch;
                  std::vector<double> features;
                  for (int64_t chunk = begin; chunk < end; ++chunk) {
                    const int64_t r = chunk * kChunk;
                    const int64_t rows = std::min(kChunk, n - r);
                    if (!RowFeatureDeltas(spec, old_data + r * spec.dim,
                                          new_data + r * spec.dim, rows,
                                          row_deltas.data() + r * num_features,
                                          &scratch, &features)) {
                      // The first bad row of the chunk, for the message.
                      for (int64_t i = r; i < r + rows; ++i) {
                        std::vector<double> one(num_features);
                        if (!RowFeatureDeltas(spec, old_data + i * spec.dim,
                                              new_data + i * spec.dim, 1, one.data(),
                                              &scratch, &features)) {
                          failure.Record(i);
                          break;
                        }
                      }
                    }
                  }
                });
    OP_REQUIRES(ctx, !failure.failed(),
                errors::InvalidArgument(
                    "old_rows and new_rows must be finite: row ",
                    failure.item(), " (class ",
                    ids.flat<int64_t>()(failure.item()),
                    ") holds a NaN/Inf value or its features overflow"));

    std::vector<int64_t> node_ids;
    PathNodes(shape, ids.flat<int64_t>().data(), n, &node_ids);
    const int64_t k = node_ids.size();
    Tensor* ids_out = nullptr;
    Tensor* deltas_out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({k}), &ids_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            1, TensorShape({k, num_features}), &deltas_out));
    std::copy(node_ids.begin(), node_ids.end(), ids_out->flat<int64_t>().data());
    double* node_deltas = deltas_out->flat<double>().data();
    std::fill(node_deltas, node_deltas + k * num_features, 0.0);
    AccumulatePathDeltas(shape, num_features, ids.flat<int64_t>().data(),
                         row_deltas.data(), n, node_ids, node_deltas);
  }

 private:
  FeatureAttrs attrs_;
  bool has_bias_;
};

REGISTER_KERNEL_BUILDER(Name("TfSampled>KernelTreeBuild").Device(DEVICE_CPU),
                        KernelTreeBuildOp);
REGISTER_KERNEL_BUILDER(Name("TfSampled>KernelTreeUpdate").Device(DEVICE_CPU),
                        KernelTreeUpdateOp);

}  // namespace tf_sampled
