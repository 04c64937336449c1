// The auxiliary model of Bamler & Mandt (ICLR 2020), framework-free: a
// balanced binary probabilistic tree over the classes, one class per leaf.
//
// Layout: a heap over C leaves (C = num_classes >= 2): internal nodes 1..C-1,
// node v has children 2v (left) and 2v+1 (right), leaf slot s is node C + s.
// This is a full binary tree for any C (leaves sit on at most two depths,
// ceil(log2 C) at most), so no padding leaves are needed and the leaf
// probabilities sum to 1 by construction. Classes map to slots through a
// permutation (leaf_of_class / class_of_leaf) chosen by the fit.
//
// Node v goes right with probability sigma(w_v . x + b_v), where x is the
// k-dim projected input and params row v = [w_v (k), b_v]. Row 0 is unused.
// log p_n(y|x) = sum over y's path of log sigma(+-(w_v . x + b_v)).
#ifndef TF_SAMPLED_CORE_ADVERSARIAL_TREE_H_
#define TF_SAMPLED_CORE_ADVERSARIAL_TREE_H_

#include <cmath>
#include <cstdint>
#include <vector>

#include "custom_ops/core/random.h"

namespace tf_sampled {

// log sigma(z), stable for any z (never -inf for finite z in double).
inline double LogSigmoid(double z) {
  return z >= 0 ? -std::log1p(std::exp(-z)) : z - std::log1p(std::exp(z));
}

// Leaves under heap node `node` of a tree with `num_leaves` leaves.
int64_t LeavesUnder(int64_t node, int64_t num_leaves);

// A fitted tree, read in place. `params` is [C, k + 1]; `class_of_leaf` and
// `leaf_of_class` are [C] (inverse permutations; only the entries a call
// reads are checked, so a corrupt table gives an error, not a wild read).
struct AdversarialTreeView {
  int64_t num_classes = 0;
  int64_t dim = 0;  // k
  const float* params = nullptr;
  const int64_t* class_of_leaf = nullptr;
  const int64_t* leaf_of_class = nullptr;

  // Logit of internal node `node` for projected input x [k].
  double NodeLogit(int64_t node, const float* x) const;
};

// What a query found wrong in the tree it read (only read entries are
// checked: a full check would cost O(C k) per call).
enum class AdversarialTreeStatus {
  kOk,
  kNonFiniteLogit,    // a node's params (with this input) give NaN/Inf
  kBadClassOfLeaf,    // class_of_leaf holds an id outside [0, C)
  kBadLeafOfClass,    // leaf_of_class holds a slot outside [0, C)
};

// Per-query scratch, reused by one thread.
struct AdversarialQueryState {
  struct Pending {
    int64_t node;
    int64_t count;
    double log_p;
  };
  std::vector<Pending> stack;
};

// Draws `num_sampled` classes iid from p_n(.|x) by one descent that splits
// the draws between children (a binomial per node visited), in random
// order, with their exact log p_n.
AdversarialTreeStatus AdversarialTreeSample(const AdversarialTreeView& tree,
                                            const float* x, int64_t num_sampled,
                                            Random* rng, AdversarialQueryState* state,
                                            int64_t* ids, float* log_q);

// log p_n(classes[i] | x) for `n` class ids in [0, C).
AdversarialTreeStatus AdversarialTreeLogProb(const AdversarialTreeView& tree,
                                             const float* x, const int64_t* classes,
                                             int64_t n, double* log_q);

}  // namespace tf_sampled

#endif  // TF_SAMPLED_CORE_ADVERSARIAL_TREE_H_
