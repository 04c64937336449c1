// Per-example sampling for a whole batch, with each leaf's exact kernels
// computed once per batch: the descents of all queries run first, then the
// (query, leaf) pairs they reach are grouped by leaf and each leaf's class
// rows meet all of its queries in one register-blocked product (block_dot.h),
// instead of one dot-product loop per pair. Queries of a trained model
// crowd into the same leaves, so a leaf's rows are read once from memory for
// many queries. Same distribution and log q as KernelTree::Sample, and
// deterministic given the per-query seeds, whatever the thread split.
// Framework-free.
#ifndef TF_SAMPLED_CORE_KERNEL_TREE_BATCH_H_
#define TF_SAMPLED_CORE_KERNEL_TREE_BATCH_H_

#include <cstdint>

#include "custom_ops/core/kernel_tree.h"

namespace tf_sampled {

struct BatchSampleRequest {
  const float* inputs = nullptr;        // [batch, d]
  int64_t batch = 0;
  int64_t num_sampled = 0;              // S
  const int64_t* true_classes = nullptr;  // [batch, num_true], valid ids
  int64_t num_true = 0;                 // T
  const uint64_t* seeds = nullptr;      // [batch] one seed per query
  int64_t* ids = nullptr;               // out [batch, S]
  float* log_q = nullptr;               // out [batch, S]
  float* true_log_q = nullptr;          // out [batch, T]
  // a in [0, 1]: each query's proposal is a p_lu + (1 - a) q_tree(.|query),
  // TensorFlow's log-uniform over the tree's classes mixed in
  // (core/log_uniform_prior.h); Binomial(S, a) of a query's draws come from
  // p_lu, and every log q is the mixture's.
  double prior_weight = 0.0;
};

// Fills the request's outputs. Returns -1, or the index of a query for which
// a class row read was not finite (outputs are then unspecified).
int64_t SampleBatch(const KernelTree& tree, const BatchSampleRequest& request,
                    const ParallelRange& parallel);

}  // namespace tf_sampled

#endif  // TF_SAMPLED_CORE_KERNEL_TREE_BATCH_H_
