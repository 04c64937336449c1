// 8-wide float vectors through GCC/Clang vector extensions: one AVX register
// in the x86-64-v3 clone of a TF_SAMPLED_MULTIVERSION function, two SSE
// registers in its baseline clone; no intrinsics, so the code compiles for
// every target. Only for use inside such functions (these helpers are always
// inlined into them). Framework-free.
#ifndef TF_SAMPLED_CORE_SIMD_H_
#define TF_SAMPLED_CORE_SIMD_H_

#include <cstdint>
#include <cstring>

namespace tf_sampled {
namespace simd {

typedef float Vec8 __attribute__((vector_size(32)));
typedef int32_t Int8 __attribute__((vector_size(32)));

#define TF_SAMPLED_SIMD_INLINE inline __attribute__((always_inline))

TF_SAMPLED_SIMD_INLINE Vec8 Load8(const float* p) {
  Vec8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

TF_SAMPLED_SIMD_INLINE void Store8(float* p, Vec8 v) {
  std::memcpy(p, &v, sizeof(v));
}

TF_SAMPLED_SIMD_INLINE Vec8 Splat8(float x) { return Vec8{} + x; }

TF_SAMPLED_SIMD_INLINE Vec8 Max8(Vec8 a, Vec8 b) { return a > b ? a : b; }

TF_SAMPLED_SIMD_INLINE float Sum8(Vec8 v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

// exp(x) to about 2 ulp for x in [-87, 88] (Cephes' expf: x = n ln2 + r,
// a degree-6 polynomial in r, 2^n through the exponent bits); inputs below
// -87 give about 1e-38 instead of a denormal or 0.
TF_SAMPLED_SIMD_INLINE Vec8 Exp8(Vec8 x) {
  x = x < Splat8(-87.0f) ? Splat8(-87.0f) : x;
  x = x > Splat8(88.0f) ? Splat8(88.0f) : x;
  Vec8 fx = x * 1.44269504088896341f + 0.5f;
  // floor(fx): truncation, minus one where truncation rounded up.
  Vec8 n = __builtin_convertvector(__builtin_convertvector(fx, Int8), Vec8);
  n = n > fx ? n - 1.0f : n;
  const Vec8 r = x - n * 0.693359375f + n * 2.12194440e-4f;
  Vec8 p = Splat8(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const Int8 bits = (__builtin_convertvector(n, Int8) + 127) << 23;
  Vec8 scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

}  // namespace simd
}  // namespace tf_sampled

#endif  // TF_SAMPLED_CORE_SIMD_H_
