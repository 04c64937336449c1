#include "custom_ops/core/group_by_key.h"

#include <algorithm>
#include <functional>
#include <utility>

namespace tf_sampled {

void GroupByKey(std::vector<int64_t> keys, int64_t max_key, KeyGroups* groups) {
  const int64_t n = static_cast<int64_t>(keys.size());
  // Keys already distinct and ascending (the fused loss's row gradients, the
  // rows a sparse optimizer step gets from it): one group per position.
  if (std::is_sorted(keys.begin(), keys.end(), std::less_equal<int64_t>())) {
    groups->offsets.resize(n + 1);
    groups->entries.resize(n);
    for (int64_t i = 0; i <= n; ++i) groups->offsets[i] = i;
    for (int64_t i = 0; i < n; ++i) groups->entries[i] = i;
    groups->ids = std::move(keys);
    return;
  }
  // 11 bits a pass: linear in n, a few passes for any realistic key range.
  std::vector<int64_t> values(n), keys_tmp(n), values_tmp(n);
  for (int64_t i = 0; i < n; ++i) values[i] = i;
  int bits = 0;
  while (bits < 63 && (max_key >> bits) != 0) ++bits;
  constexpr int kDigitBits = 11;
  constexpr int64_t kBuckets = int64_t{1} << kDigitBits;
  std::vector<int64_t> counts(kBuckets);
  for (int shift = 0; shift < bits; shift += kDigitBits) {
    std::fill(counts.begin(), counts.end(), 0);
    for (int64_t i = 0; i < n; ++i) ++counts[(keys[i] >> shift) & (kBuckets - 1)];
    int64_t total = 0;
    for (int64_t k = 0; k < kBuckets; ++k) {
      const int64_t c = counts[k];
      counts[k] = total;
      total += c;
    }
    for (int64_t i = 0; i < n; ++i) {
      const int64_t pos = counts[(keys[i] >> shift) & (kBuckets - 1)]++;
      keys_tmp[pos] = keys[i];
      values_tmp[pos] = values[i];
    }
    keys.swap(keys_tmp);
    values.swap(values_tmp);
  }
  groups->ids.clear();
  groups->offsets.clear();
  for (int64_t i = 0; i < n; ++i) {
    if (i == 0 || keys[i] != keys[i - 1]) {
      groups->ids.push_back(keys[i]);
      groups->offsets.push_back(i);
    }
  }
  groups->offsets.push_back(n);
  groups->entries = std::move(values);
}

}  // namespace tf_sampled
