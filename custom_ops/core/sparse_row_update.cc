#include "custom_ops/core/sparse_row_update.h"

#include <cmath>
#include <vector>

#include "custom_ops/core/multiversion.h"

namespace tf_sampled {
namespace {

// g = sum of the group's gradient rows; a single row is used in place.
const float* GroupGradient(const KeyGroups& groups, int64_t group,
                           const float* grads, int64_t row_size,
                           std::vector<float>* sum) {
  const int64_t first = groups.offsets[group];
  const int64_t last = groups.offsets[group + 1];
  if (last - first == 1) return grads + groups.entries[first] * row_size;
  sum->assign(row_size, 0.0f);
  float* out = sum->data();
  for (int64_t e = first; e < last; ++e) {
    const float* row = grads + groups.entries[e] * row_size;
    for (int64_t j = 0; j < row_size; ++j) out[j] += row[j];
  }
  return out;
}

// Scalars by value and __restrict rows: a store through a row pointer could
// otherwise alias the parameters and the other rows, which keeps the compiler
// from vectorizing (sqrt vectorizes because the build passes -fno-math-errno).
#define TF_SAMPLED_ROW_LOOP TF_SAMPLED_MULTIVERSION

TF_SAMPLED_ROW_LOOP
void SgdRow(float lr, const float* __restrict g, float* __restrict var,
            int64_t n) {
  for (int64_t j = 0; j < n; ++j) var[j] -= lr * g[j];
}

TF_SAMPLED_ROW_LOOP
void LazyAdamRow(float lr, float beta1, float beta2, float epsilon,
                 const float* __restrict g, float* __restrict var,
                 float* __restrict m, float* __restrict v, int64_t n) {
  const float one_minus_b1 = 1.0f - beta1, one_minus_b2 = 1.0f - beta2;
  for (int64_t j = 0; j < n; ++j) {
    const float m_j = beta1 * m[j] + one_minus_b1 * g[j];
    const float v_j = beta2 * v[j] + one_minus_b2 * (g[j] * g[j]);
    m[j] = m_j;
    v[j] = v_j;
    var[j] -= lr * m_j / (std::sqrt(v_j) + epsilon);
  }
}

TF_SAMPLED_ROW_LOOP
void AdagradRow(float lr, float epsilon, const float* __restrict g,
                float* __restrict var, float* __restrict acc, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const float acc_j = acc[j] + g[j] * g[j];
    acc[j] = acc_j;
    var[j] -= lr * g[j] / std::sqrt(acc_j + epsilon);
  }
}

#undef TF_SAMPLED_ROW_LOOP

}  // namespace

void ApplyRowGroups(RowRule rule, const RowRuleParams& params,
                    const KeyGroups& groups, const float* grads,
                    const RowTable& table, int64_t begin, int64_t end) {
  const int64_t n = table.row_size;
  std::vector<float> sum;
  for (int64_t group = begin; group < end; ++group) {
    const float* g = GroupGradient(groups, group, grads, n, &sum);
    const int64_t offset = groups.ids[group] * n;
    switch (rule) {
      case RowRule::kSgd:
        SgdRow(params.lr, g, table.var + offset, n);
        break;
      case RowRule::kLazyAdam:
        LazyAdamRow(params.lr, params.beta1, params.beta2, params.epsilon, g,
                    table.var + offset, table.slot1 + offset,
                    table.slot2 + offset, n);
        break;
      case RowRule::kAdagrad:
        AdagradRow(params.lr, params.epsilon, g, table.var + offset,
                   table.slot1 + offset, n);
        break;
    }
  }
}

}  // namespace tf_sampled
