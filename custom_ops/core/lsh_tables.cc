#include "custom_ops/core/lsh_tables.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

namespace tf_sampled {

bool BucketHolds(const int32_t* members, int64_t count, int64_t id) {
  return std::binary_search(members, members + count, id,
                            [](int64_t a, int64_t b) { return a < b; });
}

void FillTable(const TableShape& shape, const int32_t* codes, int64_t table,
               Random* rng, int32_t* buckets, int32_t* counts,
               std::vector<int64_t>* seen) {
  const int64_t bs = shape.bucket_size;
  int32_t* rows = buckets + table * shape.num_buckets * bs;
  int32_t* sizes = counts + table * shape.num_buckets;
  std::fill(rows, rows + shape.num_buckets * bs, -1);
  std::fill(sizes, sizes + shape.num_buckets, 0);
  seen->assign(shape.num_buckets, 0);
  for (int64_t c = 0; c < shape.num_classes; ++c) {
    const int64_t b = codes[c * shape.num_tables + table];
    const int64_t k = (*seen)[b]++;
    if (k < bs) {
      rows[b * bs + k] = static_cast<int32_t>(c);
      ++sizes[b];
    } else {
      const uint64_t j = rng->Below(uint64_t(k) + 1);
      if (j < uint64_t(bs)) rows[b * bs + j] = static_cast<int32_t>(c);
    }
  }
  // Ids went in ascending; only replacements broke the order.
  for (int64_t b = 0; b < shape.num_buckets; ++b) {
    if ((*seen)[b] > bs) std::sort(rows + b * bs, rows + (b + 1) * bs);
  }
}

namespace {

// A uniformly random member not inserted by this call (any member if all
// were): a row touched by the step stays in unless more than bucket_size of
// them share the bucket. A few rejection draws find one almost always; the
// scan is the fallback.
size_t Victim(const std::vector<int32_t>& members,
              const std::unordered_set<int32_t>& inserted, Random* rng,
              std::vector<size_t>* evictable) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    const size_t i = rng->Below(members.size());
    if (!inserted.count(members[i])) return i;
  }
  evictable->clear();
  for (size_t i = 0; i < members.size(); ++i) {
    if (!inserted.count(members[i])) evictable->push_back(i);
  }
  if (evictable->empty()) return rng->Below(members.size());
  return (*evictable)[rng->Below(evictable->size())];
}

}  // namespace

bool ReinsertTable(const TableShape& shape, const int32_t* buckets,
                   const int32_t* counts, const int32_t* codes,
                   const int64_t* ids, const int32_t* new_codes, int64_t n,
                   int64_t table, Random* rng, std::vector<BucketEdit>* edits,
                   int64_t* bad_bucket) {
  const int64_t bs = shape.bucket_size;
  std::unordered_map<int64_t, std::vector<int32_t>> work;
  work.reserve(2 * n);
  std::unordered_set<int32_t> inserted;
  std::vector<size_t> evictable;
  // The bucket's current members (loaded from the state on first touch).
  auto members = [&](int64_t bucket) -> std::vector<int32_t>* {
    auto it = work.find(bucket);
    if (it != work.end()) return &it->second;
    const int64_t count = counts[bucket];
    if (count < 0 || count > bs) return nullptr;
    const int32_t* row = buckets + bucket * bs;
    return &work.emplace(bucket, std::vector<int32_t>(row, row + count))
                .first->second;
  };
  for (int64_t r = 0; r < n; ++r) {
    const int32_t id = static_cast<int32_t>(ids[r]);
    const int64_t old_bucket =
        shape.Bucket(table, codes[ids[r] * shape.num_tables + table]);
    const int64_t new_bucket =
        shape.Bucket(table, new_codes[r * shape.num_tables + table]);
    std::vector<int32_t>* old_members = members(old_bucket);
    if (old_members == nullptr) {
      *bad_bucket = old_bucket;
      return false;
    }
    auto pos = std::lower_bound(old_members->begin(), old_members->end(), id);
    if (pos != old_members->end() && *pos == id) old_members->erase(pos);
    std::vector<int32_t>* new_members = members(new_bucket);
    if (new_members == nullptr) {
      *bad_bucket = new_bucket;
      return false;
    }
    if (static_cast<int64_t>(new_members->size()) >= bs) {
      new_members->erase(new_members->begin() +
                         Victim(*new_members, inserted, rng, &evictable));
    }
    new_members->insert(
        std::lower_bound(new_members->begin(), new_members->end(), id), id);
    inserted.insert(id);
  }
  const size_t first = edits->size();
  for (auto& [bucket, list] : work) {
    edits->push_back(BucketEdit{bucket, std::move(list)});
  }
  std::sort(edits->begin() + first, edits->end(),
            [](const BucketEdit& a, const BucketEdit& b) { return a.bucket < b.bucket; });
  return true;
}

}  // namespace tf_sampled
