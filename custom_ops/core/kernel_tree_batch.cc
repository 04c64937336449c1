#include "custom_ops/core/kernel_tree_batch.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "custom_ops/core/block_dot.h"
#include "custom_ops/core/group_by_key.h"
#include "custom_ops/core/log_uniform_prior.h"
#include "custom_ops/core/random.h"
#include "custom_ops/core/shard_failure.h"

namespace tf_sampled {
namespace {

// A (query, leaf) pair: `draws` of the query's samples end in the leaf,
// written from slot `first` of its row; `seed` drives those draws.
struct Pair {
  int64_t query;
  int64_t leaf;
  int64_t draws;
  int64_t first;
  double log_p;
  uint64_t seed;
};

}  // namespace

int64_t SampleBatch(const KernelTree& tree, const BatchSampleRequest& request,
                    const ParallelRange& parallel) {
  const TreeShape& shape = tree.shape();
  const ClassTable& table = tree.table();
  const int64_t batch = request.batch;
  const int64_t S = request.num_sampled;
  const int64_t T = request.num_true;
  const int64_t dim = tree.spec().dim;
  const int64_t max_pairs = S + T;  // per query
  const int64_t depth =
      1 + static_cast<int64_t>(std::log2(double(shape.NumLeaves()) + 1));

  // 1. Descents: each query's features, its leaves and their log P, and the
  //    leaves of its true classes (with no draws) for their log q.
  std::vector<float> x(batch * dim);
  std::vector<double> x_sq(batch);
  std::vector<Pair> pairs(batch * max_pairs);
  std::vector<int64_t> num_pairs(batch);
  std::vector<uint64_t> shuffle_seeds(batch);
  // With prior_weight a > 0 the last num_prior[b] of query b's slots hold
  // draws from the log-uniform prior (their tree log q comes in step 4).
  const double a = request.prior_weight;
  const LogUniformPrior prior(shape.num_classes);
  std::vector<int64_t> num_prior(batch, 0);
  const int64_t descent_cost =
      S * 2 * depth * tree.num_features() + tree.spec().num_omega * dim;
  parallel(batch, descent_cost, [&](int64_t begin, int64_t end) {
    QueryState state;
    tree.InitState(&state);
    for (int64_t b = begin; b < end; ++b) {
      Random rng(request.seeds[b]);
      tree.SetQuery(request.inputs + b * table.d, &state);
      std::copy(state.x.begin(), state.x.end(), x.begin() + b * dim);
      x_sq[b] = state.x_sq;
      state.leaves.clear();
      const int64_t n_prior = NumPriorDraws(a, S, &rng);
      const int64_t n_tree = S - n_prior;
      if (n_tree > 0) tree.Descend(&state, n_tree, &rng, &state.leaves);
      for (int64_t k = n_tree; k < S; ++k) request.ids[b * S + k] = prior.Sample(&rng);
      num_prior[b] = n_prior;
      Pair* mine = pairs.data() + b * max_pairs;
      int64_t n = 0, first = 0;
      for (const LeafDraws& reached : state.leaves) {
        mine[n++] = {b, reached.leaf, reached.count, first, reached.log_p, rng.Next()};
        first += reached.count;
      }
      for (int64_t t = 0; t < T; ++t) {
        const int64_t leaf = shape.LeafOf(request.true_classes[b * T + t]);
        bool seen = false;
        for (int64_t i = 0; i < n && !seen; ++i) seen = mine[i].leaf == leaf;
        if (!seen) mine[n++] = {b, leaf, 0, S, tree.LeafLogProb(state, leaf), 0};
      }
      num_pairs[b] = n;
      shuffle_seeds[b] = rng.Next();
    }
  });

  // 2. The pairs grouped by leaf.
  std::vector<int64_t> pair_index, leaf_keys;
  pair_index.reserve(batch * max_pairs);
  leaf_keys.reserve(batch * max_pairs);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < num_pairs[b]; ++i) {
      pair_index.push_back(b * max_pairs + i);
      leaf_keys.push_back(pairs[b * max_pairs + i].leaf);
    }
  }
  KeyGroups groups;
  GroupByKey(std::move(leaf_keys), shape.NumLeaves() - 1, &groups);

  // 3. Per leaf: the kernels of all its queries, their draws and the log q
  //    of the true classes it holds.
  const int64_t leaf_size = shape.MaxLeafSize();
  const int64_t num_groups = static_cast<int64_t>(groups.ids.size());
  const int64_t pairs_per_group =
      num_groups > 0 ? (static_cast<int64_t>(pair_index.size()) + num_groups - 1) /
                           num_groups
                     : 1;
  ShardFailure failure;
  parallel(num_groups, pairs_per_group * leaf_size * (table.d + 20),
           [&](int64_t begin, int64_t end) {
    std::vector<const float*> rows;
    std::vector<float> dots;
    std::vector<float> log_kernel(leaf_size), cdf(leaf_size);
    for (int64_t g = begin; g < end; ++g) {
      const int64_t leaf = groups.ids[g];
      const int64_t first = groups.offsets[g];
      const int64_t count = groups.offsets[g + 1] - first;
      const int64_t class_begin = shape.LeafBegin(leaf);
      const int64_t size = shape.LeafEnd(leaf) - class_begin;
      rows.resize(count);
      for (int64_t i = 0; i < count; ++i) {
        const Pair& pair = pairs[pair_index[groups.entries[first + i]]];
        rows[i] = x.data() + pair.query * dim;
      }
      dots.resize(count * size);
      DotRows(rows.data(), count, table.embeddings + class_begin * table.d,
              table.d, size, table.d, dots.data(), size);
      for (int64_t i = 0; i < count; ++i) {
        const Pair& pair = pairs[pair_index[groups.entries[first + i]]];
        const int64_t q = pair.query;
        LeafKernels kernels;
        if (!tree.LeafKernelsFromDots(rows[i], x_sq[q], leaf, dots.data() + i * size,
                                      log_kernel.data(), cdf.data(), &kernels)) {
          failure.Record(q);
          continue;
        }
        if (pair.draws > 0) {
          Random rng(pair.seed);
          KernelTree::DrawInLeaf(kernels, pair.draws, pair.log_p, &rng,
                                 request.ids + q * S + pair.first,
                                 request.log_q + q * S + pair.first);
        }
        for (int64_t t = 0; t < T; ++t) {
          const int64_t c = request.true_classes[q * T + t];
          if (shape.LeafOf(c) != leaf) continue;
          request.true_log_q[q * T + t] = static_cast<float>(
              pair.log_p + kernels.log_kernel[c - class_begin] - kernels.log_norm);
        }
      }
    }
  });
  if (failure.failed()) return failure.item();

  // 4. With the prior mixed in: the tree's log q of the prior's draws, then
  //    every log q the mixture's.
  if (a > 0.0) {
    ShardFailure prior_failure;
    parallel(batch, descent_cost, [&](int64_t begin, int64_t end) {
      QueryState state;
      tree.InitState(&state);
      for (int64_t b = begin; b < end; ++b) {
        int64_t* ids = request.ids + b * S;
        float* log_q = request.log_q + b * S;
        const int64_t n_tree = S - num_prior[b];
        if (a < 1.0 && num_prior[b] > 0) {
          tree.SetQuery(request.inputs + b * table.d, &state);
          if (!tree.LogProb(&state, ids + n_tree, num_prior[b], log_q + n_tree)) {
            prior_failure.Record(b);
            return;
          }
        }
        for (int64_t k = 0; k < S; ++k) {
          log_q[k] = MixtureLogQ(a, prior.Prob(ids[k]), log_q[k]);
        }
        for (int64_t t = 0; t < T; ++t) {
          const int64_t i = b * T + t;
          request.true_log_q[i] =
              MixtureLogQ(a, prior.Prob(request.true_classes[i]), request.true_log_q[i]);
        }
      }
    });
    if (prior_failure.failed()) return prior_failure.item();
  }

  // 5. Each query's draws in a uniformly random order (iid sequence).
  parallel(batch, S * 4, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      Random rng(shuffle_seeds[b]);
      ShuffleDraws(S, &rng, request.ids + b * S, request.log_q + b * S);
    }
  });
  return -1;
}

}  // namespace tf_sampled
