// The kernel sampling tree of Blanc & Rendle (2018), framework-free.
//
// Classes are grouped into leaves of `leaf_size` consecutive ids. The tree is
// stored as a heap over the N leaves: nodes 1..2N-1, node i has children 2i
// and 2i+1, leaf l is node N+l. Every node holds z(node) = sum of phi(y_i)
// over its classes (doubles, one row of F per node; row 0 is unused). This
// layout is a full binary tree for any N, with no padding.
//
// A query descends from the root choosing a child with probability
// m(left) / (m(left) + m(right)), m = phi(x).z(child) for the kernel maps
// (LeftMassShare in feature_map.h compares m for every summary), clamped into
// [kMinBranchProb, 1 - kMinBranchProb] (random Fourier masses can be negative,
// positive masses can underflow), then draws a class inside the leaf from the
// map's exact kernel. The returned log q is that of this clamped process,
// exactly, whatever the node sums hold (stale or not).
#ifndef TF_SAMPLED_CORE_KERNEL_TREE_H_
#define TF_SAMPLED_CORE_KERNEL_TREE_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "custom_ops/core/feature_map.h"
#include "custom_ops/core/host_device.h"
#include "custom_ops/core/parallel_range.h"
#include "custom_ops/core/random.h"

namespace tf_sampled {

constexpr double kMinBranchProb = 1e-6;

struct TreeShape {
  int64_t num_classes = 0;
  int64_t leaf_size = 1;

  // (Written so that no intermediate overflows, whatever leaf_size is.)
  TFS_HOST_DEVICE int64_t NumLeaves() const {
    return num_classes / leaf_size + (num_classes % leaf_size != 0);
  }
  // Classes in the largest leaf.
  TFS_HOST_DEVICE int64_t MaxLeafSize() const {
    return leaf_size < num_classes ? leaf_size : num_classes;
  }
  // Rows of the node-sum matrix (row 0 unused).
  TFS_HOST_DEVICE int64_t NumNodeRows() const { return 2 * NumLeaves(); }
  TFS_HOST_DEVICE int64_t LeafOf(int64_t class_id) const { return class_id / leaf_size; }
  TFS_HOST_DEVICE int64_t LeafBegin(int64_t leaf) const { return leaf * leaf_size; }
  TFS_HOST_DEVICE int64_t LeafEnd(int64_t leaf) const {
    const int64_t end = (leaf + 1) * leaf_size;
    return end < num_classes ? end : num_classes;
  }
  TFS_HOST_DEVICE int64_t NodeOfLeaf(int64_t leaf) const { return NumLeaves() + leaf; }
};

// Sum of phi(y) over the classes of one leaf, from augmented rows [C, dim],
// into leaf_sum [F]. Returns false if a row or a feature is not finite.
bool SumLeafFeatures(const FeatureMapSpec& spec, const TreeShape& shape,
                     const float* rows, int64_t leaf, double* leaf_sum,
                     FeatureScratch* scratch, std::vector<double>* features);

// Fills internal nodes N-1..1 from the leaf rows of `nodes` [2N, F].
void SumInternalNodes(const TreeShape& shape, int64_t num_features,
                      double* nodes);

// phi(new) - phi(old) for `n` augmented rows [n, dim] into deltas [n, F].
// Returns false if a row or a feature is not finite.
bool RowFeatureDeltas(const FeatureMapSpec& spec, const float* old_rows,
                      const float* new_rows, int64_t n, double* deltas,
                      FeatureScratch* scratch, std::vector<double>* features);

// Applies per-row deltas [n, F] of the distinct ascending classes `ids` to
// `nodes` [2N, F] in place: each leaf's sum gets its rows' deltas, then every
// internal node on their paths is set to the sum of its children, deepest
// first, as a build sums them (so internal nodes carry no drift of their
// own). O((n + touched nodes) F); each leaf, and each depth's nodes, are
// independent and split over `parallel`.
void ApplyRowDeltas(const TreeShape& shape, int64_t num_features,
                    const int64_t* ids, const double* row_deltas, int64_t n,
                    double* nodes, const ParallelRange& parallel);

// The nodes on the paths of classes `ids` [n] (leaf to root), distinct and
// ascending.
void PathNodes(const TreeShape& shape, const int64_t* ids, int64_t n,
               std::vector<int64_t>* node_ids);

// Adds per-row deltas [n, F] (rows of classes `ids`) to every node on their
// paths: node_deltas [node_ids.size(), F] (zeroed by the caller) for the
// node_ids of PathNodes. Bottom-up (a node's delta is its rows' or its
// children's sum), so the work is (n + number of nodes) * F.
void AccumulatePathDeltas(const TreeShape& shape, int64_t num_features,
                          const int64_t* ids, const double* row_deltas, int64_t n,
                          const std::vector<int64_t>& node_ids,
                          double* node_deltas);

// PathNodes and AccumulatePathDeltas into vectors.
void AggregatePathDeltas(const TreeShape& shape, int64_t num_features,
                         const int64_t* ids, const double* row_deltas,
                         int64_t n, std::vector<int64_t>* node_ids,
                         std::vector<double>* node_deltas);

// The current class table: exact in-leaf kernels read it in place.
struct ClassTable {
  const float* embeddings = nullptr;  // [C, d]
  const float* biases = nullptr;      // [C] or null
  int64_t d = 0;
};

// A leaf reached by a query: `count` of its draws end there (0 for a leaf
// visited only for a given class's log q), log P(reach leaf) = log_p.
struct LeafDraws {
  int64_t leaf;
  int64_t count;
  double log_p;
};

// Per-query state, reused across queries by one thread.
struct QueryState {
  std::vector<double> phi;      // query features (up to a positive factor)
  std::vector<double> scratch;  // num_omega doubles
  std::vector<float> x;         // augmented query [h, 1] or h, length dim
  double x_sq = 0;
  std::vector<float> dots;              // leaf_size floats
  std::vector<float> leaf_log_kernel;   // leaf_size floats
  std::vector<float> cdf;               // leaf_size floats
  struct Pending {
    int64_t node;
    int64_t count;
    double p;  // P(reach node)
  };
  std::vector<Pending> stack;
  std::vector<LeafDraws> leaves;
  std::vector<int64_t> order;
};

// A leaf's exact log kernels for one query, normalised: log q of class
// begin + i inside the leaf is log_kernel[i] - log_norm, and cdf holds the
// running sums of exp(log_kernel - max) that a draw searches.
struct LeafKernels {
  int64_t begin = 0;
  int64_t size = 0;
  const float* log_kernel = nullptr;
  const float* cdf = nullptr;
  double log_norm = 0;
};

// Draws come out of the tree grouped by leaf; a uniform shuffle of the n
// draws (ids and log q together) makes the sequence exactly iid (its law
// given the leaf counts is uniform over orders).
void ShuffleDraws(int64_t n, Random* rng, int64_t* ids, float* log_q);

class KernelTree {
 public:
  // `nodes` is [shape.NumNodeRows(), spec.NumFeatures()].
  KernelTree(const FeatureMapSpec& spec, const TreeShape& shape,
             const double* nodes, const ClassTable& table);

  int64_t num_features() const { return num_features_; }

  // Sizes the state's buffers.
  void InitState(QueryState* state) const;

  // Sets the query from an input row h [d].
  void SetQuery(const float* h, QueryState* state) const;

  // Sets the batch-shared query for inputs h [B, d]. Kernel maps: node
  // masses of the mixture (1/B) sum_b phi(x_b) / (phi(x_b).z(root)), which is
  // exactly the mixture of the per-example leaf distributions for
  // non-negative features, and in-leaf kernels at the mean augmented input.
  // Gaussian moments: the query of the mean input.
  // Built in two steps so that the per-input part can run in parallel:
  // AddToMixture over disjoint ranges of inputs (each with its own sums and
  // scratch state), then SetMixtureQuery on the merged sums.
  struct MixtureSums {
    std::vector<double> weighted;  // sum_b phi(x_b) / (phi(x_b).z(root))
    std::vector<double> plain;     // sum_b phi(x_b)
    std::vector<double> x;         // sum_b x_b (augmented)
    double total_weight = 0;
    int64_t count = 0;
    void Merge(const MixtureSums& other);
  };
  MixtureSums NewMixtureSums() const;
  void AddToMixture(const float* h, int64_t begin, int64_t end,
                    QueryState* scratch, MixtureSums* sums) const;
  void SetMixtureQuery(const MixtureSums& sums, QueryState* state) const;

  // Draws `num_sampled` classes iid from q(.|query) by splitting the draws
  // down the tree (one binomial per node visited), in random order. Returns
  // false if a class row read on the way is not finite.
  bool Sample(QueryState* state, int64_t num_sampled, Random* rng,
              int64_t* ids, float* log_q) const;

  // log q(c|query) for `n` valid class ids.
  bool LogProb(QueryState* state, const int64_t* classes, int64_t n,
               float* log_q) const;

  // The two halves of Sample, for callers that evaluate leaves in batches
  // (kernel_tree_batch.h): the descent splits `num_sampled` draws down the
  // tree (one binomial per node visited) and appends the leaves reached to
  // `leaves`; then each leaf's kernels are computed and its draws made.
  void Descend(QueryState* state, int64_t num_sampled, Random* rng,
               std::vector<LeafDraws>* leaves) const;
  // log P(reach leaf).
  double LeafLogProb(const QueryState& state, int64_t leaf) const;
  // Exact log kernels of the leaf's classes for query x (augmented, with
  // squared norm x_sq) from their dot products with the class embeddings
  // (`dots`, no bias), into `log_kernel` and `cdf` (leaf size floats each).
  // Returns false if a row or a kernel is not finite.
  bool LeafKernelsFromDots(const float* x, double x_sq, int64_t leaf,
                           const float* dots, float* log_kernel, float* cdf,
                           LeafKernels* out) const;
  // `count` iid draws from the leaf's kernels: ids and log q = log_p +
  // log kernel - log norm.
  static void DrawInLeaf(const LeafKernels& kernels, int64_t count,
                         double log_p, Random* rng, int64_t* ids,
                         float* log_q);

  const ClassTable& table() const { return table_; }
  const TreeShape& shape() const { return shape_; }
  const FeatureMapSpec& spec() const { return spec_; }

 private:
  // P(left) at internal node `node`, clamped. Paths multiply these (one log
  // per leaf reached, not two per node): a path's probability is at least
  // kMinBranchProb^depth, far above the smallest double for any tree that
  // fits in memory.
  double LeftProb(const QueryState& state, int64_t node) const;
  // The leaf's kernels for the state's query, in the state's buffers.
  bool LeafLogKernels(QueryState* state, int64_t leaf, LeafKernels* out) const;

  FeatureMapSpec spec_;
  TreeShape shape_;
  const double* nodes_;
  ClassTable table_;
  int64_t num_features_;
  bool need_row_norms_;
  bool log_kernel_is_scaled_dot_;  // no per-class transcendental
};

}  // namespace tf_sampled

#endif  // TF_SAMPLED_CORE_KERNEL_TREE_H_
