// Sampling from the LSH tables: per-example negatives, log q of given
// classes, and the batch-shared candidate sampler with TensorFlow's contract.
#include <cmath>
#include <limits>
#include <vector>

#include "custom_ops/kernels/candidate_sampling.h"
#include "custom_ops/kernels/lsh_common.h"
#include "custom_ops/kernels/sampler_ops.h"

namespace tf_sampled {

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

}  // namespace

// The LSH family of the sampling-op skeleton (sampler_ops.h): inputs the
// tables (buckets, counts, codes; variable handles read in place),
// hash_params and the `queries`; attributes the hash family and epsilon.
class LshFamily {
 public:
  using Inputs = LshQueryInputs;
  static constexpr const char* kQueries = "queries";
  static constexpr bool kIdsOnHost = true;

  absl::Status Init(OpKernelConstruction* ctx, SamplerOp) {
    TF_RETURN_IF_ERROR(attrs_.Parse(ctx));
    return ParseEpsilon(ctx, &epsilon_);
  }

  absl::Status ParseInputs(OpKernelContext* ctx, Inputs* in) const {
    return in->Parse(ctx, attrs_);
  }
  static int64_t Batch(const Inputs& in) { return in.batch; }
  static int64_t NumClasses(const Inputs& in) { return in.tables.view.shape.num_classes; }

  absl::Status Sample(OpKernelContext* ctx, const Inputs& in,
                      const SampleRequest& r) const {
    const LshProposal proposal(in.tables.view, epsilon_);
    ReadFailures failures;
    ForEachQuery(ctx, in, proposal, in.QueryCost(r.num_sampled + r.num_true), &failures,
                 [&](int64_t b, const LshQuery& query) {
                   Random rng(QuerySeed(*r.block, b));
                   const int64_t first = b * r.num_sampled, last = first + r.num_sampled;
                   for (int64_t s = first; s < last; ++s) {
                     r.ids[s] = proposal.Draw(query, &rng);
                     if (r.ids[s] < 0) {
                       failures.member.Record(b);
                       return false;
                     }
                     proposal.Prefetch(r.ids[s]);
                   }
                   const int64_t* truth = r.true_classes;
                   for (int64_t t = b * r.num_true; t < (b + 1) * r.num_true; ++t) {
                     proposal.Prefetch(truth[t]);
                   }
                   for (int64_t s = first; s < last; ++s) {
                     r.log_q[s] = LogOf(proposal.Prob(query, r.ids[s]));
                   }
                   for (int64_t t = b * r.num_true; t < (b + 1) * r.num_true; ++t) {
                     r.true_log_q[t] = LogOf(proposal.Prob(query, truth[t]));
                   }
                   return true;
                 });
    return failures.Status(in.tables.view);
  }

  absl::Status LogProb(OpKernelContext* ctx, const Inputs& in,
                       const LogProbRequest& r) const {
    const LshProposal proposal(in.tables.view, epsilon_);
    ReadFailures failures;
    ForEachQuery(ctx, in, proposal, in.QueryCost(r.n), &failures,
                 [&](int64_t b, const LshQuery& query) {
                   for (int64_t k = b * r.n; k < (b + 1) * r.n; ++k) {
                     r.log_q[k] = LogOf(proposal.Prob(query, r.classes[k]));
                   }
                   return true;
                 });
    return failures.Status(in.tables.view);
  }

  absl::Status SampleShared(OpKernelContext* ctx, const Inputs& in,
                            const SharedRequest& r, int64_t* num_tries) const {
    const TableView& view = in.tables.view;
    const LshProposal proposal(view, epsilon_);
    std::vector<LshQuery> queries(r.batch);
    ReadFailures failures;
    ForEachQuery(ctx, in, proposal, in.QueryCost(0), &failures,
                 [&](int64_t b, const LshQuery& query) {
                   queries[b] = query;
                   return true;
                 });
    TF_RETURN_IF_ERROR(failures.Status(view));
    const LshMixture mixture(proposal, std::move(queries));

    Random rng(QuerySeed(r.block, 0));
    auto draw = [&](int64_t n, int64_t* ids, float* log_q) -> absl::Status {
      for (int64_t i = 0; i < n; ++i) {
        ids[i] = mixture.Draw(&rng);
        if (ids[i] < 0) return BadMemberError(0);
        log_q[i] = LogOf(mixture.Prob(ids[i]));
      }
      return absl::OkStatus();
    };
    TF_RETURN_IF_ERROR(SampleCandidates(r.unique, r.num_sampled, r.range_max, draw,
                                        r.sampled, r.sampled_log_q, num_tries));
    ParallelFor(ctx, r.batch * r.num_true, 4 * view.shape.num_tables,
                [&](int64_t begin, int64_t end) {
                  for (int64_t i = begin; i < end; ++i) {
                    r.true_log_q[i] = LogOf(mixture.Prob(r.true_classes[i]));
                  }
                });
    return absl::OkStatus();
  }

 private:
  LshAttrs attrs_;
  float epsilon_;
};

TF_SAMPLED_REGISTER_SAMPLER_KERNELS("Lsh", LshFamily);

}  // namespace tf_sampled
