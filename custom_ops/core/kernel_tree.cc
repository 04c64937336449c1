#include "custom_ops/core/kernel_tree.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "custom_ops/core/dot.h"
#include "custom_ops/core/multiversion.h"

namespace tf_sampled {

bool SumLeafFeatures(const FeatureMapSpec& spec, const TreeShape& shape,
                     const float* rows, int64_t leaf, double* leaf_sum,
                     double* features) {
  const int64_t num_features = spec.NumFeatures();
  std::fill(leaf_sum, leaf_sum + num_features, 0.0);
  for (int64_t c = shape.LeafBegin(leaf); c < shape.LeafEnd(leaf); ++c) {
    if (!ClassFeatures(spec, rows + c * spec.dim, features)) return false;
    for (int64_t j = 0; j < num_features; ++j) leaf_sum[j] += features[j];
  }
  return true;
}

void SumInternalNodes(const TreeShape& shape, int64_t num_features,
                      double* nodes) {
  for (int64_t node = shape.NumLeaves() - 1; node >= 1; --node) {
    double* out = nodes + node * num_features;
    const double* left = nodes + 2 * node * num_features;
    const double* right = left + num_features;
    for (int64_t j = 0; j < num_features; ++j) out[j] = left[j] + right[j];
  }
}

bool RowFeatureDelta(const FeatureMapSpec& spec, const float* old_row,
                     const float* new_row, double* delta, double* scratch) {
  if (!ClassFeatures(spec, new_row, delta)) return false;
  if (!ClassFeatures(spec, old_row, scratch)) return false;
  const int64_t num_features = spec.NumFeatures();
  for (int64_t j = 0; j < num_features; ++j) delta[j] -= scratch[j];
  return true;
}

void AggregatePathDeltas(const TreeShape& shape, int64_t num_features,
                         const int64_t* ids, const double* row_deltas,
                         int64_t n, std::vector<int64_t>* node_ids,
                         std::vector<double>* node_deltas) {
  std::vector<std::pair<int64_t, int64_t>> node_row;  // (node, row)
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t node = shape.NodeOfLeaf(shape.LeafOf(ids[r])); node >= 1;
         node >>= 1) {
      node_row.emplace_back(node, r);
    }
  }
  std::sort(node_row.begin(), node_row.end());
  node_ids->clear();
  node_deltas->clear();
  for (const auto& [node, row] : node_row) {
    if (node_ids->empty() || node_ids->back() != node) {
      node_ids->push_back(node);
      node_deltas->resize(node_deltas->size() + num_features, 0.0);
    }
    double* out = node_deltas->data() + node_deltas->size() - num_features;
    const double* in = row_deltas + row * num_features;
    for (int64_t j = 0; j < num_features; ++j) out[j] += in[j];
  }
}

KernelTree::KernelTree(const FeatureMapSpec& spec, const TreeShape& shape,
                       const double* nodes, const ClassTable& table)
    : spec_(spec),
      shape_(shape),
      nodes_(nodes),
      table_(table),
      num_features_(spec.NumFeatures()),
      need_row_norms_(spec.kind == FeatureKind::kRandomFourier) {}

void KernelTree::InitState(QueryState* state) const {
  state->phi.assign(QuerySize(spec_), 0.0);
  state->scratch.assign(std::max<int64_t>(spec_.num_omega, 1), 0.0);
  state->x.assign(spec_.dim, 0.0f);
  state->leaf_log_kernel.assign(shape_.MaxLeafSize(), 0.0);
  state->cdf.assign(shape_.MaxLeafSize(), 0.0);
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

void KernelTree::BranchLogProbs(const QueryState& state, int64_t node,
                                double* log_left, double* log_right) const {
  const double* left = nodes_ + 2 * node * num_features_;
  const double log_a = NodeLogMass(spec_, state.phi.data(), left);
  const double log_b = NodeLogMass(spec_, state.phi.data(), left + num_features_);
  // p = a / (a + b); no mass on either side (or two infinities) gives 1/2.
  double p = 0.5;
  if (log_a > -INFINITY || log_b > -INFINITY) {
    const double diff = log_b - log_a;
    if (!std::isnan(diff)) p = 1.0 / (1.0 + std::exp(diff));
  }
  p = std::min(std::max(p, kMinBranchProb), 1.0 - kMinBranchProb);
  *log_left = std::log(p);
  *log_right = std::log1p(-p);
}

TF_SAMPLED_MULTIVERSION
bool KernelTree::LeafLogKernels(QueryState* state, int64_t leaf,
                                double* log_norm) const {
  const int64_t begin = shape_.LeafBegin(leaf);
  const int64_t end = shape_.LeafEnd(leaf);
  const float* x = state->x.data();
  const float bias_weight = table_.biases != nullptr ? x[table_.d] : 0.0f;
  double top = -INFINITY;
  for (int64_t c = begin; c < end; ++c) {
    const float* w = table_.embeddings + c * table_.d;
    double dot = DotFloat(x, w, table_.d);
    double y_sq = 0;
    if (table_.biases != nullptr) dot += double(bias_weight) * table_.biases[c];
    if (need_row_norms_) {
      y_sq = DotFloat(w, w, table_.d);
      if (table_.biases != nullptr) y_sq += double(table_.biases[c]) * table_.biases[c];
    }
    // Checked before the kernel: the cosine of a NaN row would read as 0.
    if (!std::isfinite(dot) || !std::isfinite(y_sq)) return false;
    const double log_kernel = ExactLogKernel(spec_, dot, state->x_sq, y_sq);
    if (!std::isfinite(log_kernel)) return false;
    state->leaf_log_kernel[c - begin] = log_kernel;
    top = std::max(top, log_kernel);
  }
  // The running sum doubles as the unnormalised CDF a draw searches, so each
  // class costs one exp (exps rival the dot products in this loop).
  double sum = 0;
  for (int64_t i = 0; i < end - begin; ++i) {
    sum += std::exp(state->leaf_log_kernel[i] - top);
    state->cdf[i] = sum;
  }
  *log_norm = top + std::log(sum);
  return true;
}

double KernelTree::LeafLogProb(const QueryState& state, int64_t leaf) const {
  double log_p = 0;
  for (int64_t node = shape_.NodeOfLeaf(leaf); node > 1; node >>= 1) {
    double log_left, log_right;
    BranchLogProbs(state, node >> 1, &log_left, &log_right);
    log_p += (node & 1) ? log_right : log_left;
  }
  return log_p;
}

bool KernelTree::Sample(QueryState* state, int64_t num_sampled, Random* rng,
                        int64_t* ids, float* log_q) const {
  const int64_t num_leaves = shape_.NumLeaves();
  int64_t filled = 0;
  state->stack.clear();
  state->stack.push_back({1, num_sampled, 0.0});
  while (!state->stack.empty()) {
    const QueryState::Pending item = state->stack.back();
    state->stack.pop_back();
    if (item.node >= num_leaves) {
      const int64_t leaf = item.node - num_leaves;
      double log_norm;
      if (!LeafLogKernels(state, leaf, &log_norm)) return false;
      const int64_t size = shape_.LeafEnd(leaf) - shape_.LeafBegin(leaf);
      const double running = state->cdf[size - 1];
      for (int64_t k = 0; k < item.count; ++k) {
        const double u = rng->Uniform() * running;
        int64_t i = std::upper_bound(state->cdf.begin(),
                                     state->cdf.begin() + size, u) -
                    state->cdf.begin();
        if (i >= size) i = size - 1;
        ids[filled] = shape_.LeafBegin(leaf) + i;
        log_q[filled] = static_cast<float>(
            item.log_p + state->leaf_log_kernel[i] - log_norm);
        ++filled;
      }
      continue;
    }
    double log_left, log_right;
    BranchLogProbs(*state, item.node, &log_left, &log_right);
    const double p_left = std::exp(log_left);
    int64_t left = 0;
    for (int64_t k = 0; k < item.count; ++k) left += rng->Uniform() < p_left;
    if (item.count - left > 0) {
      state->stack.push_back(
          {2 * item.node + 1, item.count - left, item.log_p + log_right});
    }
    if (left > 0) {
      state->stack.push_back({2 * item.node, left, item.log_p + log_left});
    }
  }
  // Draws come out grouped by leaf; a uniform shuffle makes the sequence
  // exactly an iid sequence (its law given the counts is uniform over orders).
  for (int64_t i = num_sampled - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(rng->Below(uint64_t(i) + 1));
    std::swap(ids[i], ids[j]);
    std::swap(log_q[i], log_q[j]);
  }
  return true;
}

bool KernelTree::LogProb(QueryState* state, const int64_t* classes, int64_t n,
                         float* log_q) const {
  state->order.resize(n);
  for (int64_t i = 0; i < n; ++i) state->order[i] = i;
  std::sort(state->order.begin(), state->order.end(),
            [&](int64_t a, int64_t b) { return classes[a] < classes[b]; });
  int64_t current_leaf = -1;
  double leaf_log_p = 0, log_norm = 0;
  for (int64_t i : state->order) {
    const int64_t leaf = shape_.LeafOf(classes[i]);
    if (leaf != current_leaf) {
      current_leaf = leaf;
      leaf_log_p = LeafLogProb(*state, leaf);
      if (!LeafLogKernels(state, leaf, &log_norm)) return false;
    }
    log_q[i] = static_cast<float>(
        leaf_log_p +
        state->leaf_log_kernel[classes[i] - shape_.LeafBegin(leaf)] -
        log_norm);
  }
  return true;
}

}  // namespace tf_sampled
