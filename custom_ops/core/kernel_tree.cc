#include "custom_ops/core/kernel_tree.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "custom_ops/core/block_dot.h"
#include "custom_ops/core/dot.h"
#include "custom_ops/core/group_by_key.h"
#include "custom_ops/core/multiversion.h"
#include "custom_ops/core/simd.h"

namespace tf_sampled {

namespace {

// Rows per ClassFeatures call: enough for the blocked product to pay, few
// enough that a leaf of any size needs bounded scratch.
constexpr int64_t kFeatureChunk = 64;

// An internal node's sum from its children's, as a build and a refresh set it.
inline void SumChildren(int64_t node, int64_t num_features, double* nodes) {
  double* out = nodes + node * num_features;
  const double* left = nodes + 2 * node * num_features;
  const double* right = left + num_features;
  for (int64_t j = 0; j < num_features; ++j) out[j] = left[j] + right[j];
}

}  // namespace

bool SumLeafFeatures(const FeatureMapSpec& spec, const TreeShape& shape,
                     const float* rows, int64_t leaf, double* leaf_sum,
                     FeatureScratch* scratch, std::vector<double>* features) {
  const int64_t num_features = spec.NumFeatures();
  std::fill(leaf_sum, leaf_sum + num_features, 0.0);
  for (int64_t c = shape.LeafBegin(leaf); c < shape.LeafEnd(leaf); c += kFeatureChunk) {
    const int64_t n = std::min(kFeatureChunk, shape.LeafEnd(leaf) - c);
    features->resize(n * num_features);
    if (!ClassFeatures(spec, rows + c * spec.dim, n, features->data(), scratch)) {
      return false;
    }
    for (int64_t i = 0; i < n; ++i) {
      const double* f = features->data() + i * num_features;
      for (int64_t j = 0; j < num_features; ++j) leaf_sum[j] += f[j];
    }
  }
  return true;
}

void SumInternalNodes(const TreeShape& shape, int64_t num_features,
                      double* nodes) {
  for (int64_t node = shape.NumLeaves() - 1; node >= 1; --node) {
    SumChildren(node, num_features, nodes);
  }
}

bool RowFeatureDeltas(const FeatureMapSpec& spec, const float* old_rows,
                      const float* new_rows, int64_t n, double* deltas,
                      FeatureScratch* scratch, std::vector<double>* features) {
  const int64_t num_features = spec.NumFeatures();
  features->resize(n * num_features);
  if (!ClassFeatures(spec, new_rows, n, deltas, scratch) ||
      !ClassFeatures(spec, old_rows, n, features->data(), scratch)) {
    return false;
  }
  for (int64_t j = 0; j < n * num_features; ++j) deltas[j] -= (*features)[j];
  return true;
}

void PathNodes(const TreeShape& shape, const int64_t* ids, int64_t n,
               std::vector<int64_t>* node_ids) {
  std::vector<int64_t> nodes;
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t node = shape.NodeOfLeaf(shape.LeafOf(ids[r])); node >= 1;
         node >>= 1) {
      nodes.push_back(node);
    }
  }
  KeyGroups groups;
  GroupByKey(std::move(nodes), shape.NumNodeRows() - 1, &groups);
  *node_ids = std::move(groups.ids);
}

void AccumulatePathDeltas(const TreeShape& shape, int64_t num_features,
                          const int64_t* ids, const double* row_deltas, int64_t n,
                          const std::vector<int64_t>& node_ids,
                          double* node_deltas) {
  const auto index_of = [&](int64_t node) {
    return std::lower_bound(node_ids.begin(), node_ids.end(), node) - node_ids.begin();
  };
  for (int64_t r = 0; r < n; ++r) {
    double* out = node_deltas +
                  index_of(shape.NodeOfLeaf(shape.LeafOf(ids[r]))) * num_features;
    const double* in = row_deltas + r * num_features;
    for (int64_t j = 0; j < num_features; ++j) out[j] += in[j];
  }
  // A parent's id is below its children's: in descending order, every node
  // is complete before it is added to its parent.
  for (int64_t i = static_cast<int64_t>(node_ids.size()) - 1; i >= 0; --i) {
    if (node_ids[i] <= 1) continue;
    double* out = node_deltas + index_of(node_ids[i] >> 1) * num_features;
    const double* in = node_deltas + i * num_features;
    for (int64_t j = 0; j < num_features; ++j) out[j] += in[j];
  }
}

void ApplyRowDeltas(const TreeShape& shape, int64_t num_features,
                    const int64_t* ids, const double* row_deltas, int64_t n,
                    double* nodes, const ParallelRange& parallel) {
  // The ids ascend, so each leaf's rows are consecutive: leaf_begin[l] is
  // the first row of the l-th touched leaf, level[l] its node.
  std::vector<int64_t> leaf_begin, level;
  for (int64_t r = 0; r < n; ++r) {
    if (r == 0 || shape.LeafOf(ids[r]) != shape.LeafOf(ids[r - 1])) {
      leaf_begin.push_back(r);
      level.push_back(shape.NodeOfLeaf(shape.LeafOf(ids[r])));
    }
  }
  const int64_t num_touched = level.size();
  leaf_begin.push_back(n);
  parallel(num_touched, num_features * (1 + n / std::max<int64_t>(num_touched, 1)),
           [&](int64_t begin, int64_t end) {
             for (int64_t l = begin; l < end; ++l) {
               double* out = nodes + level[l] * num_features;
               for (int64_t r = leaf_begin[l]; r < leaf_begin[l + 1]; ++r) {
                 const double* in = row_deltas + r * num_features;
                 for (int64_t j = 0; j < num_features; ++j) out[j] += in[j];
               }
             }
           });
  // The internal nodes above them: parents of an ascending list ascend too.
  std::vector<int64_t> internal;
  while (!level.empty()) {
    std::vector<int64_t> parents;
    for (const int64_t node : level) {
      if (node >= 2 && (parents.empty() || parents.back() != node >> 1)) {
        parents.push_back(node >> 1);
      }
    }
    internal.insert(internal.end(), parents.begin(), parents.end());
    level = std::move(parents);
  }
  std::sort(internal.begin(), internal.end());
  internal.erase(std::unique(internal.begin(), internal.end()), internal.end());
  // Depth is the id's bit length, so each depth is a contiguous range of
  // `internal`; a depth's nodes read only the deeper ones, already summed.
  const auto depth = [](int64_t node) { return 63 - __builtin_clzll(node); };
  for (int64_t hi = internal.size(); hi > 0;) {
    int64_t lo = hi - 1;
    while (lo > 0 && depth(internal[lo - 1]) == depth(internal[hi - 1])) --lo;
    parallel(hi - lo, 2 * num_features, [&](int64_t begin, int64_t end) {
      for (int64_t i = lo + begin; i < lo + end; ++i) SumChildren(internal[i], num_features, nodes);
    });
    hi = lo;
  }
}

void AggregatePathDeltas(const TreeShape& shape, int64_t num_features,
                         const int64_t* ids, const double* row_deltas,
                         int64_t n, std::vector<int64_t>* node_ids,
                         std::vector<double>* node_deltas) {
  PathNodes(shape, ids, n, node_ids);
  node_deltas->assign(node_ids->size() * num_features, 0.0);
  AccumulatePathDeltas(shape, num_features, ids, row_deltas, n, *node_ids,
                       node_deltas->data());
}

KernelTree::KernelTree(const FeatureMapSpec& spec, const TreeShape& shape,
                       const double* nodes, const ClassTable& table)
    : spec_(spec),
      shape_(shape),
      nodes_(nodes),
      table_(table),
      num_features_(spec.NumFeatures()),
      need_row_norms_(spec.kind == FeatureKind::kRandomFourier),
      log_kernel_is_scaled_dot_(LogKernelIsScaledDot(spec.kind)) {}

void KernelTree::InitState(QueryState* state) const {
  state->phi.assign(QuerySize(spec_), 0.0);
  state->scratch.assign(std::max<int64_t>(spec_.num_omega, 1), 0.0);
  state->x.assign(spec_.dim, 0.0f);
  state->dots.assign(shape_.MaxLeafSize(), 0.0f);
  state->leaf_log_kernel.assign(shape_.MaxLeafSize(), 0.0f);
  state->cdf.assign(shape_.MaxLeafSize(), 0.0f);
}

void KernelTree::SetQuery(const float* h, QueryState* state) const {
  std::copy(h, h + table_.d, state->x.begin());
  if (table_.biases != nullptr) state->x[table_.d] = 1.0f;
  state->x_sq = 0;
  for (float v : state->x) state->x_sq += double(v) * v;
  QueryFeatures(spec_, state->x.data(), state->phi.data(),
                state->scratch.data());
}

void KernelTree::MixtureSums::Merge(const MixtureSums& other) {
  for (size_t j = 0; j < weighted.size(); ++j) weighted[j] += other.weighted[j];
  for (size_t j = 0; j < plain.size(); ++j) plain[j] += other.plain[j];
  for (size_t k = 0; k < x.size(); ++k) x[k] += other.x[k];
  total_weight += other.total_weight;
  count += other.count;
}

KernelTree::MixtureSums KernelTree::NewMixtureSums() const {
  MixtureSums sums;
  const int64_t size = IsLinearInQuery(spec_) ? QuerySize(spec_) : 0;
  sums.weighted.assign(size, 0.0);
  sums.plain.assign(size, 0.0);
  sums.x.assign(spec_.dim, 0.0);
  return sums;
}

void KernelTree::AddToMixture(const float* h, int64_t begin, int64_t end,
                              QueryState* scratch, MixtureSums* sums) const {
  const bool linear = IsLinearInQuery(spec_);
  for (int64_t b = begin; b < end; ++b) {
    SetQuery(h + b * table_.d, scratch);
    for (int64_t k = 0; k < spec_.dim; ++k) sums->x[k] += scratch->x[k];
    ++sums->count;
    if (!linear) continue;
    const double mass = DotDouble(scratch->phi.data(), nodes_ + num_features_,
                                  num_features_);
    const double weight = (mass > 0 && std::isfinite(mass)) ? 1.0 / mass : 0.0;
    sums->total_weight += weight;
    for (size_t j = 0; j < sums->plain.size(); ++j) {
      sums->weighted[j] += weight * scratch->phi[j];
      sums->plain[j] += scratch->phi[j];
    }
  }
}

void KernelTree::SetMixtureQuery(const MixtureSums& sums,
                                 QueryState* state) const {
  const double n = sums.count > 0 ? double(sums.count) : 1.0;
  if (!IsLinearInQuery(spec_)) {
    // No mixture identity: the shared query is the batch's mean input.
    std::vector<float> mean_h(table_.d);
    for (int64_t k = 0; k < table_.d; ++k) {
      mean_h[k] = static_cast<float>(sums.x[k] / n);
    }
    SetQuery(mean_h.data(), state);
    return;
  }
  if (sums.count == 0) {
    const std::vector<float> zeros(table_.d, 0.0f);
    SetQuery(zeros.data(), state);
    return;
  }
  // Without any positive root mass (random Fourier can give that) the
  // normalisation is undefined; fall back to the plain feature average.
  const std::vector<double>& chosen =
      sums.total_weight > 0 ? sums.weighted : sums.plain;
  for (size_t j = 0; j < chosen.size(); ++j) state->phi[j] = chosen[j] / n;
  state->x_sq = 0;
  for (int64_t k = 0; k < spec_.dim; ++k) {
    state->x[k] = static_cast<float>(sums.x[k] / n);
    state->x_sq += double(state->x[k]) * state->x[k];
  }
}

double KernelTree::LeftProb(const QueryState& state, int64_t node) const {
  const double* left = nodes_ + 2 * node * num_features_;
  const double p = LeftMassShare(spec_, state.phi.data(), left, left + num_features_);
  return std::min(std::max(p, kMinBranchProb), 1.0 - kMinBranchProb);
}

TF_SAMPLED_MULTIVERSION
bool KernelTree::LeafKernelsFromDots(const float* x, double x_sq, int64_t leaf,
                                     const float* dots, float* log_kernel,
                                     float* cdf, LeafKernels* out) const {
  const int64_t begin = shape_.LeafBegin(leaf);
  const int64_t size = shape_.LeafEnd(leaf) - begin;
  const float* biases = table_.biases != nullptr ? table_.biases + begin : nullptr;
  const float bias_weight = biases != nullptr ? x[table_.d] : 0.0f;
  if (log_kernel_is_scaled_dot_) {
    const float tau = static_cast<float>(spec_.temperature);
    for (int64_t i = 0; i < size; ++i) {
      log_kernel[i] = tau * (dots[i] + (biases != nullptr ? bias_weight * biases[i] : 0.0f));
    }
  } else {
    for (int64_t i = 0; i < size; ++i) {
      double dot = dots[i];
      double y_sq = 0;
      if (biases != nullptr) dot += double(bias_weight) * biases[i];
      if (need_row_norms_) {
        const float* w = table_.embeddings + (begin + i) * table_.d;
        y_sq = DotFloat(w, w, table_.d);
        if (biases != nullptr) y_sq += double(biases[i]) * biases[i];
      }
      // Checked before the kernel: the cosine of a NaN row would read as 0.
      if (!std::isfinite(dot) || !std::isfinite(y_sq)) return false;
      log_kernel[i] = static_cast<float>(ExactLogKernel(spec_, dot, x_sq, y_sq));
    }
  }
  float top = -INFINITY;
  bool finite = true;
  for (int64_t i = 0; i < size; ++i) {
    finite &= std::fabs(log_kernel[i]) <= std::numeric_limits<float>::max();
    top = std::max(top, log_kernel[i]);
  }
  if (!finite) return false;
  // The running sum doubles as the unnormalised CDF a draw searches: one
  // (vectorised) exp per class.
  int64_t i = 0;
  for (; i + 8 <= size; i += 8) {
    simd::Store8(cdf + i, simd::Exp8(simd::Load8(log_kernel + i) - top));
  }
  for (; i < size; ++i) cdf[i] = std::exp(log_kernel[i] - top);
  for (i = 1; i < size; ++i) cdf[i] += cdf[i - 1];
  out->begin = begin;
  out->size = size;
  out->log_kernel = log_kernel;
  out->cdf = cdf;
  out->log_norm = top + std::log(double(cdf[size - 1]));
  return true;
}

bool KernelTree::LeafLogKernels(QueryState* state, int64_t leaf,
                                LeafKernels* out) const {
  const int64_t begin = shape_.LeafBegin(leaf);
  const float* x = state->x.data();
  DotRows(&x, 1, table_.embeddings + begin * table_.d, table_.d,
          shape_.LeafEnd(leaf) - begin, table_.d, state->dots.data(), 0);
  return LeafKernelsFromDots(x, state->x_sq, leaf, state->dots.data(),
                             state->leaf_log_kernel.data(), state->cdf.data(),
                             out);
}

void KernelTree::DrawInLeaf(const LeafKernels& kernels, int64_t count,
                            double log_p, Random* rng, int64_t* ids,
                            float* log_q) {
  const double running = kernels.cdf[kernels.size - 1];
  for (int64_t k = 0; k < count; ++k) {
    const double u = rng->Uniform() * running;
    int64_t i = std::upper_bound(kernels.cdf, kernels.cdf + kernels.size, u) -
                kernels.cdf;
    if (i >= kernels.size) i = kernels.size - 1;
    ids[k] = kernels.begin + i;
    log_q[k] = static_cast<float>(log_p + kernels.log_kernel[i] - kernels.log_norm);
  }
}

double KernelTree::LeafLogProb(const QueryState& state, int64_t leaf) const {
  double p = 1;
  for (int64_t node = shape_.NodeOfLeaf(leaf); node > 1; node >>= 1) {
    const double p_left = LeftProb(state, node >> 1);
    p *= (node & 1) ? 1.0 - p_left : p_left;
  }
  return std::log(p);
}

void ShuffleDraws(int64_t n, Random* rng, int64_t* ids, float* log_q) {
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(rng->Below(uint64_t(i) + 1));
    std::swap(ids[i], ids[j]);
    std::swap(log_q[i], log_q[j]);
  }
}

void KernelTree::Descend(QueryState* state, int64_t num_sampled, Random* rng,
                         std::vector<LeafDraws>* leaves) const {
  const int64_t num_leaves = shape_.NumLeaves();
  std::vector<QueryState::Pending>& stack = state->stack;
  stack.assign(1, {1, num_sampled, 1.0});
  while (!stack.empty()) {
    const QueryState::Pending item = stack.back();
    stack.pop_back();
    if (item.node >= num_leaves) {
      leaves->push_back({item.node - num_leaves, item.count, std::log(item.p)});
      continue;
    }
    const double p_left = LeftProb(*state, item.node);
    int64_t left = 0;
    for (int64_t k = 0; k < item.count; ++k) left += rng->Uniform() < p_left;
    if (item.count - left > 0) {
      stack.push_back({2 * item.node + 1, item.count - left, item.p * (1.0 - p_left)});
    }
    if (left > 0) stack.push_back({2 * item.node, left, item.p * p_left});
  }
}

bool KernelTree::Sample(QueryState* state, int64_t num_sampled, Random* rng,
                        int64_t* ids, float* log_q) const {
  std::vector<LeafDraws>& leaves = state->leaves;
  leaves.clear();
  Descend(state, num_sampled, rng, &leaves);
  int64_t filled = 0;
  for (const LeafDraws& reached : leaves) {
    LeafKernels kernels;
    if (!LeafLogKernels(state, reached.leaf, &kernels)) return false;
    DrawInLeaf(kernels, reached.count, reached.log_p, rng, ids + filled,
               log_q + filled);
    filled += reached.count;
  }
  ShuffleDraws(num_sampled, rng, ids, log_q);
  return true;
}

bool KernelTree::LogProb(QueryState* state, const int64_t* classes, int64_t n,
                         float* log_q) const {
  state->order.resize(n);
  for (int64_t i = 0; i < n; ++i) state->order[i] = i;
  std::sort(state->order.begin(), state->order.end(),
            [&](int64_t a, int64_t b) { return classes[a] < classes[b]; });
  int64_t current_leaf = -1;
  double leaf_log_p = 0;
  LeafKernels kernels;
  for (int64_t i : state->order) {
    const int64_t leaf = shape_.LeafOf(classes[i]);
    if (leaf != current_leaf) {
      current_leaf = leaf;
      leaf_log_p = LeafLogProb(*state, leaf);
      if (!LeafLogKernels(state, leaf, &kernels)) return false;
    }
    log_q[i] = static_cast<float>(
        leaf_log_p + kernels.log_kernel[classes[i] - kernels.begin] -
        kernels.log_norm);
  }
  return true;
}

}  // namespace tf_sampled
