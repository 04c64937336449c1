// Dot products written so the compiler vectorises them at -O2/-O3 without
// -ffast-math: independent partial sums break the serial add dependency.
#ifndef TF_SAMPLED_CORE_DOT_H_
#define TF_SAMPLED_CORE_DOT_H_

#include <cstdint>

namespace tf_sampled {

inline float DotFloat(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) acc[k] += a[i + k] * b[i + k];
  }
  float tail = 0;
  for (; i < n; ++i) tail += a[i] * b[i];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) +
         ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

inline double DotDouble(const double* a, const double* b, int64_t n) {
  double acc[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int k = 0; k < 4; ++k) acc[k] += a[i + k] * b[i + k];
  }
  double tail = 0;
  for (; i < n; ++i) tail += a[i] * b[i];
  return (acc[0] + acc[2]) + (acc[1] + acc[3]) + tail;
}

}  // namespace tf_sampled

#endif  // TF_SAMPLED_CORE_DOT_H_
