// Validation shared by the LSH OpKernels: every attribute and input a user
// can pass is checked here (InvalidArgument naming the argument and the bad
// value) before the framework-free core sees it. Table contents are checked
// where they are read (a sampling call reads L buckets, not the tables).
#ifndef TF_SAMPLED_KERNELS_LSH_COMMON_H_
#define TF_SAMPLED_KERNELS_LSH_COMMON_H_

#include <cstdint>
#include <limits>
#include <string>

#include "custom_ops/core/lsh_hash.h"
#include "custom_ops/core/lsh_proposal.h"
#include "custom_ops/kernels/common.h"

namespace tf_sampled {

// Class ids are stored as int32.
constexpr int64_t kMaxLshClasses = std::numeric_limits<int32_t>::max();
// Entries of the bucket array (and of the codes array): 4 GB of int32.
constexpr int64_t kMaxLshSlots = int64_t{1} << 30;
constexpr int64_t kMaxLshTables = int64_t{1} << 24;
constexpr int64_t kMaxBinSize = int64_t{1} << 16;

// The hash attributes every LSH op carries.
struct LshAttrs {
  HashFamily family = HashFamily::kSimHash;
  int64_t num_tables = 1;
  int64_t num_hashes = 1;
  int64_t bin_size = 8;

  absl::Status Parse(OpKernelConstruction* ctx);

  // Buckets per table (2^code_bits); valid after Parse.
  int64_t NumBuckets() const;

  // The hash spec for rows of width `dim`, validating hash_params
  // ([L * K, dim] directions for SimHash, [L * K, bin_size] coordinate
  // indices in [0, dim) for DWTA).
  absl::Status MakeSpec(const Tensor& params, int64_t dim, HashSpec* spec) const;
};

// Parses epsilon (the uniform share of the proposal): in (0, 1].
absl::Status ParseEpsilon(OpKernelConstruction* ctx, float* epsilon);

// Parses a count attribute that must be >= 1.
absl::Status ParsePositive(OpKernelConstruction* ctx, const char* name,
                           int64_t* value);

// The table variables, read in place under shared locks: inputs 0, 1, 2 are
// buckets, counts and codes; with `embeddings_input` >= 0 that input is the
// [C, d] float embeddings variable, locked with them.
struct LshTables {
  TableView view;
  const float* embeddings = nullptr;
  int64_t dim = 0;
  LockedVariables variables;

  absl::Status Parse(OpKernelContext* ctx, const LshAttrs& attrs,
                     int embeddings_input = -1);
};

// Errors for table contents found bad while reading.
absl::Status BadCountError(const TableShape& shape, int64_t bucket,
                           const int32_t* counts);
absl::Status BadMemberError(int64_t query);

}  // namespace tf_sampled

#endif  // TF_SAMPLED_KERNELS_LSH_COMMON_H_
