// An optimizer step on the rows of a table that a sparse gradient touches:
// duplicate rows of the gradient summed first (as the dense gradient sums
// them), then SGD, lazy Adam or Adagrad applied to each distinct row once.
// Framework-free: the op kernel groups the rows and splits the groups over
// threads (distinct rows, so no two threads write one row).
#ifndef TF_SAMPLED_CORE_SPARSE_ROW_UPDATE_H_
#define TF_SAMPLED_CORE_SPARSE_ROW_UPDATE_H_

#include <cstdint>

#include "custom_ops/core/group_by_key.h"

namespace tf_sampled {

enum class RowRule {
  kSgd,       // var -= lr * g
  kLazyAdam,  // m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
              // var -= lr * m / (sqrt(v) + epsilon)   (lr: bias-corrected)
  kAdagrad,   // acc += g^2; var -= lr * g / sqrt(acc + epsilon)
};

struct RowRuleParams {
  float lr = 0.0f;
  float beta1 = 0.0f;
  float beta2 = 0.0f;
  float epsilon = 0.0f;
};

// The table and its optimizer slots, each [num_rows, row_size] row-major:
// slot1 is Adam's m or Adagrad's accumulator, slot2 Adam's v (null where the
// rule has no such slot).
struct RowTable {
  float* var = nullptr;
  float* slot1 = nullptr;
  float* slot2 = nullptr;
  int64_t row_size = 0;
};

// Applies `rule` to rows groups.ids[g], g in [begin, end), with the summed
// gradient rows of each group's entries (grads is [n, row_size]).
void ApplyRowGroups(RowRule rule, const RowRuleParams& params,
                    const KeyGroups& groups, const float* grads,
                    const RowTable& table, int64_t begin, int64_t end);

}  // namespace tf_sampled

#endif  // TF_SAMPLED_CORE_SPARSE_ROW_UPDATE_H_
