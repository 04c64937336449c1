#include "custom_ops/core/lsh_proposal.h"

#include <utility>

namespace tf_sampled {

bool LshProposal::SetQuery(const int32_t* codes, LshQuery* query,
                           int64_t* bad_bucket) const {
  const TableShape& shape = view_.shape;
  query->code.assign(codes, codes + shape.num_tables);
  query->size.resize(shape.num_tables);
  query->empty = 0;
  for (int64_t l = 0; l < shape.num_tables; ++l) {
    const int64_t bucket = shape.Bucket(l, codes[l]);
    const int32_t n = view_.counts[bucket];
    if (n < 0 || n > shape.bucket_size) {
      *bad_bucket = bucket;
      return false;
    }
    query->size[l] = n;
    query->empty += n == 0;
  }
  return true;
}

int64_t LshProposal::Draw(const LshQuery& query, Random* rng) const {
  const TableShape& shape = view_.shape;
  if (rng->Uniform() < epsilon_) return rng->Below(shape.num_classes);
  const int64_t l = rng->Below(shape.num_tables);
  const int32_t n = query.size[l];
  if (n == 0) return rng->Below(shape.num_classes);
  const int64_t id = view_.buckets[shape.Bucket(l, query.code[l]) * shape.bucket_size +
                                   rng->Below(n)];
  return id >= 0 && id < shape.num_classes ? id : -1;
}

double LshProposal::UniformProb(const LshQuery& query) const {
  const TableShape& shape = view_.shape;
  return (epsilon_ + (1 - epsilon_) * double(query.empty) / shape.num_tables) /
         shape.num_classes;
}

double LshProposal::Prob(const LshQuery& query, int64_t id) const {
  const TableShape& shape = view_.shape;
  const int32_t* class_codes = view_.codes + id * shape.num_tables;
  double bucket_sum = 0;
  for (int64_t l = 0; l < shape.num_tables; ++l) {
    const int32_t n = query.size[l];
    if (n == 0 || class_codes[l] != query.code[l]) continue;
    const int32_t* members =
        view_.buckets + shape.Bucket(l, query.code[l]) * shape.bucket_size;
    if (BucketHolds(members, n, id)) bucket_sum += 1.0 / n;
  }
  return UniformProb(query) + (1 - epsilon_) / shape.num_tables * bucket_sum;
}

LshMixture::LshMixture(const LshProposal& proposal,
                       std::vector<LshQuery> queries)
    : proposal_(proposal), queries_(std::move(queries)) {
  const TableShape& shape = proposal.view().shape;
  double uniform_sum = 0;
  for (const LshQuery& query : queries_) {
    uniform_sum += proposal.UniformProb(query);
    for (int64_t l = 0; l < shape.num_tables; ++l) {
      if (query.size[l] == 0) continue;
      Hit& hit = hits_[shape.Bucket(l, query.code[l])];
      ++hit.queries;
      hit.size = query.size[l];
    }
  }
  // An empty batch has no mixture: it samples uniformly.
  uniform_ = queries_.empty() ? 1.0 / shape.num_classes
                              : uniform_sum / queries_.size();
}

int64_t LshMixture::Draw(Random* rng) const {
  if (queries_.empty()) return rng->Below(proposal_.view().shape.num_classes);
  return proposal_.Draw(queries_[rng->Below(queries_.size())], rng);
}

double LshMixture::Prob(int64_t id) const {
  if (queries_.empty()) return uniform_;
  const TableView& view = proposal_.view();
  const TableShape& shape = view.shape;
  const int32_t* class_codes = view.codes + id * shape.num_tables;
  double bucket_sum = 0;
  for (int64_t l = 0; l < shape.num_tables; ++l) {
    // A stored code outside the table cannot name a bucket of table l.
    if (class_codes[l] < 0 || class_codes[l] >= shape.num_buckets) continue;
    const int64_t bucket = shape.Bucket(l, class_codes[l]);
    const auto it = hits_.find(bucket);
    if (it == hits_.end()) continue;
    const Hit& hit = it->second;
    if (BucketHolds(view.buckets + bucket * shape.bucket_size, hit.size, id)) {
      bucket_sum += double(hit.queries) / hit.size;
    }
  }
  return uniform_ + (1 - proposal_.epsilon()) /
                        (double(shape.num_tables) * queries_.size()) * bucket_sum;
}

}  // namespace tf_sampled
