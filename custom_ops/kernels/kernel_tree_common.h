// What the kernel-tree OpKernels share: their attributes, the feature-map
// spec and the parsed, validated tree inputs.
#ifndef TF_SAMPLED_KERNELS_KERNEL_TREE_COMMON_H_
#define TF_SAMPLED_KERNELS_KERNEL_TREE_COMMON_H_

#include <cmath>
#include <string>

#include "custom_ops/core/feature_map.h"
#include "custom_ops/core/kernel_tree.h"
#include "custom_ops/core/tree_limits.h"
#include "custom_ops/kernels/common.h"

namespace tf_sampled {

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

// The prior_weight attribute of the sampling ops: the log-uniform share a of
// the proposal a p_lu + (1 - a) q_tree (core/log_uniform_prior.h).
inline absl::Status ParsePriorWeight(OpKernelConstruction* ctx, float* prior_weight) {
  TF_RETURN_IF_ERROR(ctx->GetAttr("prior_weight", prior_weight));
  if (!(*prior_weight >= 0.0f && *prior_weight <= 1.0f)) {
    return errors::InvalidArgument(
        "prior_weight must be in [0, 1] (the log-uniform share of the proposal), got ",
        *prior_weight);
  }
  return absl::OkStatus();
}

// The feature map for augmented rows of width `dim` (the last column a bias
// when has_bias) with projections omega. values_on_host=false (GPU kernels:
// omega is in device memory) leaves the finiteness check to the device.
inline absl::Status MakeSpec(const FeatureAttrs& attrs, const Tensor& omega,
                             int64_t dim, bool has_bias, FeatureMapSpec* spec,
                             bool values_on_host = true) {
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
    if (values_on_host) {
      TF_RETURN_IF_ERROR(
          CheckFinite(omega.flat<float>().data(), omega.NumElements(), "omega"));
    }
  }
  spec->omega = omega.flat<float>().data();
  spec->num_omega = uses_omega ? omega.dim_size(0) : 0;
  spec->alpha = attrs.alpha;
  spec->temperature = attrs.temperature;
  return absl::OkStatus();
}

// The tree's limits (core/tree_limits.h, shared with the CUDA core) as
// InvalidArgument.
inline absl::Status CheckTree(const FeatureMapSpec& spec, const TreeShape& shape) {
  const std::string error = TreeError(spec, shape);
  return error.empty() ? absl::OkStatus() : errors::InvalidArgument(error);
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

  // values_on_host=false: shapes only (GPU kernels check values on the device).
  absl::Status Parse(OpKernelContext* ctx, const FeatureAttrs& attrs,
                     bool values_on_host = true) {
    TF_RETURN_IF_ERROR(variables.Lock(
        ctx, {{0, "nodes"}, {1, "embeddings"}, {2, "biases"}}));
    TF_RETURN_IF_ERROR(ParseTree(attrs, variables.tensor(0), variables.tensor(1),
                                 variables.tensor(2), ctx->input(3), values_on_host));
    const Tensor& inputs_t = ctx->input(4);
    TF_RETURN_IF_ERROR(CheckRank(inputs_t, 2, "inputs"));
    if (inputs_t.dim_size(1) != table.d) {
      return errors::InvalidArgument(
          "inputs must have ", table.d, " columns like embeddings, got shape ",
          inputs_t.shape().DebugString());
    }
    if (values_on_host) {
      TF_RETURN_IF_ERROR(CheckFinite(inputs_t.flat<float>().data(),
                                     inputs_t.NumElements(), "inputs"));
    }
    inputs = inputs_t.flat<float>().data();
    batch = inputs_t.dim_size(0);
    return absl::OkStatus();
  }

  // The tree (nodes, omega) and the class table it was built from (the
  // variables' values), checked against each other; fills spec, shape,
  // table and nodes.
  absl::Status ParseTree(const FeatureAttrs& attrs, const Tensor& nodes_t,
                         const Tensor& embeddings, const Tensor& biases,
                         const Tensor& omega, bool values_on_host) {
    TF_RETURN_IF_ERROR(CheckDtype(nodes_t, ::tensorflow::DT_DOUBLE, "nodes"));
    TF_RETURN_IF_ERROR(CheckDtype(embeddings, ::tensorflow::DT_FLOAT, "embeddings"));
    TF_RETURN_IF_ERROR(CheckDtype(biases, ::tensorflow::DT_FLOAT, "biases"));
    TF_RETURN_IF_ERROR(CheckRank(embeddings, 2, "embeddings"));
    TF_RETURN_IF_ERROR(CheckRank(biases, 1, "biases"));
    TF_RETURN_IF_ERROR(CheckRank(nodes_t, 2, "nodes"));
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
    TF_RETURN_IF_ERROR(MakeSpec(attrs, omega, d + (has_biases ? 1 : 0),
                                has_biases, &spec, values_on_host));
    shape.num_classes = num_classes;
    shape.leaf_size = attrs.leaf_size;
    TF_RETURN_IF_ERROR(CheckTree(spec, shape));
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
    return absl::OkStatus();
  }
};

}  // namespace tf_sampled

#endif  // TF_SAMPLED_KERNELS_KERNEL_TREE_COMMON_H_
