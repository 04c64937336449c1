// Sampling from the LSH tables: per-example negatives, log q of given
// classes, and the batch-shared candidate sampler with TensorFlow's contract.
#include <cmath>
#include <limits>
#include <vector>

#include "custom_ops/kernels/candidate_sampling.h"
#include "custom_ops/kernels/lsh_common.h"

namespace tf_sampled {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::TensorShape;

namespace {

// Everything a query op reads: the tables (inputs 0-2), hash_params (3) and
// the finite queries [B, d] (4).
struct LshQueryInputs {
  LshTables tables;
  HashSpec spec;
  const float* queries = nullptr;
  int64_t batch = 0;

  absl::Status Parse(OpKernelContext* ctx, const LshAttrs& attrs) {
    TF_RETURN_IF_ERROR(tables.Parse(ctx, attrs));
    const Tensor& queries_t = ctx->input(4);
    TF_RETURN_IF_ERROR(CheckRank(queries_t, 2, "queries"));
    TF_RETURN_IF_ERROR(attrs.MakeSpec(ctx->input(3), queries_t.dim_size(1), &spec));
    TF_RETURN_IF_ERROR(CheckFinite(queries_t.flat<float>().data(), queries_t.NumElements(),
                                   "queries (the inputs h, or the true classes' "
                                   "embeddings w_y)"));
    queries = queries_t.flat<float>().data();
    batch = queries_t.dim_size(0);
    return absl::OkStatus();
  }

  // Class ids [batch, n] in range (`name` is the input's name).
  absl::Status CheckIds(const Tensor& ids, const char* name) const {
    TF_RETURN_IF_ERROR(CheckRank(ids, 2, name));
    if (ids.dim_size(0) != batch) {
      return errors::InvalidArgument(name, " must have ", batch,
                                     " rows like queries, got shape ",
                                     ids.shape().DebugString());
    }
    return CheckClassIds(ids, tables.view.shape.num_classes, name);
  }

  // Work estimate for one query: hashing it and `draws` draws or log q's.
  int64_t QueryCost(int64_t draws) const {
    return spec.NumHashes() * spec.ParamCols() +
           draws * (tables.view.shape.num_tables + 16);
  }
};

// Per-thread buffers for hashing a query and holding its buckets.
struct QueryScratch {
  explicit QueryScratch(const HashSpec& spec)
      : codes(spec.num_tables), values(spec.NumHashes()), fill(spec.NumHashes()) {}
  std::vector<int32_t> codes, values, fill;
  LshQuery query;
};

// Failures found while reading the tables, reported after a sharded loop.
struct ReadFailures {
  ShardFailure count;   // item = bucket row with a bad count
  ShardFailure member;  // item = query that read a bad member

  absl::Status Status(const TableView& view) const {
    if (count.failed()) return BadCountError(view.shape, count.item(), view.counts);
    if (member.failed()) return BadMemberError(member.item());
    return absl::OkStatus();
  }
};

// Hashes query b and looks its buckets up; false after recording a failure.
bool SetQuery(const LshQueryInputs& in, const LshProposal& proposal, int64_t b,
              QueryScratch* scratch, ReadFailures* failures) {
  // Queries were checked finite, so hashing succeeds.
  HashRow(in.spec, in.queries + b * in.spec.dim, scratch->codes.data(),
          scratch->values.data(), scratch->fill.data());
  int64_t bad_bucket;
  if (!proposal.SetQuery(scratch->codes.data(), &scratch->query, &bad_bucket)) {
    failures->count.Record(bad_bucket);
    return false;
  }
  return true;
}

// Runs fn(b, query) for every query b on the thread pool, once its buckets
// are looked up; fn returns false to stop its shard (after recording why).
template <typename Fn>
void ForEachQuery(OpKernelContext* ctx, const LshQueryInputs& in,
                  const LshProposal& proposal, int64_t cost, ReadFailures* failures,
                  Fn&& fn) {
  ParallelFor(ctx, in.batch, cost, [&](int64_t begin, int64_t end) {
    QueryScratch scratch(in.spec);
    for (int64_t b = begin; b < end; ++b) {
      if (!SetQuery(in, proposal, b, &scratch, failures)) return;
      if (!fn(b, scratch.query)) return;
    }
  });
}

float LogOf(double p) { return static_cast<float>(std::log(p)); }

// The sampling ops' `counter` input (after the queries and true_classes).
constexpr int kCounterInput = 6;

}  // namespace

class LshSampleOp : public OpKernel {
 public:
  explicit LshSampleOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.Parse(ctx));
    OP_REQUIRES_OK(ctx, ParsePositive(ctx, "num_sampled", &num_sampled_));
    OP_REQUIRES_OK(ctx, ParseEpsilon(ctx, &epsilon_));
    OP_REQUIRES_OK(ctx, stream_.Init(ctx));
  }

  void Compute(OpKernelContext* ctx) override {
    LshQueryInputs in;
    OP_REQUIRES_OK(ctx, in.Parse(ctx, attrs_));
    const Tensor& true_classes = ctx->input(5);
    OP_REQUIRES_OK(ctx, in.CheckIds(true_classes, "true_classes"));
    const int64_t num_true = true_classes.dim_size(1);
    ::tensorflow::random::PhiloxRandom block;
    OP_REQUIRES_OK(ctx, stream_.CallBlock(ctx, kCounterInput, &block));
    Tensor *ids_t, *log_q_t, *true_log_q_t;
    OP_REQUIRES_OK(ctx, AllocatePerExampleOutputs(ctx, in.batch, num_sampled_, num_true,
                                                  &ids_t, &log_q_t, &true_log_q_t));
    if (in.batch == 0) return;

    const LshProposal proposal(in.tables.view, epsilon_);
    int64_t* ids = ids_t->flat<int64_t>().data();
    float* log_q = log_q_t->flat<float>().data();
    float* true_log_q = true_log_q_t->flat<float>().data();
    const int64_t* truth = true_classes.flat<int64_t>().data();
    ReadFailures failures;
    ForEachQuery(ctx, in, proposal, in.QueryCost(num_sampled_ + num_true), &failures,
                 [&](int64_t b, const LshQuery& query) {
                   Random rng(QuerySeed(block, b));
                   const int64_t first = b * num_sampled_, last = first + num_sampled_;
                   for (int64_t s = first; s < last; ++s) {
                     ids[s] = proposal.Draw(query, &rng);
                     if (ids[s] < 0) {
                       failures.member.Record(b);
                       return false;
                     }
                     proposal.Prefetch(ids[s]);
                   }
                   for (int64_t t = b * num_true; t < (b + 1) * num_true; ++t) {
                     proposal.Prefetch(truth[t]);
                   }
                   for (int64_t s = first; s < last; ++s) {
                     log_q[s] = LogOf(proposal.Prob(query, ids[s]));
                   }
                   for (int64_t t = b * num_true; t < (b + 1) * num_true; ++t) {
                     true_log_q[t] = LogOf(proposal.Prob(query, truth[t]));
                   }
                   return true;
                 });
    OP_REQUIRES_OK(ctx, failures.Status(in.tables.view));
  }

 private:
  LshAttrs attrs_;
  int64_t num_sampled_;
  float epsilon_;
  SampleStream stream_;
};

class LshLogProbOp : public OpKernel {
 public:
  explicit LshLogProbOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.Parse(ctx));
    OP_REQUIRES_OK(ctx, ParseEpsilon(ctx, &epsilon_));
  }

  void Compute(OpKernelContext* ctx) override {
    LshQueryInputs in;
    OP_REQUIRES_OK(ctx, in.Parse(ctx, attrs_));
    const Tensor& classes = ctx->input(5);
    OP_REQUIRES_OK(ctx, in.CheckIds(classes, "classes"));
    const int64_t n = classes.dim_size(1);
    Tensor* log_q_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({in.batch, n}), &log_q_t));
    if (in.batch == 0 || n == 0) return;
    const LshProposal proposal(in.tables.view, epsilon_);
    const int64_t* ids = classes.flat<int64_t>().data();
    float* log_q = log_q_t->flat<float>().data();
    ReadFailures failures;
    ForEachQuery(ctx, in, proposal, in.QueryCost(n), &failures,
                 [&](int64_t b, const LshQuery& query) {
                   for (int64_t k = b * n; k < (b + 1) * n; ++k) {
                     log_q[k] = LogOf(proposal.Prob(query, ids[k]));
                   }
                   return true;
                 });
    OP_REQUIRES_OK(ctx, failures.Status(in.tables.view));
  }

 private:
  LshAttrs attrs_;
  float epsilon_;
};

class LshCandidateSamplerOp : public OpKernel {
 public:
  explicit LshCandidateSamplerOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.Parse(ctx));
    OP_REQUIRES_OK(ctx, ParseEpsilon(ctx, &epsilon_));
    OP_REQUIRES_OK(ctx, ParsePositive(ctx, "num_true", &num_true_));
    OP_REQUIRES_OK(ctx, ParsePositive(ctx, "num_sampled", &num_sampled_));
    OP_REQUIRES_OK(ctx, ParsePositive(ctx, "range_max", &range_max_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("unique", &unique_));
    OP_REQUIRES(ctx, !unique_ || num_sampled_ <= range_max_,
                errors::InvalidArgument("num_sampled (", num_sampled_,
                                        ") must be <= range_max (", range_max_,
                                        ") when unique=True"));
    OP_REQUIRES_OK(ctx, stream_.Init(ctx));
  }

  void Compute(OpKernelContext* ctx) override {
    LshQueryInputs in;
    OP_REQUIRES_OK(ctx, in.Parse(ctx, attrs_));
    const TableView& view = in.tables.view;
    OP_REQUIRES(ctx, range_max_ == view.shape.num_classes,
                errors::InvalidArgument(
                    "range_max (", range_max_,
                    ") must equal the sampler's number of classes (",
                    view.shape.num_classes, ")"));
    const Tensor& true_classes = ctx->input(5);
    OP_REQUIRES_OK(ctx, in.CheckIds(true_classes, "true_classes"));
    OP_REQUIRES(ctx, true_classes.dim_size(1) == num_true_,
                errors::InvalidArgument(
                    "true_classes must have num_true=", num_true_,
                    " columns, got shape ", true_classes.shape().DebugString()));
    ::tensorflow::random::PhiloxRandom block;
    OP_REQUIRES_OK(ctx, stream_.CallBlock(ctx, kCounterInput, &block));
    Tensor *sampled_t, *true_count_t, *sampled_count_t;
    OP_REQUIRES_OK(ctx, AllocateCandidateOutputs(ctx, in.batch, num_sampled_, num_true_,
                                                 &sampled_t, &true_count_t,
                                                 &sampled_count_t));
    int64_t* sampled = sampled_t->flat<int64_t>().data();
    // The count outputs hold log q until the number of tries is known.
    float* sampled_log_q = sampled_count_t->flat<float>().data();
    float* true_log_q = true_count_t->flat<float>().data();

    const LshProposal proposal(view, epsilon_);
    std::vector<LshQuery> queries(in.batch);
    ReadFailures failures;
    ForEachQuery(ctx, in, proposal, in.QueryCost(0), &failures,
                 [&](int64_t b, const LshQuery& query) {
                   queries[b] = query;
                   return true;
                 });
    OP_REQUIRES_OK(ctx, failures.Status(view));
    const LshMixture mixture(proposal, std::move(queries));

    Random rng(QuerySeed(block, 0));
    auto draw = [&](int64_t n, int64_t* ids, float* log_q) -> absl::Status {
      for (int64_t i = 0; i < n; ++i) {
        ids[i] = mixture.Draw(&rng);
        if (ids[i] < 0) return BadMemberError(0);
        log_q[i] = LogOf(mixture.Prob(ids[i]));
      }
      return absl::OkStatus();
    };
    int64_t num_tries;
    OP_REQUIRES_OK(ctx, SampleCandidates(unique_, num_sampled_, range_max_, draw, sampled,
                                         sampled_log_q, &num_tries));
    const int64_t* truth = true_classes.flat<int64_t>().data();
    ParallelFor(ctx, in.batch * num_true_, 4 * view.shape.num_tables,
                [&](int64_t begin, int64_t end) {
                  for (int64_t i = begin; i < end; ++i) {
                    true_log_q[i] = LogOf(mixture.Prob(truth[i]));
                  }
                });
    LogQToExpectedCounts(sampled_log_q, num_sampled_, num_sampled_, num_tries);
    LogQToExpectedCounts(true_log_q, in.batch * num_true_, num_sampled_, num_tries);
  }

 private:
  LshAttrs attrs_;
  float epsilon_;
  int64_t num_true_, num_sampled_, range_max_;
  bool unique_;
  SampleStream stream_;
};

REGISTER_KERNEL_BUILDER(Name("TfSampled>LshSample").Device(DEVICE_CPU), LshSampleOp);
REGISTER_KERNEL_BUILDER(Name("TfSampled>LshLogProb").Device(DEVICE_CPU), LshLogProbOp);
REGISTER_KERNEL_BUILDER(Name("TfSampled>LshCandidateSampler").Device(DEVICE_CPU),
                        LshCandidateSamplerOp);

}  // namespace tf_sampled
