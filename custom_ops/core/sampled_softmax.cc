#include "custom_ops/core/sampled_softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "custom_ops/core/dot.h"
#include "custom_ops/core/multiversion.h"

namespace tf_sampled {
namespace {

// The class id of column j of example b (true columns first).
inline int64_t ColumnId(const SampledBatch& batch, int64_t b, int64_t j) {
  return j < batch.num_true
             ? batch.labels[b * batch.num_true + j]
             : batch.sampled[b * batch.num_sampled + (j - batch.num_true)];
}

inline bool IsTrueClass(const SampledBatch& batch, int64_t b, int64_t id) {
  const int64_t* labels = batch.labels + b * batch.num_true;
  for (int64_t t = 0; t < batch.num_true; ++t) {
    if (labels[t] == id) return true;
  }
  return false;
}

inline void Axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

}  // namespace

TF_SAMPLED_MULTIVERSION
void SampledSoftmaxForward(const SoftmaxTable& table, const SampledBatch& batch,
                           const SampledLossOptions& options, int64_t begin,
                           int64_t end, float* loss, float* logit_grads,
                           float* input_grads) {
  const int64_t d = table.d;
  const int64_t cols = batch.Columns();
  const float inv_true = 1.0f / static_cast<float>(batch.num_true);
  constexpr float kHit = -std::numeric_limits<float>::infinity();
  for (int64_t b = begin; b < end; ++b) {
    const float* h = batch.inputs + b * d;
    float* o = logit_grads + b * cols;  // logits first, their gradient after
    float max_logit = kHit;
    for (int64_t j = 0; j < cols; ++j) {
      if (j + 1 < cols) {
        // Rows are scattered over a table far larger than the caches.
        __builtin_prefetch(table.weights + ColumnId(batch, b, j + 1) * d);
      }
      const int64_t id = ColumnId(batch, b, j);
      float logit = DotFloat(h, table.weights + id * d, d);
      if (table.biases != nullptr) logit += table.biases[id];
      if (j < batch.num_true) {
        if (options.subtract_log_q_true) {
          logit -= batch.true_log_count[b * batch.num_true + j];
        }
      } else {
        logit -= batch.sampled_log_count[b * batch.num_sampled + (j - batch.num_true)];
        if (options.remove_accidental_hits && IsTrueClass(batch, b, id)) {
          logit = kHit;
        }
      }
      o[j] = logit;
      max_logit = std::max(max_logit, logit);
    }
    double sum = 0;
    for (int64_t j = 0; j < cols; ++j) sum += std::exp(double(o[j]) - max_logit);
    const double log_sum = max_logit + std::log(sum);
    double true_mean = 0;
    for (int64_t t = 0; t < batch.num_true; ++t) true_mean += o[t];
    loss[b] = static_cast<float>(log_sum - true_mean * inv_true);

    float* grad_h = input_grads + b * d;
    std::fill(grad_h, grad_h + d, 0.0f);
    for (int64_t j = 0; j < cols; ++j) {
      const float p = static_cast<float>(std::exp(double(o[j]) - log_sum));
      o[j] = j < batch.num_true ? p - inv_true : p;
      // Hits (p = 0) add nothing; the row is in cache from the logit pass.
      if (o[j] != 0.0f) Axpy(o[j], table.weights + ColumnId(batch, b, j) * d, grad_h, d);
    }
  }
}

void GroupColumnsByRow(const SampledBatch& batch, int64_t max_id,
                       RowGroups* groups) {
  const int64_t cols = batch.Columns();
  std::vector<int64_t> keys(batch.batch * cols);
  for (int64_t b = 0; b < batch.batch; ++b) {
    for (int64_t j = 0; j < cols; ++j) keys[b * cols + j] = ColumnId(batch, b, j);
  }
  GroupByKey(std::move(keys), max_id, groups);
}

TF_SAMPLED_MULTIVERSION
void AccumulateRowGradients(const RowGroups& groups, const SampledBatch& batch,
                            int64_t d, const float* loss_grad,
                            const float* logit_grads, int64_t begin, int64_t end,
                            float* row_grads, float* bias_grads) {
  const int64_t cols = batch.Columns();
  for (int64_t u = begin; u < end; ++u) {
    float* row = row_grads + u * d;
    std::fill(row, row + d, 0.0f);
    float bias = 0;
    for (int64_t k = groups.offsets[u]; k < groups.offsets[u + 1]; ++k) {
      const int64_t entry = groups.entries[k];
      const int64_t b = entry / cols;
      const float g = loss_grad[b] * logit_grads[entry];
      if (g == 0.0f) continue;
      Axpy(g, batch.inputs + b * d, row, d);
      bias += g;
    }
    bias_grads[u] = bias;
  }
}

}  // namespace tf_sampled
