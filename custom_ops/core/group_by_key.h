// Groups positions by an integer key in linear time: the CSR layout both the
// loss gradient (columns by class row) and the batched sampler ((query, leaf)
// pairs by leaf) use to visit each key's entries once, without atomics.
// Framework-free.
#ifndef TF_SAMPLED_CORE_GROUP_BY_KEY_H_
#define TF_SAMPLED_CORE_GROUP_BY_KEY_H_

#include <cstdint>
#include <vector>

namespace tf_sampled {

struct KeyGroups {
  std::vector<int64_t> ids;      // [U] distinct keys, ascending
  std::vector<int64_t> offsets;  // [U + 1] into entries
  std::vector<int64_t> entries;  // [n] positions i, grouped by keys[i]
};

// Groups positions 0..n-1 by keys[i] in [0, max_key] (a stable LSD radix
// sort: within a group, positions stay ascending; keys already distinct and
// ascending are taken as they are). Consumes `keys`.
void GroupByKey(std::vector<int64_t> keys, int64_t max_key, KeyGroups* groups);

}  // namespace tf_sampled

#endif  // TF_SAMPLED_CORE_GROUP_BY_KEY_H_
