// The LSH sampler's hash tables as plain arrays, framework-free.
//
// L tables of NB = 2^code_bits buckets, each bucket a fixed block of
// `bucket_size` int32 class ids:
//   buckets [L * NB, bucket_size]  members sorted ascending, then -1 padding
//   counts  [L * NB]               members per bucket
//   codes   [C, L]                 each class's code in each table, as of
//                                  its last insertion
// Bucket b of table l is row l * NB + b. A class is a member of at most one
// bucket per table, the one its code names; a full bucket keeps a subset of
// the classes whose code names it, so a class may be in none. Sorted
// members make membership a binary search, which the exact log q needs.
#ifndef TF_SAMPLED_CORE_LSH_TABLES_H_
#define TF_SAMPLED_CORE_LSH_TABLES_H_

#include <cstdint>
#include <vector>

#include "custom_ops/core/random.h"

namespace tf_sampled {

struct TableShape {
  int64_t num_classes = 0;
  int64_t num_tables = 1;
  int64_t num_buckets = 1;  // per table
  int64_t bucket_size = 1;

  int64_t Bucket(int64_t table, int64_t code) const {
    return table * num_buckets + code;
  }
  int64_t NumBucketRows() const { return num_tables * num_buckets; }
};

// Whether the sorted `members` [count] hold `id`.
bool BucketHolds(const int32_t* members, int64_t count, int64_t id);

// Fills table `table` of `buckets` / `counts` from all classes' codes
// [C, L]: each bucket holds a uniformly random subset of min(bucket_size, n)
// of its n classes (reservoir sampling), so an overflowing bucket does not
// favour small ids. `seen` is scratch of num_buckets counters.
void FillTable(const TableShape& shape, const int32_t* codes, int64_t table,
               Random* rng, int32_t* buckets, int32_t* counts,
               std::vector<int64_t>* seen);

// New contents of one bucket after re-insertion.
struct BucketEdit {
  int64_t bucket = 0;
  std::vector<int32_t> members;  // sorted, at most bucket_size
};

// Re-inserts the classes `ids` [n] (unique) into table `table`: each leaves
// the bucket of its stored code (codes [C, L], every code of these ids in
// [0, num_buckets)) and joins the bucket of its new code (new_codes [n, L]).
// A full bucket makes room by evicting a random member not inserted by this
// call: the rows a step touched are the ones training moves, and the
// scheduled full rebuild restores a uniform subset (and refills buckets a row
// left, whose other classes are not known here). Appends one edit per
// touched bucket, ascending.
// Returns false with *bad_bucket set if a touched bucket's count is outside
// [0, bucket_size].
bool ReinsertTable(const TableShape& shape, const int32_t* buckets,
                   const int32_t* counts, const int32_t* codes,
                   const int64_t* ids, const int32_t* new_codes, int64_t n,
                   int64_t table, Random* rng, std::vector<BucketEdit>* edits,
                   int64_t* bad_bucket);

}  // namespace tf_sampled

#endif  // TF_SAMPLED_CORE_LSH_TABLES_H_
