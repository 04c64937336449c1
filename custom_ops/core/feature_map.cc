#include "custom_ops/core/feature_map.h"

#include <algorithm>
#include <cmath>

#include "custom_ops/core/block_dot.h"
#include "custom_ops/core/dot.h"
#include "custom_ops/core/multiversion.h"
#include "custom_ops/core/simd.h"

namespace tf_sampled {

bool ParseFeatureKind(const std::string& name, FeatureKind* kind) {
  if (name == "quadratic") {
    *kind = FeatureKind::kQuadratic;
  } else if (name == "random_fourier") {
    *kind = FeatureKind::kRandomFourier;
  } else if (name == "positive_random") {
    *kind = FeatureKind::kPositiveRandom;
  } else if (name == "gaussian_moments") {
    *kind = FeatureKind::kGaussianMoments;
  } else {
    return false;
  }
  return true;
}

bool WeightsByBias(FeatureKind kind) {
  return kind == FeatureKind::kPositiveRandom ||
         kind == FeatureKind::kGaussianMoments;
}

bool IsLinearInQuery(const FeatureMapSpec& spec) {
  return spec.kind != FeatureKind::kGaussianMoments;
}

namespace {

// Four accumulators: one would chain every add on the last one's latency.
TF_SAMPLED_MULTIVERSION
double SquaredNorm(const float* v, int64_t n) {
  double s[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int k = 0; k < 4; ++k) s[k] += double(v[i + k]) * v[i + k];
  }
  for (; i < n; ++i) s[0] += double(v[i]) * v[i];
  return (s[0] + s[2]) + (s[1] + s[3]);
}

// log of a class's weight: tau * b when the bias is a weight, else 0.
double LogClassWeight(const FeatureMapSpec& spec, const float* y) {
  return spec.bias_is_weight ? spec.temperature * y[spec.FeatureDim()] : 0.0;
}

// Packed upper triangle of sqrt(alpha) v v^T (off-diagonal terms carry sqrt(2)
// so that the packed dot product equals the full one), then the constant 1.
void QuadraticFeatures(const FeatureMapSpec& spec, const float* v,
                       double* out) {
  const double scale = std::sqrt(spec.alpha);
  const double off = scale * std::sqrt(2.0);
  const int64_t n = spec.FeatureDim();
  int64_t k = 0;
  for (int64_t i = 0; i < n; ++i) {
    out[k++] = scale * double(v[i]) * v[i];
    for (int64_t j = i + 1; j < n; ++j) out[k++] = off * double(v[i]) * v[j];
  }
  out[k] = 1.0;
}

// D^{-1/2} [cos(sqrt(nu) w.v/|v|), sin(...)] on the unit sphere, so that
// E[phi(x).phi(y)] = exp(-nu |x^ - y^|^2 / 2) = exp(nu (cos(x, y) - 1)).
TF_SAMPLED_MULTIVERSION
void FourierFeatures(const FeatureMapSpec& spec, const float* v, double* out) {
  const int64_t n = spec.FeatureDim();
  const double norm = std::sqrt(SquaredNorm(v, n));
  const double scale = std::sqrt(spec.temperature) / (norm > 0 ? norm : 1.0);
  const double amp = 1.0 / std::sqrt(double(spec.num_omega));
  for (int64_t j = 0; j < spec.num_omega; ++j) {
    const double a = scale * DotFloat(spec.omega + j * n, v, n);
    out[j] = amp * std::cos(a);
    out[spec.num_omega + j] = amp * std::sin(a);
  }
}

// log phi+_j(v) = sqrt(tau) w_j.v - tau |v|^2 / 2 - log(m) / 2.
TF_SAMPLED_MULTIVERSION
void PositiveLogFeatures(const FeatureMapSpec& spec, const float* v,
                         double* log_out) {
  const int64_t n = spec.FeatureDim();
  const double root_tau = std::sqrt(spec.temperature);
  const double shift = 0.5 * spec.temperature * SquaredNorm(v, n) +
                       0.5 * std::log(double(spec.num_omega));
  for (int64_t j = 0; j < spec.num_omega; ++j) {
    log_out[j] = root_tau * DotFloat(spec.omega + j * n, v, n) - shift;
  }
}

}  // namespace

namespace {

// Positive random features of rows whose projections omega.y are in `dots`
// [n, num_omega]: phi_j(y) = exp(l_j), l_j = sqrt(tau) omega_j.y - tau |y|^2 / 2
// - log(m) / 2 + tau b. Each row's exps are taken relative to its largest
// l_j in (vectorised) floats and rescaled in double, so large biases or
// norms do not overflow the floats.
TF_SAMPLED_MULTIVERSION
void PositiveFeaturesFromDots(const FeatureMapSpec& spec, const float* rows,
                              int64_t n, float* dots, double* out) {
  const int64_t m = spec.num_omega;
  const int64_t fd = spec.FeatureDim();
  const float root_tau = static_cast<float>(std::sqrt(spec.temperature));
  for (int64_t i = 0; i < n; ++i) {
    const float* y = rows + i * spec.dim;
    const double shift = 0.5 * spec.temperature * SquaredNorm(y, fd) +
                         0.5 * std::log(double(m)) - LogClassWeight(spec, y);
    float* l = dots + i * m;
    simd::Vec8 top8 = simd::Splat8(-INFINITY);
    int64_t j = 0;
    for (; j + 8 <= m; j += 8) {
      const simd::Vec8 v = simd::Load8(l + j) * root_tau;
      simd::Store8(l + j, v);
      top8 = simd::Max8(top8, v);
    }
    float top = top8[0];
    for (int k = 1; k < 8; ++k) top = std::max(top, top8[k]);
    for (; j < m; ++j) {
      l[j] *= root_tau;
      top = std::max(top, l[j]);
    }
    for (j = 0; j + 8 <= m; j += 8) {
      simd::Store8(l + j, simd::Exp8(simd::Load8(l + j) - top));
    }
    for (; j < m; ++j) l[j] = std::exp(l[j] - top);
    const double scale = std::exp(double(top) - shift);
    double* row_out = out + i * m;
    for (j = 0; j < m; ++j) row_out[j] = scale * l[j];
  }
}

// x * 0 is 0 for a finite x and NaN for an infinite or NaN one, so one sum of
// them tells whether all are finite, in vectorisable adds instead of a
// branch per value.
TF_SAMPLED_MULTIVERSION
bool AllFinite(const float* x, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) acc[k] += x[i + k] * 0.0f;
  }
  for (; i < n; ++i) acc[0] += x[i] * 0.0f;
  float total = 0;
  for (int k = 0; k < 8; ++k) total += acc[k];
  return total == 0;
}

TF_SAMPLED_MULTIVERSION
bool AllFinite(const double* x, int64_t n) {
  double acc[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int k = 0; k < 4; ++k) acc[k] += x[i + k] * 0.0;
  }
  for (; i < n; ++i) acc[0] += x[i] * 0.0;
  return (acc[0] + acc[1]) + (acc[2] + acc[3]) == 0;
}

}  // namespace

bool ClassFeatures(const FeatureMapSpec& spec, const float* rows, int64_t n,
                   double* out, FeatureScratch* scratch) {
  // Rows are contiguous, so checking all of them is one check.
  if (!AllFinite(rows, n * spec.dim)) return false;
  const int64_t num_features = spec.NumFeatures();
  if (spec.kind == FeatureKind::kPositiveRandom) {
    const int64_t m = spec.num_omega;
    const int64_t fd = spec.FeatureDim();
    if (scratch->omega_t_of != spec.omega) {
      scratch->omega_t.resize(fd * m);
      for (int64_t j = 0; j < m; ++j) {
        for (int64_t k = 0; k < fd; ++k) scratch->omega_t[k * m + j] = spec.omega[j * fd + k];
      }
      scratch->omega_t_of = spec.omega;
    }
    scratch->dots.resize(n * m);
    DotRowsTransposed(rows, spec.dim, n, scratch->omega_t.data(), m, fd,
                      scratch->dots.data(), m);
    PositiveFeaturesFromDots(spec, rows, n, scratch->dots.data(), out);
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const float* y = rows + i * spec.dim;
      double* row_out = out + i * num_features;
      const double log_weight = LogClassWeight(spec, y);
      switch (spec.kind) {
        case FeatureKind::kQuadratic:
          QuadraticFeatures(spec, y, row_out);
          break;
        case FeatureKind::kRandomFourier:
          FourierFeatures(spec, y, row_out);
          break;
        case FeatureKind::kPositiveRandom:
          break;  // above
        case FeatureKind::kGaussianMoments: {
          const double weight = std::exp(log_weight);
          const int64_t fd = spec.FeatureDim();
          row_out[0] = weight;
          for (int64_t k = 0; k < fd; ++k) {
            row_out[1 + k] = weight * y[k];
            row_out[1 + fd + k] = weight * double(y[k]) * y[k];
          }
          break;
        }
      }
    }
  }
  return AllFinite(out, n * num_features);
}

void QueryFeatures(const FeatureMapSpec& spec, const float* x, double* out,
                   double* scratch) {
  switch (spec.kind) {
    case FeatureKind::kQuadratic:
      QuadraticFeatures(spec, x, out);
      return;
    case FeatureKind::kRandomFourier:
      FourierFeatures(spec, x, out);
      return;
    case FeatureKind::kPositiveRandom: {
      // The query's features can under- or overflow on their own (|x| ~ 7 at
      // the end of training); subtracting their max keeps them in range and
      // only rescales every node mass of this query by the same factor.
      PositiveLogFeatures(spec, x, scratch);
      const double top = *std::max_element(scratch, scratch + spec.num_omega);
      for (int64_t j = 0; j < spec.num_omega; ++j) {
        out[j] = std::exp(scratch[j] - top);
      }
      return;
    }
    case FeatureKind::kGaussianMoments: {
      const int64_t n = spec.FeatureDim();
      for (int64_t k = 0; k < n; ++k) {
        const double a = spec.temperature * x[k];
        out[k] = a;
        out[n + k] = 0.5 * a * a;
      }
      return;
    }
  }
}

namespace {

// The moments' log-normal estimate of a node's log mass; -inf where the node
// holds no weight, never NaN.
double MomentsLogMass(const FeatureMapSpec& spec, const double* query,
                      const double* node_sum) {
  const double total = node_sum[0];  // sum of class weights (or the count)
  if (!(total > 0)) return -INFINITY;
  const int64_t n = spec.FeatureDim();
  double score = std::log(total);
  for (int64_t k = 0; k < n; ++k) {
    const double mean = node_sum[1 + k] / total;
    const double var = std::max(node_sum[1 + n + k] / total - mean * mean, 0.0);
    score += query[k] * mean + query[n + k] * var;
  }
  return std::isnan(score) ? -INFINITY : score;
}

}  // namespace

TF_SAMPLED_MULTIVERSION
double LeftMassShare(const FeatureMapSpec& spec, const double* query,
                     const double* left, const double* right) {
  if (spec.kind == FeatureKind::kGaussianMoments) {
    // Scores are logs (their masses would overflow).
    const double log_a = MomentsLogMass(spec, query, left);
    const double log_b = MomentsLogMass(spec, query, right);
    if (log_a == -INFINITY && log_b == -INFINITY) return 0.5;
    const double diff = log_b - log_a;
    return std::isnan(diff) ? 0.5 : 1.0 / (1.0 + std::exp(diff));
  }
  // Masses phi(x).z, compared directly: no logarithm per node visited.
  double a = DotDouble(query, left, spec.NumFeatures());
  double b = DotDouble(query, right, spec.NumFeatures());
  a = a > 0 ? a : 0.0;  // negative (random Fourier) or NaN: no mass
  b = b > 0 ? b : 0.0;
  if (std::isinf(a) || std::isinf(b)) {
    return std::isinf(a) ? (std::isinf(b) ? 0.5 : 1.0) : 0.0;
  }
  if (a == 0) return b == 0 ? 0.5 : 0.0;
  return 1.0 / (1.0 + b / a);  // b / a may overflow: then 0, the limit
}

bool LogKernelIsScaledDot(FeatureKind kind) {
  return kind == FeatureKind::kPositiveRandom ||
         kind == FeatureKind::kGaussianMoments;
}

}  // namespace tf_sampled
