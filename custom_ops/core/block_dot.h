// Many dot products at once, register-blocked: each loaded slice of one row
// feeds several accumulators, so the loop runs at the FMA units' rate instead
// of waiting on loads or on one accumulator's add latency (what a loop of
// DotFloat calls does). The in-leaf kernels of a batch (queries x a leaf's
// class rows) and the class features of a refresh (class rows x projections)
// are both such products. Framework-free.
#ifndef TF_SAMPLED_CORE_BLOCK_DOT_H_
#define TF_SAMPLED_CORE_BLOCK_DOT_H_

#include <cstdint>

namespace tf_sampled {

// out[i * out_stride + j] = a_rows[i] . b[j * b_stride : j * b_stride + n]
// for i < num_a, j < num_b: rows of `a` anywhere (gathered), rows of `b`
// evenly strided (a leaf's consecutive class rows, a projection matrix).
void DotRows(const float* const* a_rows, int64_t num_a, const float* b,
             int64_t b_stride, int64_t num_b, int64_t n, float* out,
             int64_t out_stride);

// out[i * out_stride + j] = a[i * a_stride : i * a_stride + n] . bt[:, j] for
// i < num_a, j < num_b, where bt is [n, num_b] (b transposed): each step
// broadcasts one value of a row against consecutive columns, so no dot
// product ends in a horizontal sum. For a `b` used often enough to transpose
// once (a projection matrix against many class rows).
void DotRowsTransposed(const float* a, int64_t a_stride, int64_t num_a,
                       const float* bt, int64_t num_b, int64_t n, float* out,
                       int64_t out_stride);

}  // namespace tf_sampled

#endif  // TF_SAMPLED_CORE_BLOCK_DOT_H_
