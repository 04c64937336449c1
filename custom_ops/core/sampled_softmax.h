// The per-example sampled softmax loss, fused: logits of each example's true
// and sampled classes read in place from the class table, the loss, and what
// its gradient needs, in one pass over the rows. Framework-free.
//
// For example b with true classes y_1..y_T and candidates s_1..s_S:
//   o_j = h_b . w_j + bias_j - c_j   (c_j the log expected count of column j,
//                                     subtracted from true columns only when
//                                     subtract_log_q_true)
//   accidental hits (s_j equal to one of the y's) are dropped (p_j = 0)
//   loss_b = logsumexp(o) - (1/T) sum_t o_t
// and the gradient of loss_b w.r.t. o_j is p_j - [j < T] / T.
#ifndef TF_SAMPLED_CORE_SAMPLED_SOFTMAX_H_
#define TF_SAMPLED_CORE_SAMPLED_SOFTMAX_H_

#include <cstdint>
#include <vector>

#include "custom_ops/core/group_by_key.h"

namespace tf_sampled {

// The class table, read in place: weights [num_classes, d], biases
// [num_classes] or nullptr.
struct SoftmaxTable {
  const float* weights = nullptr;
  const float* biases = nullptr;
  int64_t num_classes = 0;
  int64_t d = 0;
};

// One batch of examples and their candidates (all row-major).
struct SampledBatch {
  const float* inputs = nullptr;            // [batch, d]
  const int64_t* labels = nullptr;          // [batch, num_true]
  const int64_t* sampled = nullptr;         // [batch, num_sampled]
  const float* sampled_log_count = nullptr; // [batch, num_sampled]
  const float* true_log_count = nullptr;    // [batch, num_true]
  int64_t batch = 0;
  int64_t num_true = 0;
  int64_t num_sampled = 0;

  int64_t Columns() const { return num_true + num_sampled; }
};

struct SampledLossOptions {
  bool remove_accidental_hits = true;
  bool subtract_log_q_true = true;
};

// Examples [begin, end): loss[b]; logit_grads[b, T + S] = d loss_b / d o_j
// (true columns first); input_grads[b, d] = d loss_b / d h_b.
void SampledSoftmaxForward(const SoftmaxTable& table, const SampledBatch& batch,
                           const SampledLossOptions& options, int64_t begin,
                           int64_t end, float* loss, float* logit_grads,
                           float* input_grads);

// The distinct class ids of a batch's columns and, for each, the columns
// (flat indices b * (T + S) + j) that read its row, ids ascending, so row
// gradients can be summed per row without atomics.
using RowGroups = KeyGroups;

// Groups the columns of `batch` (labels first, then sampled, per example) by
// class id. ids must be in [0, max_id].
void GroupColumnsByRow(const SampledBatch& batch, int64_t max_id,
                       RowGroups* groups);

// Row gradients of groups [begin, end): for group u,
//   row_grads[u, :] = sum over its columns (b, j) of g_bj h_b,
//   bias_grads[u]   = sum over its columns of g_bj,
// where g_bj = loss_grad[b] * logit_grads[b, j] and d is the width of h.
void AccumulateRowGradients(const RowGroups& groups, const SampledBatch& batch,
                            int64_t d, const float* loss_grad,
                            const float* logit_grads, int64_t begin, int64_t end,
                            float* row_grads, float* bias_grads);

}  // namespace tf_sampled

#endif  // TF_SAMPLED_CORE_SAMPLED_SOFTMAX_H_
