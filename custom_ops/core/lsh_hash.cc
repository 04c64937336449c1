#include "custom_ops/core/lsh_hash.h"

#include <cmath>

#include "custom_ops/core/dot.h"
#include "custom_ops/core/multiversion.h"

namespace tf_sampled {

bool ParseHashFamily(const std::string& name, HashFamily* family) {
  if (name == "simhash") {
    *family = HashFamily::kSimHash;
  } else if (name == "dwta") {
    *family = HashFamily::kDwta;
  } else {
    return false;
  }
  return true;
}

int HashSpec::BitsPerHash() const {
  if (family == HashFamily::kSimHash) return 1;
  int bits = 0;
  while ((int64_t{1} << bits) < bin_size && bits < 62) ++bits;
  return bits;
}

int HashSpec::CodeBits() const {
  const int64_t bits = BitsPerHash();
  if (bits > 0 && num_hashes > kMaxCodeBits / bits) return kMaxCodeBits + 1;
  return static_cast<int>(num_hashes * bits);
}

int64_t FirstBadDwtaParam(const HashSpec& spec) {
  const int64_t n = spec.NumHashes() * spec.bin_size;
  for (int64_t i = 0; i < n; ++i) {
    const float v = spec.params[i];
    if (!(v >= 0) || !(v < spec.dim) || v != std::floor(v)) return i;
  }
  return -1;
}

namespace {

// A fixed mixing function (splitmix64's finaliser): which hash an empty DWTA
// bin borrows from on each attempt. Fixed, so codes depend only on the row.
uint64_t Mix(uint64_t a, uint64_t b) {
  uint64_t z = a * 0x9e3779b97f4a7c15ULL + b + 0x632be59bd9b4e019ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The projections are most of the cost of building and re-inserting (K L dim
// per row), hence multiversioned. The x86-64-v3 and baseline versions differ
// only by FMA rounding, so a bit can differ only for a row within float
// rounding of a hyperplane (either bit is a valid hash; one library always
// takes the same version on one machine).
TF_SAMPLED_MULTIVERSION
void SimHashValues(const HashSpec& spec, const float* x, int32_t* values) {
  for (int64_t j = 0; j < spec.NumHashes(); ++j) {
    values[j] = DotFloat(spec.params + j * spec.dim, x, spec.dim) >= 0.0f;
  }
}

void DwtaValues(const HashSpec& spec, const float* x, int32_t* values,
                int32_t* fill) {
  const int64_t n = spec.NumHashes();
  constexpr int32_t kEmpty = -1;
  for (int64_t j = 0; j < n; ++j) {
    const float* coords = spec.params + j * spec.bin_size;
    int32_t best = kEmpty;
    float best_value = 0.0f;
    for (int64_t m = 0; m < spec.bin_size; ++m) {
      const float v = x[static_cast<int64_t>(coords[m])];
      if (v == 0.0f) continue;  // zeros carry no information (sparse rows)
      if (best == kEmpty || v > best_value) {
        best = static_cast<int32_t>(m);
        best_value = v;
      }
    }
    fill[j] = best;
  }
  // Densification: an empty bin takes the value of the first non-empty bin
  // on its own probe sequence. A bounded number of probes keeps the cost
  // fixed; an all-zero row gets code 0 everywhere.
  const int max_probes = 64;
  for (int64_t j = 0; j < n; ++j) {
    int32_t value = fill[j];
    for (int probe = 1; value == kEmpty && probe <= max_probes; ++probe) {
      value = fill[Mix(j, probe) % uint64_t(n)];
    }
    values[j] = value == kEmpty ? 0 : value;
  }
}

}  // namespace

bool HashRow(const HashSpec& spec, const float* x, int32_t* codes,
             int32_t* values, int32_t* fill) {
  for (int64_t i = 0; i < spec.dim; ++i) {
    if (!std::isfinite(x[i])) return false;
  }
  if (spec.family == HashFamily::kSimHash) {
    SimHashValues(spec, x, values);
  } else {
    DwtaValues(spec, x, values, fill);
  }
  const int bits = spec.BitsPerHash();
  for (int64_t l = 0; l < spec.num_tables; ++l) {
    uint32_t code = 0;
    for (int64_t k = 0; k < spec.num_hashes; ++k) {
      code |= uint32_t(values[l * spec.num_hashes + k]) << (k * bits);
    }
    codes[l] = static_cast<int32_t>(code);
  }
  return true;
}

}  // namespace tf_sampled
