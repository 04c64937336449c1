// The limits a kernel tree's feature map and shape must meet, checked in one
// place for the CPU kernels (kernels/kernel_tree_common.h) and the CUDA core
// (cuda/common.cu), which turn the message into InvalidArgument. Framework-free.
#ifndef TF_SAMPLED_CORE_TREE_LIMITS_H_
#define TF_SAMPLED_CORE_TREE_LIMITS_H_

#include <cstdint>
#include <string>

#include "custom_ops/core/feature_map.h"
#include "custom_ops/core/kernel_tree.h"

namespace tf_sampled {

// Node ids (2 * leaves) must fit in int64 with room to spare.
constexpr int64_t kMaxClasses = int64_t{1} << 48;

// Why `spec` cannot be served (row width, omega, alpha and temperature, and
// sizes whose feature arrays would not be addressable), or "" when it can.
std::string FeatureSpecError(const FeatureMapSpec& spec);

// FeatureSpecError, then why `shape` cannot be (num_classes in
// [1, kMaxClasses], leaf_size >= 1, node sums [2N, F] addressable), or "".
std::string TreeError(const FeatureMapSpec& spec, const TreeShape& shape);

}  // namespace tf_sampled

#endif  // TF_SAMPLED_CORE_TREE_LIMITS_H_
