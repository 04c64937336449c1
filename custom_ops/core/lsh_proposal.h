// The LSH sampler's proposal, defined so that q is exactly computable.
//
// A query (the input h, or the true class's embedding w_y) has one bucket
// per table, B_l of size n_l. One draw:
//   with probability eps: a uniform class;
//   else a uniform table l; a uniform member of B_l, or a uniform class if
//   B_l is empty.
// Hence, with E the number of empty buckets among the query's L,
//   q(i) = (eps + (1 - eps) E / L) / C + (1 - eps) / L * sum_{l: i in B_l} 1 / n_l,
// positive for every class when eps > 0, and computable for any class from
// its stored codes (i can only be in the bucket its code names) and a binary
// search of that bucket. The tables may lag the embeddings: q is exact for
// the tables as they are.
//
// The batch-shared mode samples the mixture (1/B) sum_b q(.|query_b): a
// uniform query, then a draw from it. Its probability sums, per table, the
// weight of the class's bucket over the queries that hit it.
#ifndef TF_SAMPLED_CORE_LSH_PROPOSAL_H_
#define TF_SAMPLED_CORE_LSH_PROPOSAL_H_

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "custom_ops/core/lsh_tables.h"
#include "custom_ops/core/random.h"

namespace tf_sampled {

// The tables a proposal reads (arrays of lsh_tables.h).
struct TableView {
  TableShape shape;
  const int32_t* buckets = nullptr;
  const int32_t* counts = nullptr;
  const int32_t* codes = nullptr;
};

// One query's buckets.
struct LshQuery {
  std::vector<int32_t> code;    // [L]
  std::vector<int32_t> size;    // [L] n_l
  int64_t empty = 0;            // E
};

class LshProposal {
 public:
  LshProposal(const TableView& view, double epsilon)
      : view_(view), epsilon_(epsilon) {}

  const TableView& view() const { return view_; }
  double epsilon() const { return epsilon_; }

  // The query's buckets from its codes [L] (each in [0, num_buckets)).
  // Returns false with *bad_bucket set if a count is outside
  // [0, bucket_size].
  bool SetQuery(const int32_t* codes, LshQuery* query,
                int64_t* bad_bucket) const;

  // One draw, or -1 if the member read is not a class id in [0, C).
  int64_t Draw(const LshQuery& query, Random* rng) const;

  // q(id | query) for a valid class id.
  double Prob(const LshQuery& query, int64_t id) const;

  // Starts loading the class's stored codes, the one read of Prob that
  // misses the cache on a large table: issued for all of a query's ids
  // before their Prob calls, the misses overlap instead of queueing.
  void Prefetch(int64_t id) const {
#if defined(__GNUC__)
    __builtin_prefetch(view_.codes + id * view_.shape.num_tables);
#endif
  }

  // The uniform part of q, the same for every class:
  // (eps + (1 - eps) E / L) / C.
  double UniformProb(const LshQuery& query) const;

 private:
  TableView view_;
  double epsilon_;
};

// The batch mixture (1/B) sum_b q(.|query_b).
class LshMixture {
 public:
  // `queries` must have been set by proposal.SetQuery.
  LshMixture(const LshProposal& proposal, std::vector<LshQuery> queries);

  // One draw (-1 as for LshProposal::Draw).
  int64_t Draw(Random* rng) const;

  // q_bar(id) for a valid class id.
  double Prob(int64_t id) const;

 private:
  struct Hit {
    int64_t queries = 0;  // how many (query, table) pairs look this bucket up
    int64_t size = 0;
  };
  const LshProposal& proposal_;
  std::vector<LshQuery> queries_;
  std::unordered_map<int64_t, Hit> hits_;  // non-empty buckets only
  double uniform_ = 0;
};

}  // namespace tf_sampled

#endif  // TF_SAMPLED_CORE_LSH_PROPOSAL_H_
