// Greedy top-down fit of the auxiliary tree (Bamler & Mandt 2020, sec. 4),
// framework-free.
//
// Level by level from the root, each internal node v gets the classes of its
// subtree (as many as it has leaves) and the examples of those classes, and
// alternates
//   (1) Newton steps on its ridge logistic regression: target "right" for the
//       examples of classes currently sent right, penalty l2 (|w|^2 + b^2);
//   (2) balanced re-assignment: Delta_y = sum over class y's examples of the
//       node logit (= the log-likelihood gain of sending y right), and the
//       top LeavesUnder(2v+1) classes by Delta go right.
// The first assignment ranks classes along the top eigenvector of the
// covariance of their per-class feature sums. Every example is processed at
// one node per level, so the cost is O(N log C * passes * k^2) plus
// O(C log C) for the re-assignments. Classes without examples rank with
// Delta = 0 (mid-field); a node with no examples splits its classes
// uniformly (b = log(n_right / n_left)).
#ifndef TF_SAMPLED_CORE_ADVERSARIAL_TREE_FIT_H_
#define TF_SAMPLED_CORE_ADVERSARIAL_TREE_FIT_H_

#include <cstdint>
#include <functional>

#include "custom_ops/core/parallel_range.h"

namespace tf_sampled {

struct AdversarialTreeFitOptions {
  int64_t num_iterations = 2;  // re-assignment rounds per node
  int64_t newton_steps = 2;    // Newton steps before each re-assignment
  double l2 = 0.1;             // ridge on (w, b), as in the paper
};

// Fits the tree to `n` examples: projected features [n, k] (finite) and
// labels [n] in [0, num_classes), num_classes >= 2. Writes params
// [num_classes, k + 1] (row 0 zero), leaf_of_class and class_of_leaf
// [num_classes] (inverse permutations). An empty parallel_for runs serially.
void FitAdversarialTree(const float* features, const int64_t* labels, int64_t n, int64_t k,
                        int64_t num_classes, const AdversarialTreeFitOptions& options,
                        const ParallelRange& parallel_for, float* params,
                        int64_t* leaf_of_class, int64_t* class_of_leaf);

}  // namespace tf_sampled

#endif  // TF_SAMPLED_CORE_ADVERSARIAL_TREE_FIT_H_
