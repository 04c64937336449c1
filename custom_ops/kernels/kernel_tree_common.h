// Validation shared by the kernel-tree OpKernels: everything a user can pass
// is checked here and turned into InvalidArgument naming the argument and the
// bad value, before the framework-free core sees it.
#ifndef TF_SAMPLED_KERNELS_KERNEL_TREE_COMMON_H_
#define TF_SAMPLED_KERNELS_KERNEL_TREE_COMMON_H_

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "custom_ops/core/feature_map.h"
#include "custom_ops/core/kernel_tree.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tf_sampled {

using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
namespace errors = ::tensorflow::errors;

// The feature-map and tree attributes every kernel-tree op carries.
struct FeatureAttrs {
  FeatureKind kind = FeatureKind::kPositiveRandom;
  float alpha = 1.0f;
  float temperature = 1.0f;
  int64_t leaf_size = 1;

  absl::Status Parse(OpKernelConstruction* ctx) {
    std::string name;
    TF_RETURN_IF_ERROR(ctx->GetAttr("feature_map", &name));
    if (!ParseFeatureKind(name, &kind)) {
      return errors::InvalidArgument("Unknown feature_map: '", name, "'");
    }
    TF_RETURN_IF_ERROR(ctx->GetAttr("alpha", &alpha));
    TF_RETURN_IF_ERROR(ctx->GetAttr("temperature", &temperature));
    TF_RETURN_IF_ERROR(ctx->GetAttr("leaf_size", &leaf_size));
    if (!(alpha > 0) || !std::isfinite(alpha)) {
      return errors::InvalidArgument("alpha must be positive and finite, got ",
                                     alpha);
    }
    if (!(temperature > 0) || !std::isfinite(temperature)) {
      return errors::InvalidArgument(
          "temperature must be positive and finite, got ", temperature);
    }
    if (leaf_size < 1) {
      return errors::InvalidArgument("leaf_size must be >= 1, got ", leaf_size);
    }
    return absl::OkStatus();
  }
};

inline absl::Status CheckFinite(const float* values, int64_t n,
                                const char* name) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(values[i])) {
      return errors::InvalidArgument(name, " must be finite, got ", values[i],
                                     " at flat index ", i);
    }
  }
  return absl::OkStatus();
}

inline absl::Status CheckRank(const Tensor& t, int rank, const char* name) {
  if (t.dims() != rank) {
    return errors::InvalidArgument(name, " must have rank ", rank,
                                   ", got shape ", t.shape().DebugString());
  }
  return absl::OkStatus();
}

// Class ids in [0, num_classes).
inline absl::Status CheckClassIds(const Tensor& ids, int64_t num_classes,
                                  const char* name) {
  const auto flat = ids.flat<int64_t>();
  for (int64_t i = 0; i < flat.size(); ++i) {
    if (flat(i) < 0 || flat(i) >= num_classes) {
      return errors::InvalidArgument(name, " must be in [0, ", num_classes,
                                     "), got ", flat(i), " at flat index ", i);
    }
  }
  return absl::OkStatus();
}

// The feature map for augmented rows of width `dim` (the last column a bias
// when has_bias) with projections omega.
inline absl::Status MakeSpec(const FeatureAttrs& attrs, const Tensor& omega,
                             int64_t dim, bool has_bias, FeatureMapSpec* spec) {
  TF_RETURN_IF_ERROR(CheckRank(omega, 2, "omega"));
  if (has_bias && dim < 2) {
    return errors::InvalidArgument(
        "rows with a bias column must have at least 2 columns, got ", dim);
  }
  spec->kind = attrs.kind;
  spec->dim = dim;
  spec->bias_is_weight = has_bias && WeightsByBias(attrs.kind);
  const int64_t feature_dim = spec->FeatureDim();
  const bool uses_omega = attrs.kind == FeatureKind::kRandomFourier ||
                          attrs.kind == FeatureKind::kPositiveRandom;
  if (uses_omega) {
    if (omega.dim_size(1) != feature_dim) {
      return errors::InvalidArgument(
          "omega must have ", feature_dim,
          " columns (the width the feature map sees), got shape ",
          omega.shape().DebugString());
    }
    if (omega.dim_size(0) < 1) {
      return errors::InvalidArgument(
          "omega must have at least one row for random features, got shape ",
          omega.shape().DebugString());
    }
    TF_RETURN_IF_ERROR(
        CheckFinite(omega.flat<float>().data(), omega.NumElements(), "omega"));
  }
  spec->omega = omega.flat<float>().data();
  spec->num_omega = uses_omega ? omega.dim_size(0) : 0;
  spec->alpha = attrs.alpha;
  spec->temperature = attrs.temperature;
  return absl::OkStatus();
}

// The variables a sampling op reads in place (the class table can be GBs: a
// dense read of a variable in copy-on-read mode, which any sparse update
// turns on, would copy it on every call). Holds shared locks on them for the
// op's lifetime, taken in address order like TensorFlow's training ops take
// theirs, so lock order cannot deadlock.
class LockedVariables {
 public:
  absl::Status Lock(OpKernelContext* ctx,
                    const std::vector<std::pair<int, const char*>>& inputs) {
    for (const auto& [index, name] : inputs) {
      ::tensorflow::core::RefCountPtr<::tensorflow::Var> var;
      const absl::Status status =
          ::tensorflow::LookupResource(ctx, ::tensorflow::HandleFromInput(ctx, index), &var);
      if (!status.ok()) {
        return errors::InvalidArgument(name, " must be a variable handle: ",
                                       status.message());
      }
      vars_.push_back(std::move(var));
    }
    std::vector<::tensorflow::Var*> order;
    for (const auto& var : vars_) order.push_back(var.get());
    std::sort(order.begin(), order.end());
    order.erase(std::unique(order.begin(), order.end()), order.end());
    for (::tensorflow::Var* var : order) {
      locks_.push_back(std::make_unique<::tensorflow::tf_shared_lock>(*var->mu()));
    }
    for (size_t i = 0; i < vars_.size(); ++i) {
      if (!vars_[i]->is_initialized) {
        return errors::InvalidArgument(inputs[i].second,
                                       " is an uninitialized variable");
      }
    }
    return absl::OkStatus();
  }

  // The i-th locked variable's value; valid while this object lives.
  const Tensor& tensor(int i) const { return *vars_[i]->tensor(); }

 private:
  std::vector<::tensorflow::core::RefCountPtr<::tensorflow::Var>> vars_;
  std::vector<std::unique_ptr<::tensorflow::tf_shared_lock>> locks_;
};

inline absl::Status CheckDtype(const Tensor& t, ::tensorflow::DataType dtype,
                               const char* name) {
  if (t.dtype() != dtype) {
    return errors::InvalidArgument(name, " must be ",
                                   ::tensorflow::DataTypeString(dtype), ", got ",
                                   ::tensorflow::DataTypeString(t.dtype()));
  }
  return absl::OkStatus();
}

// Everything the sampling ops read: the tree, the current class table and the
// queries. Inputs 0..4 are nodes, embeddings, biases (variable handles, read
// in place under `variables`), omega, inputs.
struct TreeInputs {
  FeatureMapSpec spec;
  TreeShape shape;
  ClassTable table;
  const double* nodes = nullptr;
  const float* inputs = nullptr;
  int64_t batch = 0;

  LockedVariables variables;

  absl::Status Parse(OpKernelContext* ctx, const FeatureAttrs& attrs) {
    TF_RETURN_IF_ERROR(variables.Lock(
        ctx, {{0, "nodes"}, {1, "embeddings"}, {2, "biases"}}));
    const Tensor& nodes_t = variables.tensor(0);
    const Tensor& embeddings = variables.tensor(1);
    const Tensor& biases = variables.tensor(2);
    TF_RETURN_IF_ERROR(CheckDtype(nodes_t, ::tensorflow::DT_DOUBLE, "nodes"));
    TF_RETURN_IF_ERROR(CheckDtype(embeddings, ::tensorflow::DT_FLOAT, "embeddings"));
    TF_RETURN_IF_ERROR(CheckDtype(biases, ::tensorflow::DT_FLOAT, "biases"));
    const Tensor& omega = ctx->input(3);
    const Tensor& inputs_t = ctx->input(4);
    TF_RETURN_IF_ERROR(CheckRank(embeddings, 2, "embeddings"));
    TF_RETURN_IF_ERROR(CheckRank(biases, 1, "biases"));
    TF_RETURN_IF_ERROR(CheckRank(nodes_t, 2, "nodes"));
    TF_RETURN_IF_ERROR(CheckRank(inputs_t, 2, "inputs"));
    const int64_t num_classes = embeddings.dim_size(0);
    const int64_t d = embeddings.dim_size(1);
    if (num_classes < 1 || d < 1) {
      return errors::InvalidArgument(
          "embeddings must be a non-empty [num_classes, dim] matrix, got shape ",
          embeddings.shape().DebugString());
    }
    const bool has_biases = biases.NumElements() > 0;
    if (has_biases && biases.dim_size(0) != num_classes) {
      return errors::InvalidArgument(
          "biases must have shape [", num_classes, "] (or [0] for none), got ",
          biases.shape().DebugString());
    }
    if (inputs_t.dim_size(1) != d) {
      return errors::InvalidArgument(
          "inputs must have ", d, " columns like embeddings, got shape ",
          inputs_t.shape().DebugString());
    }
    TF_RETURN_IF_ERROR(CheckFinite(inputs_t.flat<float>().data(),
                                   inputs_t.NumElements(), "inputs"));
    TF_RETURN_IF_ERROR(
        MakeSpec(attrs, omega, d + (has_biases ? 1 : 0), has_biases, &spec));
    shape.num_classes = num_classes;
    shape.leaf_size = attrs.leaf_size;
    const int64_t num_features = spec.NumFeatures();
    if (nodes_t.dim_size(0) != shape.NumNodeRows() ||
        nodes_t.dim_size(1) != num_features) {
      return errors::InvalidArgument(
          "nodes must have shape [", shape.NumNodeRows(), ", ", num_features,
          "] for ", num_classes, " classes, leaf_size ", attrs.leaf_size,
          " and this feature map, got ", nodes_t.shape().DebugString());
    }
    table.embeddings = embeddings.flat<float>().data();
    table.biases = has_biases ? biases.flat<float>().data() : nullptr;
    table.d = d;
    nodes = nodes_t.flat<double>().data();
    inputs = inputs_t.flat<float>().data();
    batch = inputs_t.dim_size(0);
    return absl::OkStatus();
  }
};

// Records the first failing item of a sharded loop (the core reports
// non-finite class rows it read) so the op can fail after the loop.
class ShardFailure {
 public:
  void Record(int64_t item) {
    int64_t expected = -1;
    first_.compare_exchange_strong(expected, item);
  }
  bool failed() const { return first_.load() >= 0; }
  int64_t item() const { return first_.load(); }

 private:
  std::atomic<int64_t> first_{-1};
};

// Runs fn(begin, end) over [0, total) on the op's CPU thread pool.
template <typename Fn>
void ParallelFor(OpKernelContext* ctx, int64_t total, int64_t cost_per_item,
                 Fn&& fn) {
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  ::tensorflow::Shard(workers->num_threads, workers->workers, total,
                      cost_per_item, std::forward<Fn>(fn));
}

}  // namespace tf_sampled

#endif  // TF_SAMPLED_KERNELS_KERNEL_TREE_COMMON_H_
