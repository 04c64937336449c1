// Sampling from the kernel tree: per-example negatives, log q of given
// classes, and the batch-shared candidate sampler with TensorFlow's contract.
#include <cmath>
#include <limits>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "custom_ops/core/kernel_tree_batch.h"
#include "custom_ops/core/log_uniform_prior.h"
#include "custom_ops/kernels/candidate_sampling.h"
#include "custom_ops/kernels/kernel_tree_common.h"
#include "custom_ops/kernels/sampler_ops.h"

namespace tf_sampled {

namespace {

absl::Status NonFiniteRowError(int64_t query) {
  return errors::InvalidArgument(
      "embeddings and biases must be finite: a class row read for query ",
      query, " holds a NaN/Inf value (or its logit overflows)");
}

// Work estimate for one draw (or one log q): a descent and a leaf's kernels.
int64_t DrawCost(const TreeInputs& in) {
  const int64_t depth = 1 + static_cast<int64_t>(
                                std::log2(double(in.shape.NumLeaves()) + 1));
  return 2 * depth * in.spec.NumFeatures() + in.shape.MaxLeafSize() * in.table.d;
}

// Work estimate for one query: its features and `draws` draws.
int64_t QueryCost(const TreeInputs& in, int64_t draws) {
  return draws * DrawCost(in) + in.spec.num_omega * in.spec.dim;
}

}  // namespace

// The kernel-tree family of the sampling-op skeleton (sampler_ops.h): inputs
// nodes, embeddings, biases (variable handles, read in place), omega and the
// queries `inputs`; attributes the feature map, leaf_size and the
// log-uniform share prior_weight of the proposal.
class KernelTreeFamily {
 public:
  using Inputs = TreeInputs;
  static constexpr const char* kQueries = "inputs";
  static constexpr bool kIdsOnHost = true;

  absl::Status Init(OpKernelConstruction* ctx, SamplerOp) {
    TF_RETURN_IF_ERROR(attrs_.Parse(ctx));
    return ParsePriorWeight(ctx, &prior_weight_);
  }

  absl::Status ParseInputs(OpKernelContext* ctx, Inputs* in) const {
    return in->Parse(ctx, attrs_);
  }
  static int64_t Batch(const Inputs& in) { return in.batch; }
  static int64_t NumClasses(const Inputs& in) { return in.shape.num_classes; }

  absl::Status Sample(OpKernelContext* ctx, const Inputs& in,
                      const SampleRequest& r) const {
    const KernelTree tree(in.spec, in.shape, in.nodes, in.table);
    std::vector<uint64_t> seeds(r.batch);
    for (int64_t b = 0; b < r.batch; ++b) seeds[b] = QuerySeed(*r.block, b);
    BatchSampleRequest request;
    request.inputs = in.inputs;
    request.batch = r.batch;
    request.num_sampled = r.num_sampled;
    request.true_classes = r.true_classes;
    request.num_true = r.num_true;
    request.seeds = seeds.data();
    request.ids = r.ids;
    request.log_q = r.log_q;
    request.true_log_q = r.true_log_q;
    request.prior_weight = prior_weight_;
    const int64_t failed = SampleBatch(tree, request, OpParallelRange(ctx));
    return failed < 0 ? absl::OkStatus() : NonFiniteRowError(failed);
  }

  absl::Status LogProb(OpKernelContext* ctx, const Inputs& in,
                       const LogProbRequest& r) const {
    const KernelTree tree(in.spec, in.shape, in.nodes, in.table);
    const double a = prior_weight_;
    const LogUniformPrior prior(in.shape.num_classes);
    ShardFailure failure;
    ParallelFor(ctx, r.batch, QueryCost(in, r.n), [&](int64_t begin, int64_t end) {
      QueryState state;
      tree.InitState(&state);
      for (int64_t b = begin; b < end; ++b) {
        const int64_t* classes = r.classes + b * r.n;
        float* log_q = r.log_q + b * r.n;
        if (a < 1.0) {  // a = 1: exactly log-uniform, no tree work
          tree.SetQuery(in.inputs + b * in.table.d, &state);
          if (!tree.LogProb(&state, classes, r.n, log_q)) {
            failure.Record(b);
            return;
          }
        }
        if (a > 0.0) {
          for (int64_t k = 0; k < r.n; ++k) {
            log_q[k] = MixtureLogQ(a, prior.Prob(classes[k]), log_q[k]);
          }
        }
      }
    });
    return failure.failed() ? NonFiniteRowError(failure.item()) : absl::OkStatus();
  }

  absl::Status SampleShared(OpKernelContext* ctx, const Inputs& in,
                            const SharedRequest& r, int64_t* num_tries) const {
    const KernelTree tree(in.spec, in.shape, in.nodes, in.table);
    QueryState state;
    tree.InitState(&state);
    KernelTree::MixtureSums sums = tree.NewMixtureSums();
    absl::Mutex sums_mu;
    ParallelFor(ctx, r.batch, QueryCost(in, 0), [&](int64_t begin, int64_t end) {
      QueryState scratch;
      tree.InitState(&scratch);
      KernelTree::MixtureSums part = tree.NewMixtureSums();
      tree.AddToMixture(in.inputs, begin, end, &scratch, &part);
      absl::MutexLock lock(&sums_mu);
      sums.Merge(part);
    });
    tree.SetMixtureQuery(sums, &state);
    Random rng(QuerySeed(r.block, 0));
    // Draws from one descent are an iid sequence (Sample shuffles them), so
    // taking them in order is exactly sequential sampling. Every class has
    // probability >= kMinBranchProb^depth, so unique sampling ends.
    auto draw = [&](int64_t n, int64_t* ids, float* log_q) -> absl::Status {
      if (!tree.Sample(&state, n, &rng, ids, log_q)) return NonFiniteRowError(0);
      return absl::OkStatus();
    };
    // With prior_weight a > 0 the proposal is the defensive mixture
    // a p_lu + (1 - a) q_tree: Binomial(n, a) of a call's n draws come from
    // the log-uniform prior, the others from the tree, every draw gets the
    // mixture's log q (q_tree of the prior's draws by one grouped LogProb),
    // and a shuffle makes the sequence iid again.
    const double a = prior_weight_;
    const LogUniformPrior prior(r.range_max);
    auto draw_mixture = [&](int64_t n, int64_t* ids, float* log_q) -> absl::Status {
      const int64_t n_prior = NumPriorDraws(a, n, &rng);
      const int64_t n_tree = n - n_prior;
      if (n_tree > 0) TF_RETURN_IF_ERROR(draw(n_tree, ids, log_q));
      for (int64_t k = n_tree; k < n; ++k) ids[k] = prior.Sample(&rng);
      if (a < 1.0 && n_prior > 0 &&
          !tree.LogProb(&state, ids + n_tree, n_prior, log_q + n_tree)) {
        return NonFiniteRowError(0);
      }
      for (int64_t k = 0; k < n; ++k) log_q[k] = MixtureLogQ(a, prior.Prob(ids[k]), log_q[k]);
      ShuffleDraws(n, &rng, ids, log_q);
      return absl::OkStatus();
    };
    if (a > 0.0) {
      TF_RETURN_IF_ERROR(SampleCandidates(r.unique, r.num_sampled, r.range_max, draw_mixture,
                                          r.sampled, r.sampled_log_q, num_tries));
    } else {
      TF_RETURN_IF_ERROR(SampleCandidates(r.unique, r.num_sampled, r.range_max, draw,
                                          r.sampled, r.sampled_log_q, num_tries));
    }
    // The true classes' log q under the shared query, in parallel chunks.
    const int64_t* truth = r.true_classes;
    float* true_log_q = r.true_log_q;
    ShardFailure failure;
    ParallelFor(ctx, r.batch * r.num_true, DrawCost(in), [&](int64_t begin, int64_t end) {
      if (a >= 1.0) {  // exactly log-uniform: no tree work
        for (int64_t i = begin; i < end; ++i) {
          true_log_q[i] = static_cast<float>(std::log(prior.Prob(truth[i])));
        }
        return;
      }
      QueryState local = state;
      if (!tree.LogProb(&local, truth + begin, end - begin, true_log_q + begin)) {
        failure.Record(begin);
        return;
      }
      if (a > 0.0) {
        for (int64_t i = begin; i < end; ++i) {
          true_log_q[i] = MixtureLogQ(a, prior.Prob(truth[i]), true_log_q[i]);
        }
      }
    });
    return failure.failed() ? NonFiniteRowError(0) : absl::OkStatus();
  }

 private:
  FeatureAttrs attrs_;
  float prior_weight_ = 0.0f;  // log-uniform share a of the proposal, in [0, 1]
};

TF_SAMPLED_REGISTER_SAMPLER_KERNELS("KernelTree", KernelTreeFamily);

}  // namespace tf_sampled
