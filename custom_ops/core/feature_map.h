// Kernel feature maps phi: R^dim -> R^F for the sampling tree, framework-free.
//
// Every map works on "augmented" vectors: the query x = [h, 1] and the class
// row y = [w, b] when the sampler has biases (so x.y is the logit), or x = h,
// y = w without them. The kernel K(x, y) = phi(x).phi(y) approximates (or, for
// the quadratic map, equals) the map's exact kernel, which the tree evaluates
// exactly inside a leaf.
#ifndef TF_SAMPLED_CORE_FEATURE_MAP_H_
#define TF_SAMPLED_CORE_FEATURE_MAP_H_

#include <cstdint>
#include <string>

namespace tf_sampled {

enum class FeatureKind : int {
  kQuadratic = 0,       // K = alpha (x.y)^2 + 1, exact features (Blanc & Rendle).
  kRandomFourier = 1,   // K ~ exp(nu (cos(x, y) - 1)), random Fourier features.
  kPositiveRandom = 2,  // K ~ exp(tau x.y), positive random features (FAVOR+).
};

// Parses "quadratic" / "random_fourier" / "positive_random".
bool ParseFeatureKind(const std::string& name, FeatureKind* kind);

struct FeatureMapSpec {
  FeatureKind kind = FeatureKind::kPositiveRandom;
  int64_t dim = 0;             // augmented input dimension
  const float* omega = nullptr;  // [num_omega, dim] standard-normal projections
  int64_t num_omega = 0;
  double alpha = 1.0;          // quadratic scale
  double temperature = 1.0;    // nu (random Fourier) or tau (positive random)

  // Number of features F that phi produces.
  int64_t NumFeatures() const;
};

// Feature size for a spec that is not built yet (used for validation).
int64_t NumFeaturesFor(FeatureKind kind, int64_t dim, int64_t num_omega);

// phi(y) for a class row, exactly scaled so that sums over classes are
// meaningful. Writes NumFeatures() doubles. Returns false if y or the result
// is not finite.
bool ClassFeatures(const FeatureMapSpec& spec, const float* y, double* out);

// phi(x) for a query, up to a positive per-query factor (which cancels in
// every ratio the tree takes). Writes NumFeatures() doubles.
// `scratch` must hold num_omega doubles.
void QueryFeatures(const FeatureMapSpec& spec, const float* x, double* out,
                   double* scratch);

// log of the map's exact kernel, from x.y and the squared norms |x|^2, |y|^2.
double ExactLogKernel(const FeatureMapSpec& spec, double dot, double x_sq,
                      double y_sq);

}  // namespace tf_sampled

#endif  // TF_SAMPLED_CORE_FEATURE_MAP_H_
