#include "custom_ops/core/tree_limits.h"

#include <cmath>
#include <limits>

#include "custom_ops/core/str_cat.h"

namespace tf_sampled {

std::string FeatureSpecError(const FeatureMapSpec& spec) {
  if (spec.dim < 1 || (spec.bias_is_weight && spec.dim < 2)) {
    return StrCat("rows must have at least ", spec.bias_is_weight ? 2 : 1,
                  " columns, got ", spec.dim);
  }
  const bool uses_omega = spec.kind == FeatureKind::kRandomFourier ||
                          spec.kind == FeatureKind::kPositiveRandom;
  if (uses_omega && (spec.num_omega < 1 || spec.omega == nullptr)) {
    return StrCat("omega must have at least one row for random features, got ",
                  spec.num_omega);
  }
  if (!(spec.alpha > 0) || !std::isfinite(spec.alpha) || !(spec.temperature > 0) ||
      !std::isfinite(spec.temperature)) {
    return StrCat("alpha and temperature must be positive and finite, got ", spec.alpha,
                  " and ", spec.temperature);
  }
  // The quadratic F ~ dim^2 / 2 and omega [num_omega, dim] are where sizes
  // stop being addressable first.
  const int64_t n = spec.FeatureDim();
  if (spec.kind == FeatureKind::kQuadratic && n > (int64_t{1} << 20)) {
    return StrCat("quadratic features of ", n, " columns are too many");
  }
  if (uses_omega && spec.num_omega > (int64_t{1} << 40) / n) {
    return StrCat("omega of ", spec.num_omega, " x ", n, " is too large");
  }
  return "";
}

std::string TreeError(const FeatureMapSpec& spec, const TreeShape& shape) {
  if (shape.num_classes < 1 || shape.num_classes > kMaxClasses) {
    return StrCat("num_classes must be in [1, ", kMaxClasses, "], got ", shape.num_classes);
  }
  if (shape.leaf_size < 1) {
    return StrCat("leaf_size must be >= 1, got ", shape.leaf_size);
  }
  std::string error = FeatureSpecError(spec);
  if (!error.empty()) return error;
  const int64_t f = spec.NumFeatures();
  if (f > std::numeric_limits<int64_t>::max() / 8 / shape.NumNodeRows()) {
    return StrCat("node sums of ", shape.NumNodeRows(), " x ", f, " doubles overflow");
  }
  return "";
}

}  // namespace tf_sampled
