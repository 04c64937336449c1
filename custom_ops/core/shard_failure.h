// Records the first failing item of a sharded loop (the core reports
// non-finite class rows it read) so the caller can fail after the loop.
// Framework-free.
#ifndef TF_SAMPLED_CORE_SHARD_FAILURE_H_
#define TF_SAMPLED_CORE_SHARD_FAILURE_H_

#include <atomic>
#include <cstdint>

namespace tf_sampled {

class ShardFailure {
 public:
  void Record(int64_t item) {
    int64_t expected = -1;
    first_.compare_exchange_strong(expected, item);
  }
  bool failed() const { return first_.load() >= 0; }
  int64_t item() const { return first_.load(); }

 private:
  std::atomic<int64_t> first_{-1};
};

}  // namespace tf_sampled

#endif  // TF_SAMPLED_CORE_SHARD_FAILURE_H_
