// Locality-sensitive hash families for the LSH sampler, framework-free.
//
// L tables of K hashes each. A row x [dim] gets one code per table, the K
// hash values concatenated into CodeBits() bits, so a table has 2^CodeBits()
// buckets, addressed directly (no probing: a lookup costs one read).
//
// SimHash (signed random projections, Charikar 2002): hash j is the bit
// [r_j . x >= 0] for a Gaussian direction r_j. Two vectors at angle theta
// collide on one bit with probability 1 - theta / pi.
//
// DWTA (densified winner-take-all, Chen & Shrivastava 2018): hash j looks at
// `bin_size` chosen coordinates of x and emits the position of the largest
// (log2(bin_size) bits). A bin whose coordinates are all zero is "empty" and
// borrows the value of another hash picked by a fixed mixing function, as
// the paper's densification does, so sparse rows still get full codes.
#ifndef TF_SAMPLED_CORE_LSH_HASH_H_
#define TF_SAMPLED_CORE_LSH_HASH_H_

#include <cstdint>
#include <string>

namespace tf_sampled {

enum class HashFamily : int { kSimHash = 0, kDwta = 1 };

// Parses "simhash" / "dwta".
bool ParseHashFamily(const std::string& name, HashFamily* family);

// Codes are int32 bucket numbers.
constexpr int kMaxCodeBits = 30;

struct HashSpec {
  HashFamily family = HashFamily::kSimHash;
  int64_t num_tables = 1;  // L
  int64_t num_hashes = 1;  // K, hashes per table
  int64_t bin_size = 2;    // DWTA: coordinates per hash, a power of two
  int64_t dim = 0;
  // SimHash: [L * K, dim] directions. DWTA: [L * K, bin_size] coordinate
  // indices in [0, dim), stored as whole floats.
  const float* params = nullptr;

  int BitsPerHash() const;
  // K * BitsPerHash(), without overflow for any K (capped at kMaxCodeBits + 1).
  int CodeBits() const;
  int64_t NumHashes() const { return num_tables * num_hashes; }
  int64_t ParamCols() const {
    return family == HashFamily::kSimHash ? dim : bin_size;
  }
};

// The L codes of row x [dim], each in [0, 2^CodeBits()). `values` and `fill`
// need NumHashes() ints. Returns false if x is not finite.
bool HashRow(const HashSpec& spec, const float* x, int32_t* codes,
             int32_t* values, int32_t* fill);

// Whether DWTA params are whole coordinate indices in [0, dim); returns the
// first bad flat index or -1.
int64_t FirstBadDwtaParam(const HashSpec& spec);

}  // namespace tf_sampled

#endif  // TF_SAMPLED_CORE_LSH_HASH_H_
