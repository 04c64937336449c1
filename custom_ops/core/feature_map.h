// Kernel feature maps phi: R^dim -> R^F for the sampling tree, framework-free.
//
// Every map works on "augmented" vectors: the query x = [h, 1] and the class
// row y = [w, b] when the sampler has biases (so x.y is the logit), or x = h,
// y = w without them. The kernel K(x, y) = phi(x).phi(y) approximates (or, for
// the quadratic map, equals) the map's exact kernel, which the tree evaluates
// exactly inside a leaf.
//
// Maps of exp(tau x.y) (positive random, Gaussian moments) take the bias out
// of the features: exp(tau (h.w + b)) = exp(tau b) exp(tau h.w), so a class
// enters its node sums as exp(tau b) * phi(w), exactly. Random features of
// [w, b] would pay variance exp(|x + y|^2) for the same information.
#ifndef TF_SAMPLED_CORE_FEATURE_MAP_H_
#define TF_SAMPLED_CORE_FEATURE_MAP_H_

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "custom_ops/core/host_device.h"

namespace tf_sampled {

enum class FeatureKind : int {
  kQuadratic = 0,       // K = alpha (x.y)^2 + 1, exact features (Blanc & Rendle).
  kRandomFourier = 1,   // K ~ exp(nu (cos(x, y) - 1)), random Fourier features.
  kPositiveRandom = 2,  // K ~ exp(tau x.y), positive random features (FAVOR+).
  // Node summary [n, sum y, sum y*y] and the log-normal estimate
  // sum_i exp(tau x.y_i) ~ n exp(tau x.mu + tau^2/2 sum_k x_k^2 var_k): not a
  // kernel factorisation, but additive in the rows like one, and far lower
  // variance than random features when |x| and |y| are large.
  kGaussianMoments = 3,
};

// Parses "quadratic" / "random_fourier" / "positive_random" /
// "gaussian_moments".
bool ParseFeatureKind(const std::string& name, FeatureKind* kind);

struct FeatureMapSpec {
  FeatureKind kind = FeatureKind::kPositiveRandom;
  int64_t dim = 0;             // augmented row width
  bool bias_is_weight = false;  // last row column is a bias used as a weight
  const float* omega = nullptr;  // [num_omega, dim] standard-normal projections
  int64_t num_omega = 0;
  double alpha = 1.0;          // quadratic scale
  double temperature = 1.0;    // nu (random Fourier) or tau (positive random)

  // Width of the vectors the map itself sees (omega has this many columns).
  TFS_HOST_DEVICE int64_t FeatureDim() const { return dim - (bias_is_weight ? 1 : 0); }
  // Number of features F that phi produces.
  TFS_HOST_DEVICE int64_t NumFeatures() const;
};

// Whether a map of this kind weights classes by exp(tau b) (see above).
bool WeightsByBias(FeatureKind kind);

// Feature size F for vectors of width feature_dim.
TFS_HOST_DEVICE inline int64_t NumFeaturesFor(FeatureKind kind, int64_t feature_dim,
                                              int64_t num_omega) {
  switch (kind) {
    case FeatureKind::kQuadratic:
      return feature_dim * (feature_dim + 1) / 2 + 1;
    case FeatureKind::kRandomFourier:
      return 2 * num_omega;
    case FeatureKind::kPositiveRandom:
      return num_omega;
    case FeatureKind::kGaussianMoments:
      return 2 * feature_dim + 1;
  }
  return 0;
}

TFS_HOST_DEVICE inline int64_t FeatureMapSpec::NumFeatures() const {
  return NumFeaturesFor(kind, FeatureDim(), num_omega);
}

// Scratch space for ClassFeatures, reused across calls by one thread.
struct FeatureScratch {
  std::vector<float> dots;
  // The projections transposed [FeatureDim(), num_omega], for the omega they
  // were made from: once per thread, not per call.
  std::vector<float> omega_t;
  const float* omega_t_of = nullptr;
};

// phi(y) for `n` consecutive class rows [n, dim], exactly scaled so that sums
// over classes are meaningful, into out [n, NumFeatures()]. The rows'
// projections are one blocked product (block_dot.h). Returns false if a row
// or a feature is not finite.
bool ClassFeatures(const FeatureMapSpec& spec, const float* rows, int64_t n,
                   double* out, FeatureScratch* scratch);

// The query's side of the node score: phi(x) for the kernel maps, up to a
// positive per-query factor (which cancels in every ratio the tree takes);
// [tau x, tau^2 x^2 / 2] for Gaussian moments. Writes QuerySize() doubles.
// `scratch` must hold num_omega doubles.
void QueryFeatures(const FeatureMapSpec& spec, const float* x, double* out,
                   double* scratch);
TFS_HOST_DEVICE inline int64_t QuerySize(const FeatureMapSpec& spec) {
  return spec.kind == FeatureKind::kGaussianMoments ? 2 * spec.FeatureDim()
                                                    : spec.NumFeatures();
}

// Whether node scores are linear in the query features (so a batch mixture
// of queries is one query: true for the kernel maps).
bool IsLinearInQuery(const FeatureMapSpec& spec);

// m(left) / (m(left) + m(right)) for a node's children summaries: m =
// phi(x).z for the kernel maps (no mass where that is not positive), the
// log-normal estimate for moments; 1/2 where neither child has mass, never
// NaN. Not clamped.
double LeftMassShare(const FeatureMapSpec& spec, const double* query,
                     const double* left, const double* right);

// Whether the map's exact log kernel is temperature * x.y (the exp kernels),
// which batched callers compute without ExactLogKernel.
bool LogKernelIsScaledDot(FeatureKind kind);

// log of the map's exact kernel, from x.y and the squared norms |x|^2, |y|^2.
TFS_HOST_DEVICE inline double ExactLogKernel(const FeatureMapSpec& spec, double dot,
                                             double x_sq, double y_sq) {
  switch (spec.kind) {
    case FeatureKind::kQuadratic:
      return log1p(spec.alpha * dot * dot);
    case FeatureKind::kRandomFourier: {
      const double denom = sqrt(x_sq * y_sq);
      const double cosine = denom > 0 ? dot / denom : 0.0;
      return spec.temperature * (cosine - 1.0);
    }
    case FeatureKind::kPositiveRandom:
    case FeatureKind::kGaussianMoments:
      break;
  }
  return spec.temperature * dot;  // LogKernelIsScaledDot
}

}  // namespace tf_sampled

#endif  // TF_SAMPLED_CORE_FEATURE_MAP_H_
