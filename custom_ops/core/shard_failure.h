// Records the failure of a sharded loop (the core reports entries it read
// that are bad: non-finite class rows, corrupt table entries) so the caller
// can fail after the loop. The lowest failing item wins, with the code the
// caller gave it, so the error reported does not depend on thread timing.
// Framework-free.
#ifndef TF_SAMPLED_CORE_SHARD_FAILURE_H_
#define TF_SAMPLED_CORE_SHARD_FAILURE_H_

#include <atomic>
#include <cstdint>
#include <mutex>

namespace tf_sampled {

class ShardFailure {
 public:
  // `code` tells the caller which error `item` is (0 when there is one kind).
  void Record(int64_t item, int code = 0) {
    std::lock_guard<std::mutex> lock(mu_);  // failures are rare: no contention
    if (!failed_.load() || item < item_) {
      item_ = item;
      code_ = code;
      failed_.store(true);
    }
  }
  bool failed() const { return failed_.load(); }
  int64_t item() const {
    std::lock_guard<std::mutex> lock(mu_);
    return item_;
  }
  int code() const {
    std::lock_guard<std::mutex> lock(mu_);
    return code_;
  }

 private:
  mutable std::mutex mu_;
  std::atomic<bool> failed_{false};
  int64_t item_ = -1;
  int code_ = 0;
};

}  // namespace tf_sampled

#endif  // TF_SAMPLED_CORE_SHARD_FAILURE_H_
