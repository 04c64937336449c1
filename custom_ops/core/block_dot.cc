#include "custom_ops/core/block_dot.h"

#include "custom_ops/core/multiversion.h"
#include "custom_ops/core/simd.h"

namespace tf_sampled {
namespace {

using simd::Load8;
using simd::Sum8;
using simd::Vec8;

// A kA x kB tile of dot products: kA * kB accumulators, kA + kB loads per
// kA * kB fused multiply-adds.
template <int kA, int kB>
TF_SAMPLED_SIMD_INLINE void DotTile(
    const float* const* a, const float* b, int64_t b_stride, int64_t n,
    float* out, int64_t out_stride) {
  Vec8 acc[kA][kB];
  for (int i = 0; i < kA; ++i) {
    for (int j = 0; j < kB; ++j) acc[i][j] = Vec8{};
  }
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    Vec8 bv[kB];
    for (int j = 0; j < kB; ++j) bv[j] = Load8(b + j * b_stride + k);
    for (int i = 0; i < kA; ++i) {
      const Vec8 av = Load8(a[i] + k);
      for (int j = 0; j < kB; ++j) acc[i][j] += av * bv[j];
    }
  }
  for (int i = 0; i < kA; ++i) {
    for (int j = 0; j < kB; ++j) {
      float s = Sum8(acc[i][j]);
      for (int64_t t = k; t < n; ++t) s += a[i][t] * b[j * b_stride + t];
      out[i * out_stride + j] = s;
    }
  }
}

// Up to this many rows of `a`, DotRows reads `b` one row at a time
// (StreamRows); more take register tiles. Few rows of `a` against a leaf's
// rows (the in-leaf step at 100k+ classes: one to a few queries per leaf)
// wait on memory, not on the FMA units, and reading `b` in address order
// keeps the hardware prefetcher streaming where a tile's interleaved rows
// stall it. Single-threaded over 5,700 random leaves of 128 x 128 at C = 1M:
// 1 row of `a` 30-35 ms streamed against 43-51 ms tiled, 6 rows 49 against
// 72, 16 rows about even, 32 rows 10% slower streamed.
constexpr int64_t kMaxStreamedRows = 12;

// One row of `b` against kA rows of `a`: four accumulators per row of `a`
// over 32 values at a time, the row's four slices loaded once for all kA.
template <int kA>
TF_SAMPLED_SIMD_INLINE void StreamRow(const float* const* a, const float* row,
                                      int64_t n, float* out, int64_t out_stride) {
  Vec8 acc[kA][4];
  for (int i = 0; i < kA; ++i) {
    for (int u = 0; u < 4; ++u) acc[i][u] = Vec8{};
  }
  int64_t k = 0;
  for (; k + 32 <= n; k += 32) {
    Vec8 bv[4];
    for (int u = 0; u < 4; ++u) bv[u] = Load8(row + k + 8 * u);
    for (int i = 0; i < kA; ++i) {
      for (int u = 0; u < 4; ++u) acc[i][u] += Load8(a[i] + k + 8 * u) * bv[u];
    }
  }
  for (; k + 8 <= n; k += 8) {
    const Vec8 bv = Load8(row + k);
    for (int i = 0; i < kA; ++i) acc[i][0] += Load8(a[i] + k) * bv;
  }
  for (int i = 0; i < kA; ++i) {
    float sum = Sum8((acc[i][0] + acc[i][1]) + (acc[i][2] + acc[i][3]));
    for (int64_t t = k; t < n; ++t) sum += a[i][t] * row[t];
    out[i * out_stride] = sum;
  }
}

// The rows of `b` in address order, each against all rows of `a` in groups
// of three (12 accumulators and 4 slices of the row fill the 16 registers).
TF_SAMPLED_SIMD_INLINE void StreamRows(const float* const* a, int64_t num_a,
                                       const float* b, int64_t b_stride,
                                       int64_t num_b, int64_t n, float* out,
                                       int64_t out_stride) {
  for (int64_t j = 0; j < num_b; ++j) {
    const float* row = b + j * b_stride;
    float* row_out = out + j;
    int64_t i = 0;
    for (; i + 3 <= num_a; i += 3) {
      StreamRow<3>(a + i, row, n, row_out + i * out_stride, out_stride);
    }
    if (num_a - i == 2) StreamRow<2>(a + i, row, n, row_out + i * out_stride, out_stride);
    if (num_a - i == 1) StreamRow<1>(a + i, row, n, row_out + i * out_stride, out_stride);
  }
}

// All columns of kA rows of `a`: tiles of kB columns, then single columns
// (more than kMaxStreamedRows rows of `a`).
template <int kA, int kB>
TF_SAMPLED_SIMD_INLINE void DotRowBlock(
    const float* const* a, const float* b, int64_t b_stride, int64_t num_b,
    int64_t n, float* out, int64_t out_stride) {
  int64_t j = 0;
  for (; j + kB <= num_b; j += kB) {
    DotTile<kA, kB>(a, b + j * b_stride, b_stride, n, out + j, out_stride);
  }
  for (; j < num_b; ++j) {
    DotTile<kA, 1>(a, b + j * b_stride, b_stride, n, out + j, out_stride);
  }
}

// kA rows of `a` against kB * 8 consecutive columns of bt: kA * kB
// accumulators, kB loads and kA broadcasts per kA * kB fused multiply-adds.
template <int kA, int kB>
TF_SAMPLED_SIMD_INLINE void BroadcastTile(const float* a, int64_t a_stride,
                                          const float* bt, int64_t bt_stride,
                                          int64_t n, float* out,
                                          int64_t out_stride) {
  Vec8 acc[kA][kB];
  for (int i = 0; i < kA; ++i) {
    for (int j = 0; j < kB; ++j) acc[i][j] = Vec8{};
  }
  for (int64_t k = 0; k < n; ++k) {
    Vec8 bv[kB];
    for (int j = 0; j < kB; ++j) bv[j] = Load8(bt + k * bt_stride + 8 * j);
    for (int i = 0; i < kA; ++i) {
      // scalar * vector: GCC broadcasts straight from memory this way.
      const float av = a[i * a_stride + k];
      for (int j = 0; j < kB; ++j) acc[i][j] += av * bv[j];
    }
  }
  for (int i = 0; i < kA; ++i) {
    for (int j = 0; j < kB; ++j) simd::Store8(out + i * out_stride + 8 * j, acc[i][j]);
  }
}

// All columns of kA rows: tiles of 16 columns, one of 8, then single columns.
template <int kA>
TF_SAMPLED_SIMD_INLINE void BroadcastRowBlock(const float* a, int64_t a_stride,
                                              const float* bt, int64_t num_b,
                                              int64_t n, float* out,
                                              int64_t out_stride) {
  int64_t j = 0;
  for (; j + 16 <= num_b; j += 16) {
    BroadcastTile<kA, 2>(a, a_stride, bt + j, num_b, n, out + j, out_stride);
  }
  for (; j + 8 <= num_b; j += 8) {
    BroadcastTile<kA, 1>(a, a_stride, bt + j, num_b, n, out + j, out_stride);
  }
  for (; j < num_b; ++j) {
    for (int i = 0; i < kA; ++i) {
      float s = 0;
      for (int64_t k = 0; k < n; ++k) s += a[i * a_stride + k] * bt[k * num_b + j];
      out[i * out_stride + j] = s;
    }
  }
}

// The last `rows` < 6 rows, as one block of that height.
template <int kA>
TF_SAMPLED_SIMD_INLINE void BroadcastLastRows(int64_t rows, const float* a,
                                              int64_t a_stride, const float* bt,
                                              int64_t num_b, int64_t n, float* out,
                                              int64_t out_stride) {
  if (rows == kA) {
    BroadcastRowBlock<kA>(a, a_stride, bt, num_b, n, out, out_stride);
  } else if constexpr (kA > 1) {
    BroadcastLastRows<kA - 1>(rows, a, a_stride, bt, num_b, n, out, out_stride);
  }
}

}  // namespace

TF_SAMPLED_MULTIVERSION
void DotRowsTransposed(const float* a, int64_t a_stride, int64_t num_a,
                       const float* bt, int64_t num_b, int64_t n, float* out,
                       int64_t out_stride) {
  // 6 x 16 tiles: 12 accumulators, 2 loaded columns and 1 broadcast fill 15
  // of the 16 AVX registers.
  int64_t i = 0;
  for (; i + 6 <= num_a; i += 6) {
    BroadcastRowBlock<6>(a + i * a_stride, a_stride, bt, num_b, n,
                         out + i * out_stride, out_stride);
  }
  BroadcastLastRows<5>(num_a - i, a + i * a_stride, a_stride, bt, num_b, n,
                       out + i * out_stride, out_stride);
}

TF_SAMPLED_MULTIVERSION
void DotRows(const float* const* a_rows, int64_t num_a, const float* b,
             int64_t b_stride, int64_t num_b, int64_t n, float* out,
             int64_t out_stride) {
  if (num_a <= kMaxStreamedRows) {
    StreamRows(a_rows, num_a, b, b_stride, num_b, n, out, out_stride);
    return;
  }
  // 4 x 3 tiles keep 12 accumulators and 3 + 1 operands in the 16 AVX
  // registers; fewer rows of `a` get wider tiles over `b` instead.
  int64_t i = 0;
  for (; i + 4 <= num_a; i += 4) {
    DotRowBlock<4, 3>(a_rows + i, b, b_stride, num_b, n, out + i * out_stride,
                      out_stride);
  }
  const float* const* rest = a_rows + i;
  float* rest_out = out + i * out_stride;
  switch (num_a - i) {
    case 3:
      DotRowBlock<3, 4>(rest, b, b_stride, num_b, n, rest_out, out_stride);
      break;
    case 2:
      DotRowBlock<2, 6>(rest, b, b_stride, num_b, n, rest_out, out_stride);
      break;
    case 1:
      DotRowBlock<1, 8>(rest, b, b_stride, num_b, n, rest_out, out_stride);
      break;
    default:
      break;
  }
}

}  // namespace tf_sampled
