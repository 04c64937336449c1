#include "custom_ops/core/adversarial_tree.h"

#include <algorithm>
#include <utility>

#include "custom_ops/core/dot.h"

namespace tf_sampled {

int64_t LeavesUnder(int64_t node, int64_t num_leaves) {
  // Nodes of the subtree on each depth form one contiguous range of heap
  // ids [lo, hi]; count those in the leaf range [C, 2C).
  int64_t count = 0;
  for (int64_t lo = node, hi = node; lo < 2 * num_leaves;
       lo = 2 * lo, hi = 2 * hi + 1) {
    const int64_t a = std::max(lo, num_leaves);
    const int64_t b = std::min(hi, 2 * num_leaves - 1);
    if (b >= a) count += b - a + 1;
    if (hi >= 2 * num_leaves) break;  // deeper levels lie beyond the heap
  }
  return count;
}

double AdversarialTreeView::NodeLogit(int64_t node, const float* x) const {
  const float* row = params + node * (dim + 1);
  return double(DotFloat(row, x, dim)) + row[dim];
}

AdversarialTreeStatus AdversarialTreeSample(const AdversarialTreeView& tree,
                                            const float* x, int64_t num_sampled,
                                            Random* rng, AdversarialQueryState* state,
                                            int64_t* ids, float* log_q) {
  const int64_t c = tree.num_classes;
  int64_t filled = 0;
  state->stack.clear();
  state->stack.push_back({1, num_sampled, 0.0});
  while (!state->stack.empty()) {
    const AdversarialQueryState::Pending item = state->stack.back();
    state->stack.pop_back();
    if (item.node >= c) {
      const int64_t id = tree.class_of_leaf[item.node - c];
      if (id < 0 || id >= c) return AdversarialTreeStatus::kBadClassOfLeaf;
      for (int64_t k = 0; k < item.count; ++k) {
        ids[filled] = id;
        log_q[filled] = static_cast<float>(item.log_p);
        ++filled;
      }
      continue;
    }
    const double z = tree.NodeLogit(item.node, x);
    if (!std::isfinite(z)) return AdversarialTreeStatus::kNonFiniteLogit;
    const double log_right = LogSigmoid(z);
    const double log_left = log_right - z;  // log sigma(-z), without a 2nd log
    const double p_right = std::exp(log_right);
    int64_t right = 0;
    for (int64_t k = 0; k < item.count; ++k) right += rng->Uniform() < p_right;
    if (item.count - right > 0) {
      state->stack.push_back(
          {2 * item.node, item.count - right, item.log_p + log_left});
    }
    if (right > 0) {
      state->stack.push_back({2 * item.node + 1, right, item.log_p + log_right});
    }
  }
  // Draws come out grouped by leaf; a uniform shuffle makes the sequence an
  // iid sequence (given the counts, its law is uniform over orders).
  for (int64_t i = num_sampled - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(rng->Below(uint64_t(i) + 1));
    std::swap(ids[i], ids[j]);
    std::swap(log_q[i], log_q[j]);
  }
  return AdversarialTreeStatus::kOk;
}

AdversarialTreeStatus AdversarialTreeLogProb(const AdversarialTreeView& tree,
                                             const float* x, const int64_t* classes,
                                             int64_t n, double* log_q) {
  const int64_t c = tree.num_classes;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t slot = tree.leaf_of_class[classes[i]];
    if (slot < 0 || slot >= c) return AdversarialTreeStatus::kBadLeafOfClass;
    double log_p = 0;
    for (int64_t node = c + slot; node > 1; node >>= 1) {
      const double z = tree.NodeLogit(node >> 1, x);
      if (!std::isfinite(z)) return AdversarialTreeStatus::kNonFiniteLogit;
      log_p += LogSigmoid((node & 1) ? z : -z);
    }
    log_q[i] = log_p;
  }
  return AdversarialTreeStatus::kOk;
}

}  // namespace tf_sampled
