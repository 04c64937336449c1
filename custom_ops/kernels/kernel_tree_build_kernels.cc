// Building the tree's node sums and updating them for changed rows.
#include <algorithm>
#include <vector>

#include "custom_ops/core/group_by_key.h"
#include "custom_ops/kernels/kernel_tree_common.h"

namespace tf_sampled {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::TensorShape;

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
    OP_REQUIRES_OK(ctx, CheckTree(spec, shape));
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

// row_deltas [n, F] = phi(new) - phi(old) for n rows, in parallel chunks
// (so each thread's features are blocked products): new_rows [n, spec.dim]
// contiguous, fill_old(r, out) writes row r's old values (spec.dim floats).
// Returns -1, or a row whose values or features are not finite.
template <typename FillOld>
int64_t RowDeltasInChunks(OpKernelContext* ctx, const FeatureMapSpec& spec,
                          int64_t n, const FillOld& fill_old, const float* new_rows,
                          double* row_deltas) {
  const int64_t num_features = spec.NumFeatures();
  constexpr int64_t kChunk = 32;
  ShardFailure failure;
  ParallelFor(ctx, (n + kChunk - 1) / kChunk, 2 * kChunk * num_features * spec.dim,
              [&](int64_t begin, int64_t end) {
                FeatureScratch scratch;
                std::vector<double> features;
                std::vector<float> old_rows(kChunk * spec.dim);
                for (int64_t chunk = begin; chunk < end; ++chunk) {
                  const int64_t r = chunk * kChunk;
                  const int64_t rows = std::min(kChunk, n - r);
                  for (int64_t i = 0; i < rows; ++i) fill_old(r + i, old_rows.data() + i * spec.dim);
                  const float* new_chunk = new_rows + r * spec.dim;
                  if (RowFeatureDeltas(spec, old_rows.data(), new_chunk, rows,
                                       row_deltas + r * num_features, &scratch, &features)) {
                    continue;
                  }
                  // The first bad row of the chunk, for the message.
                  std::vector<double> one(num_features);
                  for (int64_t i = 0; i < rows; ++i) {
                    if (!RowFeatureDeltas(spec, old_rows.data() + i * spec.dim,
                                          new_chunk + i * spec.dim, 1, one.data(), &scratch,
                                          &features)) {
                      failure.Record(r + i);
                      break;
                    }
                  }
                }
              });
  return failure.failed() ? failure.item() : -1;
}

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
    FeatureMapSpec spec;
    OP_REQUIRES_OK(ctx, MakeSpec(attrs_, ctx->input(3), new_rows.dim_size(1),
                                 has_bias_, &spec));
    TreeShape shape;
    shape.num_classes = num_classes_t.scalar<int64_t>()();
    shape.leaf_size = attrs_.leaf_size;
    OP_REQUIRES_OK(ctx, CheckTree(spec, shape));
    OP_REQUIRES_OK(ctx, CheckClassIds(ids, shape.num_classes, "ids"));
    const int64_t num_features = spec.NumFeatures();

    std::vector<double> row_deltas(n * num_features);
    const float* old_data = old_rows.flat<float>().data();
    const float* new_data = new_rows.flat<float>().data();
    const int64_t failed = RowDeltasInChunks(
        ctx, spec, n,
        [&](int64_t r, float* old_row) {
          std::copy_n(old_data + r * spec.dim, spec.dim, old_row);
        },
        new_data, row_deltas.data());
    OP_REQUIRES(ctx, failed < 0,
                errors::InvalidArgument(
                    "old_rows and new_rows must be finite: row ", failed,
                    " (class ", ids.flat<int64_t>()(failed),
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

// In place: nodes and the row snapshot are written, the class table read.
class KernelTreeRefreshRowsOp : public OpKernel {
 public:
  explicit KernelTreeRefreshRowsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.Parse(ctx));
  }

  void Compute(OpKernelContext* ctx) override {
    using Access = LockedVariables::Access;
    TreeInputs tree;
    OP_REQUIRES_OK(ctx, tree.variables.LockEach(ctx, {{2, "embeddings", Access::kRead},
                                                      {3, "biases", Access::kRead},
                                                      {0, "nodes", Access::kWrite},
                                                      {1, "rows", Access::kWrite}}));
    const Tensor& snapshot_t = tree.variables.tensor(3);
    OP_REQUIRES_OK(ctx, tree.ParseTree(attrs_, tree.variables.tensor(2),
                                       tree.variables.tensor(0), tree.variables.tensor(1),
                                       ctx->input(4), /*values_on_host=*/true));
    const FeatureMapSpec& spec = tree.spec;
    const int64_t num_classes = tree.shape.num_classes;
    const int64_t d = tree.table.d;
    OP_REQUIRES_OK(ctx, CheckDtype(snapshot_t, ::tensorflow::DT_FLOAT, "rows"));
    OP_REQUIRES(ctx,
                snapshot_t.dims() == 2 && snapshot_t.dim_size(0) == num_classes &&
                    snapshot_t.dim_size(1) == spec.dim,
                errors::InvalidArgument(
                    "rows (the snapshot of embeddings", tree.table.biases ? " and biases" : "",
                    ") must have shape [", num_classes, ", ", spec.dim, "], got ",
                    snapshot_t.shape().DebugString()));
    const Tensor& ids = ctx->input(5);
    OP_REQUIRES_OK(ctx, CheckClassIds(ids, num_classes, "ids"));
    KeyGroups groups;
    GroupByKey(std::vector<int64_t>(ids.flat<int64_t>().data(),
                                    ids.flat<int64_t>().data() + ids.NumElements()),
               num_classes - 1, &groups);
    const std::vector<int64_t>& classes = groups.ids;  // distinct, ascending
    const int64_t n = classes.size();
    if (n == 0) return;

    const float* snapshot = snapshot_t.flat<float>().data();
    // The new rows are gathered once, here, and copied into the snapshot
    // only once every row has passed (a bad row leaves the state as it was).
    std::vector<float> new_rows(n * spec.dim);
    ParallelFor(ctx, n, spec.dim, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        float* out = new_rows.data() + r * spec.dim;
        std::copy_n(tree.table.embeddings + classes[r] * d, d, out);
        if (tree.table.biases != nullptr) out[d] = tree.table.biases[classes[r]];
      }
    });
    std::vector<double> row_deltas(n * spec.NumFeatures());
    const int64_t failed = RowDeltasInChunks(
        ctx, spec, n,
        [&](int64_t r, float* old_row) {
          std::copy_n(snapshot + classes[r] * spec.dim, spec.dim, old_row);
        },
        new_rows.data(), row_deltas.data());
    OP_REQUIRES(ctx, failed < 0,
                errors::InvalidArgument(
                    "embeddings and biases must be finite: the row of class ",
                    classes[failed],
                    " holds a NaN/Inf value or its features overflow (the tree "
                    "is left unchanged)"));

    Tensor* nodes_t = nullptr;
    Tensor* rows_t = nullptr;
    OP_REQUIRES_OK(ctx, tree.variables.MutableTensor(ctx, 2, &nodes_t));
    OP_REQUIRES_OK(ctx, tree.variables.MutableTensor(ctx, 3, &rows_t));
    float* rows_out = rows_t->flat<float>().data();
    ParallelFor(ctx, n, spec.dim, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        std::copy_n(new_rows.data() + r * spec.dim, spec.dim, rows_out + classes[r] * spec.dim);
      }
    });
    ApplyRowDeltas(tree.shape, spec.NumFeatures(), classes.data(), row_deltas.data(),
                   n, nodes_t->flat<double>().data(), OpParallelRange(ctx));
  }

 private:
  FeatureAttrs attrs_;
};

REGISTER_KERNEL_BUILDER(Name("TfSampled>KernelTreeBuild").Device(DEVICE_CPU),
                        KernelTreeBuildOp);
REGISTER_KERNEL_BUILDER(Name("TfSampled>KernelTreeUpdate").Device(DEVICE_CPU),
                        KernelTreeUpdateOp);
REGISTER_KERNEL_BUILDER(Name("TfSampled>KernelTreeRefreshRows").Device(DEVICE_CPU),
                        KernelTreeRefreshRowsOp);

}  // namespace tf_sampled
