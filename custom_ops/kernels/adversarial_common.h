// What the auxiliary-tree query OpKernels share: the parsed, validated tree
// and inputs, and the errors the core reports for entries it read.
#ifndef TF_SAMPLED_KERNELS_ADVERSARIAL_COMMON_H_
#define TF_SAMPLED_KERNELS_ADVERSARIAL_COMMON_H_

#include <cmath>

#include "custom_ops/core/adversarial_tree.h"
#include "custom_ops/kernels/common.h"

namespace tf_sampled {

// Heap ids up to 2 C must fit in int64 with room to spare.
constexpr int64_t kMaxAdversarialClasses = int64_t{1} << 48;

// The error for a status the core returned while serving row `row`.
inline absl::Status AdversarialTreeError(AdversarialTreeStatus status, int64_t row) {
  switch (status) {
    case AdversarialTreeStatus::kOk:
      return absl::OkStatus();
    case AdversarialTreeStatus::kNonFiniteLogit:
      return errors::InvalidArgument(
          "params must be finite: a node logit on the path of input row ", row,
          " is NaN/Inf (or overflows)");
    case AdversarialTreeStatus::kBadClassOfLeaf:
      return errors::InvalidArgument(
          "class_of_leaf must hold class ids in [0, num_classes): a leaf "
          "reached by input row ", row, " does not");
    case AdversarialTreeStatus::kBadLeafOfClass:
      return errors::InvalidArgument(
          "leaf_of_class must hold leaf slots in [0, num_classes): a class "
          "asked for in row ", row, " maps outside");
  }
  return errors::Internal("unknown aux tree status");
}

// Inputs 0..3 of the query ops: params [C, k + 1], class_of_leaf [C],
// leaf_of_class [C], finite inputs [batch, k].
struct AdversarialTreeInputs {
  AdversarialTreeView tree;
  const float* inputs = nullptr;
  int64_t batch = 0;

  absl::Status Parse(OpKernelContext* ctx) {
    const Tensor& params = ctx->input(0);
    const Tensor& class_of_leaf = ctx->input(1);
    const Tensor& leaf_of_class = ctx->input(2);
    const Tensor& inputs_t = ctx->input(3);
    TF_RETURN_IF_ERROR(CheckRank(params, 2, "params"));
    TF_RETURN_IF_ERROR(CheckRank(class_of_leaf, 1, "class_of_leaf"));
    TF_RETURN_IF_ERROR(CheckRank(leaf_of_class, 1, "leaf_of_class"));
    TF_RETURN_IF_ERROR(CheckRank(inputs_t, 2, "inputs"));
    const int64_t num_classes = params.dim_size(0);
    if (num_classes < 2 || num_classes > kMaxAdversarialClasses || params.dim_size(1) < 2) {
      return errors::InvalidArgument(
          "params must have shape [num_classes >= 2, k + 1 >= 2], got ",
          params.shape().DebugString());
    }
    if (class_of_leaf.dim_size(0) != num_classes ||
        leaf_of_class.dim_size(0) != num_classes) {
      return errors::InvalidArgument(
          "class_of_leaf and leaf_of_class must have shape [", num_classes,
          "] like params' rows, got ", class_of_leaf.shape().DebugString(),
          " and ", leaf_of_class.shape().DebugString());
    }
    const int64_t k = params.dim_size(1) - 1;
    if (inputs_t.dim_size(1) != k) {
      return errors::InvalidArgument(
          "inputs (the projected inputs) must have ", k,
          " columns like params [", num_classes, ", ", k + 1, "], got shape ",
          inputs_t.shape().DebugString());
    }
    TF_RETURN_IF_ERROR(CheckFinite(inputs_t.flat<float>().data(),
                                   inputs_t.NumElements(), "inputs"));
    tree.num_classes = num_classes;
    tree.dim = k;
    tree.params = params.flat<float>().data();
    tree.class_of_leaf = class_of_leaf.flat<int64_t>().data();
    tree.leaf_of_class = leaf_of_class.flat<int64_t>().data();
    inputs = inputs_t.flat<float>().data();
    batch = inputs_t.dim_size(0);
    return absl::OkStatus();
  }

  // Work estimate for `draws` descents or log p_n's of one row.
  int64_t Cost(int64_t draws) const {
    const int64_t depth =
        2 + static_cast<int64_t>(std::log2(double(tree.num_classes)));
    return (draws + 1) * depth * (tree.dim + 8);
  }
};

}  // namespace tf_sampled

#endif  // TF_SAMPLED_KERNELS_ADVERSARIAL_COMMON_H_
