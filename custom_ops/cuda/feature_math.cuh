// The GPU's parallel decomposition of the C++ core's feature-map math
// (core/feature_map.cc, core/kernel_tree.cc): one thread per feature, the
// per-row scalars (squared norm, class weight, finiteness) once per row by
// the block or warp, in the core's order of operations where the order
// matters to the result (the 8-way float dot products, the scaling order of
// the quadratic terms), so GPU and CPU agree to float rounding. The scalar
// math and shapes themselves (FeatureMapSpec, NumFeaturesFor, QuerySize,
// ExactLogKernel, TreeShape) are the core's host-and-device definitions
// (core/host_device.h), not copies.
#ifndef TF_SAMPLED_CUDA_FEATURE_MATH_CUH_
#define TF_SAMPLED_CUDA_FEATURE_MATH_CUH_

#include <cstdint>

#include "custom_ops/core/feature_map.h"
#include "custom_ops/core/kernel_tree.h"
#include "custom_ops/cuda/device_common.cuh"

namespace tf_sampled {
namespace gpu {

// DotFloat (core/dot.h) with b read at stride `b_stride` (omega is stored
// transposed on the device so that the threads of a warp, one feature each,
// read consecutive addresses).
__device__ inline float DotFloatStrided(const float* a, const float* b,
                                        int64_t b_stride, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
#pragma unroll
    for (int k = 0; k < 8; ++k) acc[k] += a[i + k] * b[(i + k) * b_stride];
  }
  float tail = 0;
  for (; i < n; ++i) tail += a[i] * b[i * b_stride];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) +
         ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

// Per-row quantities the features of a row share.
struct RowScalars {
  bool finite;
  double norm_sq;     // over the first FeatureDim columns
  double log_weight;  // tau * b when the bias is a weight, else 0
};

// Computed by the whole block (every thread gets the result).
__device__ inline RowScalars BlockRowScalars(const FeatureMapSpec& spec,
                                             const float* y, double* shared) {
  const int64_t n = spec.FeatureDim();
  double sq = 0, bad = 0;
  for (int64_t k = threadIdx.x; k < spec.dim; k += blockDim.x) {
    const float v = y[k];
    if (!isfinite(v)) bad = 1;
    if (k < n) sq += double(v) * v;
  }
  RowScalars r;
  r.norm_sq = BlockSum(sq, shared);
  r.finite = BlockSum(bad, shared) == 0;
  r.log_weight = spec.bias_is_weight ? spec.temperature * y[n] : 0.0;
  return r;
}

// (i, k), i <= k, of packed quadratic feature j < n (n + 1) / 2: row i of the
// upper triangle starts at i n - i (i - 1) / 2.
__device__ inline void QuadraticPair(int64_t j, int64_t n, int64_t* i_out,
                                     int64_t* k_out) {
  auto start = [n](int64_t i) { return i * n - i * (i - 1) / 2; };
  const double b = 2.0 * n + 1.0;
  int64_t i = static_cast<int64_t>((b - sqrt(fmax(b * b - 8.0 * j, 0.0))) / 2);
  if (i < 0) i = 0;
  if (i > n - 1) i = n - 1;
  while (i > 0 && start(i) > j) --i;
  while (i + 1 < n && start(i + 1) <= j) ++i;
  *i_out = i;
  *k_out = i + (j - start(i));
}

// Precomputed per feature j (fixed while a thread walks over rows).
struct FeatureSlot {
  int64_t j;
  int64_t a, b;  // quadratic pair, or the omega row for random features
};

__device__ inline FeatureSlot MakeSlot(const FeatureMapSpec& spec, int64_t j) {
  FeatureSlot s{j, 0, 0};
  const int64_t n = spec.FeatureDim();
  if (spec.kind == FeatureKind::kQuadratic && j < n * (n + 1) / 2) {
    QuadraticPair(j, n, &s.a, &s.b);
  } else if (spec.kind == FeatureKind::kRandomFourier) {
    s.a = j < spec.num_omega ? j : j - spec.num_omega;
  }
  return s;
}

// Feature j of phi(y) (ClassFeatures), omega_t the transposed projections
// [FeatureDim, num_omega].
__device__ inline double ClassFeature(const FeatureMapSpec& spec,
                                      const FeatureSlot& slot, const float* y,
                                      const RowScalars& r,
                                      const float* omega_t) {
  const int64_t n = spec.FeatureDim();
  const int64_t m = spec.num_omega;
  switch (spec.kind) {
    case FeatureKind::kQuadratic: {
      if (slot.j == n * (n + 1) / 2) return 1.0;
      const double scale = sqrt(spec.alpha);
      const double coef = slot.a == slot.b ? scale : scale * sqrt(2.0);
      return coef * double(y[slot.a]) * y[slot.b];
    }
    case FeatureKind::kRandomFourier: {
      const double norm = sqrt(r.norm_sq);
      const double scale = sqrt(spec.temperature) / (norm > 0 ? norm : 1.0);
      const double amp = 1.0 / sqrt(double(m));
      const double a = scale * DotFloatStrided(y, omega_t + slot.a, m, n);
      return slot.j < m ? amp * cos(a) : amp * sin(a);
    }
    case FeatureKind::kPositiveRandom: {
      const double shift =
          0.5 * spec.temperature * r.norm_sq + 0.5 * log(double(m));
      const double log_phi =
          sqrt(spec.temperature) * DotFloatStrided(y, omega_t + slot.j, m, n) -
          shift;
      return exp(log_phi + r.log_weight);
    }
    case FeatureKind::kGaussianMoments: {
      const double weight = exp(r.log_weight);
      if (slot.j == 0) return weight;
      if (slot.j <= n) return weight * y[slot.j - 1];
      const float v = y[slot.j - 1 - n];
      return weight * double(v) * v;
    }
  }
  return 0.0;
}

// Query feature j before any normalisation (QueryFeatures); for positive
// random features the LOG feature (the caller subtracts the max).
__device__ inline double QueryFeatureRaw(const FeatureMapSpec& spec,
                                         const FeatureSlot& slot,
                                         const float* x, double norm_sq,
                                         const float* omega_t) {
  const int64_t n = spec.FeatureDim();
  switch (spec.kind) {
    case FeatureKind::kQuadratic:
    case FeatureKind::kRandomFourier: {
      RowScalars r{true, norm_sq, 0.0};
      return ClassFeature(spec, slot, x, r, omega_t);
    }
    case FeatureKind::kPositiveRandom: {
      const int64_t m = spec.num_omega;
      const double shift = 0.5 * spec.temperature * norm_sq + 0.5 * log(double(m));
      return sqrt(spec.temperature) * DotFloatStrided(x, omega_t + slot.j, m, n) -
             shift;
    }
    case FeatureKind::kGaussianMoments: {
      const double a = spec.temperature * x[slot.j < n ? slot.j : slot.j - n];
      return slot.j < n ? a : 0.5 * a * a;
    }
  }
  return 0.0;
}

// log of a node's mass (the masses LeftMassShare in feature_map.h compares),
// computed by a warp (every lane gets the result).
__device__ inline double WarpNodeLogMass(const FeatureMapSpec& spec,
                                         const double* query,
                                         const double* node_sum, int lane) {
  if (spec.kind != FeatureKind::kGaussianMoments) {
    const int64_t f = spec.NumFeatures();
    double part = 0;
    for (int64_t j = lane; j < f; j += 32) part += query[j] * node_sum[j];
    const double mass = WarpSum(part);
    return mass > 0 ? log(mass) : -INFINITY;  // NaN -> -inf as well
  }
  const double total = node_sum[0];
  if (!(total > 0)) return -INFINITY;
  const int64_t n = spec.FeatureDim();
  double part = 0;
  for (int64_t k = lane; k < n; k += 32) {
    const double mean = node_sum[1 + k] / total;
    const double var = fmax(node_sum[1 + n + k] / total - mean * mean, 0.0);
    part += query[k] * mean + query[n + k] * var;
  }
  const double score = log(total) + WarpSum(part);
  return isnan(score) ? -INFINITY : score;
}

// log P(left), log P(right) of KernelTree::LeftProb, by a warp, in the log
// domain (the same probabilities up to rounding; the CPU multiplies them
// along a path instead, to save the logarithms).
__device__ inline void WarpBranchLogProbs(const FeatureMapSpec& spec,
                                          const double* query,
                                          const double* nodes, int64_t f,
                                          int64_t node, int lane,
                                          double* log_left, double* log_right) {
  const double* left = nodes + 2 * node * f;
  const double log_a = WarpNodeLogMass(spec, query, left, lane);
  const double log_b = WarpNodeLogMass(spec, query, left + f, lane);
  double p = 0.5;
  if (log_a > -INFINITY || log_b > -INFINITY) {
    const double diff = log_b - log_a;
    if (!isnan(diff)) p = 1.0 / (1.0 + exp(diff));
  }
  p = fmin(fmax(p, kMinBranchProb), 1.0 - kMinBranchProb);
  *log_left = log(p);
  *log_right = log1p(-p);
}

// The exact log kernel of class c for the augmented query x (x_sq = |x|^2),
// by a warp (LeafLogKernels' per-class body). Returns NaN when the row or
// the kernel is not finite.
__device__ inline double WarpClassLogKernel(const FeatureMapSpec& spec,
                                            const ClassTable& table,
                                            const float* x, double x_sq,
                                            int64_t c, int lane) {
  const float* w = table.embeddings + c * table.d;
  float part = 0, part_sq = 0;
  const bool fourier = spec.kind == FeatureKind::kRandomFourier;
  for (int64_t k = lane; k < table.d; k += 32) {
    part += x[k] * w[k];
    if (fourier) part_sq += w[k] * w[k];
  }
  double dot = WarpSum(part);
  double y_sq = 0;
  if (table.biases != nullptr) dot += double(x[table.d]) * table.biases[c];
  if (fourier) {
    y_sq = WarpSum(part_sq);
    if (table.biases != nullptr) y_sq += double(table.biases[c]) * table.biases[c];
  }
  if (!isfinite(dot) || !isfinite(y_sq)) return NAN;
  const double k = ExactLogKernel(spec, dot, x_sq, y_sq);
  return isfinite(k) ? k : NAN;
}

}  // namespace gpu
}  // namespace tf_sampled

#endif  // TF_SAMPLED_CUDA_FEATURE_MATH_CUH_
