// Sampling from the kernel tree: per-example negatives, log q of given
// classes, and the batch-shared candidate sampler with TensorFlow's contract.
#include <cmath>
#include <limits>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "custom_ops/core/kernel_tree_batch.h"
#include "custom_ops/kernels/candidate_sampling.h"
#include "custom_ops/kernels/kernel_tree_common.h"

namespace tf_sampled {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::TensorShape;

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

// TensorFlow's log-uniform (Zipfian) distribution over [0, range_max)
// (LogUniformSampler, range_sampler.cc): p(i) = log((i + 2) / (i + 1)) /
// log(range_max + 1), drawn by inverse CDF.
class LogUniformPrior {
 public:
  explicit LogUniformPrior(int64_t range_max)
      : range_max_(range_max), log_range_(std::log1p(double(range_max))) {}

  // floor(exp(u log(range_max + 1))) - 1 for u uniform in [0, 1), reduced
  // mod range_max as TensorFlow does (only a roundoff reaches range_max).
  int64_t Sample(Random* rng) const {
    const int64_t value =
        static_cast<int64_t>(std::exp(rng->Uniform() * log_range_)) - 1;
    return value % range_max_;
  }

  double Prob(int64_t id) const {
    return std::log((id + 2.0) / (id + 1.0)) / log_range_;
  }

 private:
  int64_t range_max_;
  double log_range_;
};

// log(a p_prior + (1 - a) q_tree) from log q_tree.
inline float MixtureLogQ(double a, double p_prior, float log_q_tree) {
  return static_cast<float>(
      std::log(a * p_prior + (1.0 - a) * std::exp(double(log_q_tree))));
}

}  // namespace

class KernelTreeSampleOp : public OpKernel {
 public:
  explicit KernelTreeSampleOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.Parse(ctx));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_sampled", &num_sampled_));
    OP_REQUIRES(ctx, num_sampled_ >= 1,
                errors::InvalidArgument("num_sampled must be >= 1, got ",
                                        num_sampled_));
    OP_REQUIRES_OK(ctx, stream_.Init(ctx));
  }

  void Compute(OpKernelContext* ctx) override {
    TreeInputs in;
    OP_REQUIRES_OK(ctx, in.Parse(ctx, attrs_));
    const Tensor& true_classes = ctx->input(5);
    OP_REQUIRES_OK(ctx, CheckRank(true_classes, 2, "true_classes"));
    OP_REQUIRES(ctx, true_classes.dim_size(0) == in.batch,
                errors::InvalidArgument(
                    "true_classes must have ", in.batch,
                    " rows like inputs, got shape ",
                    true_classes.shape().DebugString()));
    OP_REQUIRES_OK(ctx, CheckClassIds(true_classes, in.shape.num_classes,
                                      "true_classes"));
    const int64_t num_true = true_classes.dim_size(1);
    ::tensorflow::random::PhiloxRandom block;
    OP_REQUIRES_OK(ctx, stream_.CallBlock(ctx, kTreeCounterInput, &block));
    Tensor *ids_t, *log_q_t, *true_log_q_t;
    OP_REQUIRES_OK(ctx, AllocatePerExampleOutputs(ctx, in.batch, num_sampled_, num_true,
                                                  &ids_t, &log_q_t, &true_log_q_t));
    if (in.batch == 0) return;

    const KernelTree tree(in.spec, in.shape, in.nodes, in.table);
    std::vector<uint64_t> seeds(in.batch);
    for (int64_t b = 0; b < in.batch; ++b) seeds[b] = QuerySeed(block, b);
    BatchSampleRequest request;
    request.inputs = in.inputs;
    request.batch = in.batch;
    request.num_sampled = num_sampled_;
    request.true_classes = true_classes.flat<int64_t>().data();
    request.num_true = num_true;
    request.seeds = seeds.data();
    request.ids = ids_t->flat<int64_t>().data();
    request.log_q = log_q_t->flat<float>().data();
    request.true_log_q = true_log_q_t->flat<float>().data();
    const int64_t failed = SampleBatch(tree, request, OpParallelRange(ctx));
    OP_REQUIRES(ctx, failed < 0, NonFiniteRowError(failed));
  }

 private:
  FeatureAttrs attrs_;
  int64_t num_sampled_;
  SampleStream stream_;
};

class KernelTreeLogProbOp : public OpKernel {
 public:
  explicit KernelTreeLogProbOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.Parse(ctx));
  }

  void Compute(OpKernelContext* ctx) override {
    TreeInputs in;
    OP_REQUIRES_OK(ctx, in.Parse(ctx, attrs_));
    const Tensor& classes = ctx->input(5);
    OP_REQUIRES_OK(ctx, CheckRank(classes, 2, "classes"));
    OP_REQUIRES(ctx, classes.dim_size(0) == in.batch,
                errors::InvalidArgument("classes must have ", in.batch,
                                        " rows like inputs, got shape ",
                                        classes.shape().DebugString()));
    OP_REQUIRES_OK(ctx, CheckClassIds(classes, in.shape.num_classes, "classes"));
    const int64_t n = classes.dim_size(1);
    Tensor* log_q_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({in.batch, n}),
                                             &log_q_t));
    if (in.batch == 0 || n == 0) return;
    const KernelTree tree(in.spec, in.shape, in.nodes, in.table);
    const int64_t* ids = classes.flat<int64_t>().data();
    float* log_q = log_q_t->flat<float>().data();
    ShardFailure failure;
    ParallelFor(ctx, in.batch, QueryCost(in, n), [&](int64_t begin, int64_t end) {
      QueryState state;
      tree.InitState(&state);
      for (int64_t b = begin; b < end; ++b) {
        tree.SetQuery(in.inputs + b * in.table.d, &state);
        if (!tree.LogProb(&state, ids + b * n, n, log_q + b * n)) {
          failure.Record(b);
        }
      }
    });
    OP_REQUIRES(ctx, !failure.failed(), NonFiniteRowError(failure.item()));
  }

 private:
  FeatureAttrs attrs_;
};

class KernelTreeCandidateSamplerOp : public OpKernel {
 public:
  explicit KernelTreeCandidateSamplerOp(OpKernelConstruction* ctx)
      : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.Parse(ctx));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_true", &num_true_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_sampled", &num_sampled_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("unique", &unique_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("range_max", &range_max_));
    OP_REQUIRES(ctx, num_sampled_ >= 1 && num_true_ >= 1 && range_max_ >= 1,
                errors::InvalidArgument(
                    "num_sampled, num_true and range_max must be >= 1, got ",
                    num_sampled_, ", ", num_true_, ", ", range_max_));
    OP_REQUIRES(ctx, !unique_ || num_sampled_ <= range_max_,
                errors::InvalidArgument(
                    "num_sampled (", num_sampled_,
                    ") must be <= range_max (", range_max_,
                    ") when unique=True"));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("prior_weight", &prior_weight_));
    OP_REQUIRES(ctx, prior_weight_ >= 0.0f && prior_weight_ <= 1.0f,
                errors::InvalidArgument(
                    "prior_weight must be in [0, 1] (the log-uniform share of "
                    "the proposal), got ", prior_weight_));
    OP_REQUIRES_OK(ctx, stream_.Init(ctx));
  }

  void Compute(OpKernelContext* ctx) override {
    TreeInputs in;
    OP_REQUIRES_OK(ctx, in.Parse(ctx, attrs_));
    OP_REQUIRES(ctx, range_max_ == in.shape.num_classes,
                errors::InvalidArgument(
                    "range_max (", range_max_,
                    ") must equal the sampler's number of classes (",
                    in.shape.num_classes, ")"));
    const Tensor& true_classes = ctx->input(5);
    OP_REQUIRES_OK(ctx, CheckRank(true_classes, 2, "true_classes"));
    OP_REQUIRES(ctx,
                true_classes.dim_size(0) == in.batch &&
                    true_classes.dim_size(1) == num_true_,
                errors::InvalidArgument(
                    "true_classes must have shape [", in.batch, ", ", num_true_,
                    "] (batch of inputs, num_true), got ",
                    true_classes.shape().DebugString()));
    OP_REQUIRES_OK(ctx, CheckClassIds(true_classes, in.shape.num_classes,
                                      "true_classes"));
    ::tensorflow::random::PhiloxRandom block;
    OP_REQUIRES_OK(ctx, stream_.CallBlock(ctx, kTreeCounterInput, &block));

    Tensor *sampled_t, *true_count_t, *sampled_count_t;
    OP_REQUIRES_OK(ctx, AllocateCandidateOutputs(ctx, in.batch, num_sampled_, num_true_,
                                                 &sampled_t, &true_count_t,
                                                 &sampled_count_t));
    int64_t* sampled = sampled_t->flat<int64_t>().data();
    // The count outputs hold log q until the counts are known.
    float* sampled_log_q = sampled_count_t->flat<float>().data();
    float* true_log_q = true_count_t->flat<float>().data();

    const KernelTree tree(in.spec, in.shape, in.nodes, in.table);
    QueryState state;
    tree.InitState(&state);
    KernelTree::MixtureSums sums = tree.NewMixtureSums();
    absl::Mutex sums_mu;
    ParallelFor(ctx, in.batch, QueryCost(in, 0), [&](int64_t begin, int64_t end) {
      QueryState scratch;
      tree.InitState(&scratch);
      KernelTree::MixtureSums part = tree.NewMixtureSums();
      tree.AddToMixture(in.inputs, begin, end, &scratch, &part);
      absl::MutexLock lock(&sums_mu);
      sums.Merge(part);
    });
    tree.SetMixtureQuery(sums, &state);
    Random rng(QuerySeed(block, 0));
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
    const LogUniformPrior prior(range_max_);
    auto draw_mixture = [&](int64_t n, int64_t* ids,
                            float* log_q) -> absl::Status {
      int64_t n_prior = 0;
      for (int64_t k = 0; k < n; ++k) n_prior += rng.Uniform() < a;
      const int64_t n_tree = n - n_prior;
      if (n_tree > 0) TF_RETURN_IF_ERROR(draw(n_tree, ids, log_q));
      for (int64_t k = n_tree; k < n; ++k) ids[k] = prior.Sample(&rng);
      if (a < 1.0 && n_prior > 0 &&
          !tree.LogProb(&state, ids + n_tree, n_prior, log_q + n_tree)) {
        return NonFiniteRowError(0);
      }
      for (int64_t k = 0; k < n; ++k) {
        const double p = prior.Prob(ids[k]);
        log_q[k] = a < 1.0 ? MixtureLogQ(a, p, log_q[k])
                           : static_cast<float>(std::log(p));
      }
      ShuffleDraws(n, &rng, ids, log_q);
      return absl::OkStatus();
    };
    int64_t num_tries;
    if (a > 0.0) {
      OP_REQUIRES_OK(ctx, SampleCandidates(unique_, num_sampled_, range_max_,
                                           draw_mixture, sampled, sampled_log_q,
                                           &num_tries));
    } else {
      OP_REQUIRES_OK(ctx, SampleCandidates(unique_, num_sampled_, range_max_,
                                           draw, sampled, sampled_log_q,
                                           &num_tries));
    }
    // The true classes' log q under the shared query, in parallel chunks.
    const int64_t* truth = true_classes.flat<int64_t>().data();
    ShardFailure failure;
    ParallelFor(ctx, in.batch * num_true_, DrawCost(in),
                [&](int64_t begin, int64_t end) {
                  if (a >= 1.0) {  // exactly log-uniform: no tree work
                    for (int64_t i = begin; i < end; ++i) {
                      true_log_q[i] =
                          static_cast<float>(std::log(prior.Prob(truth[i])));
                    }
                    return;
                  }
                  QueryState local = state;
                  if (!tree.LogProb(&local, truth + begin, end - begin,
                                    true_log_q + begin)) {
                    failure.Record(begin);
                    return;
                  }
                  if (a > 0.0) {
                    for (int64_t i = begin; i < end; ++i) {
                      true_log_q[i] =
                          MixtureLogQ(a, prior.Prob(truth[i]), true_log_q[i]);
                    }
                  }
                });
    OP_REQUIRES(ctx, !failure.failed(), NonFiniteRowError(0));
    LogQToExpectedCounts(sampled_log_q, num_sampled_, num_sampled_, num_tries);
    LogQToExpectedCounts(true_log_q, in.batch * num_true_, num_sampled_, num_tries);
  }

 private:
  FeatureAttrs attrs_;
  int64_t num_true_, num_sampled_, range_max_;
  bool unique_;
  float prior_weight_;  // log-uniform share a of the proposal, in [0, 1]
  SampleStream stream_;
};

REGISTER_KERNEL_BUILDER(Name("TfSampled>KernelTreeSample").Device(DEVICE_CPU),
                        KernelTreeSampleOp);
REGISTER_KERNEL_BUILDER(Name("TfSampled>KernelTreeLogProb").Device(DEVICE_CPU),
                        KernelTreeLogProbOp);
REGISTER_KERNEL_BUILDER(
    Name("TfSampled>KernelTreeCandidateSampler").Device(DEVICE_CPU),
    KernelTreeCandidateSamplerOp);

}  // namespace tf_sampled
