// Validation and threading shared by every tf_sampled OpKernel: what a user
// passes is checked here and turned into InvalidArgument naming the argument
// and the bad value, before the framework-free core sees it.
#ifndef TF_SAMPLED_KERNELS_COMMON_H_
#define TF_SAMPLED_KERNELS_COMMON_H_

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "custom_ops/core/parallel_range.h"
#include "custom_ops/core/shard_failure.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tf_sampled {

using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
namespace errors = ::tensorflow::errors;

inline absl::Status CheckFinite(const float* values, int64_t n,
                                const char* name) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(values[i])) {
      return errors::InvalidArgument(name, " must be finite, got ", values[i],
                                     " at flat index ", i);
    }
  }
  return absl::OkStatus();
}

inline absl::Status CheckRank(const Tensor& t, int rank, const char* name) {
  if (t.dims() != rank) {
    return errors::InvalidArgument(name, " must have rank ", rank,
                                   ", got shape ", t.shape().DebugString());
  }
  return absl::OkStatus();
}

// Class ids in [0, num_classes).
inline absl::Status CheckClassIds(const Tensor& ids, int64_t num_classes,
                                  const char* name) {
  const auto flat = ids.flat<int64_t>();
  for (int64_t i = 0; i < flat.size(); ++i) {
    if (flat(i) < 0 || flat(i) >= num_classes) {
      return errors::InvalidArgument(name, " must be in [0, ", num_classes,
                                     "), got ", flat(i), " at flat index ", i);
    }
  }
  return absl::OkStatus();
}

// The variables an op reads in place (the class table can be GBs: a dense
// read of a variable in copy-on-read mode, which any sparse update turns on,
// would copy it on every call), or updates in place (the sparse optimizer
// steps). Holds locks on them for the op's lifetime, shared to read and
// exclusive to write, taken in address order like TensorFlow's training ops
// take theirs, so lock order cannot deadlock.
class LockedVariables {
 public:
  enum class Access { kRead, kWrite };

  struct Input {
    int index;
    const char* name;
    Access access;
  };

  absl::Status Lock(OpKernelContext* ctx,
                    const std::vector<std::pair<int, const char*>>& inputs,
                    Access access = Access::kRead) {
    std::vector<Input> all;
    for (const auto& [index, name] : inputs) all.push_back({index, name, access});
    return LockEach(ctx, all);
  }

  // Each input with its own access (an op that reads the table and writes
  // state derived from it); tensor(i) follows the order of `inputs`.
  absl::Status LockEach(OpKernelContext* ctx, const std::vector<Input>& inputs) {
    for (const Input& input : inputs) {
      ::tensorflow::core::RefCountPtr<::tensorflow::Var> var;
      const absl::Status status = ::tensorflow::LookupResource(
          ctx, ::tensorflow::HandleFromInput(ctx, input.index), &var);
      if (!status.ok()) {
        return errors::InvalidArgument(input.name, " must be a variable handle: ",
                                       status.message());
      }
      for (size_t j = 0; j < vars_.size(); ++j) {
        const bool writes = input.access == Access::kWrite ||
                            inputs[j].access == Access::kWrite;
        if (writes && vars_[j].get() == var.get()) {
          return errors::InvalidArgument(input.name, " and ", inputs[j].name,
                                         " must be different variables");
        }
      }
      vars_.push_back(std::move(var));
    }
    // One lock per distinct variable (a variable read twice is written by
    // neither), in address order.
    std::vector<std::pair<::tensorflow::Var*, Access>> order;
    for (size_t i = 0; i < vars_.size(); ++i) order.emplace_back(vars_[i].get(), inputs[i].access);
    std::sort(order.begin(), order.end());
    order.erase(std::unique(order.begin(), order.end()), order.end());
    for (const auto& [var, access] : order) {
      if (access == Access::kWrite) {
        write_locks_.push_back(std::make_unique<::tensorflow::mutex_lock>(*var->mu()));
      } else {
        read_locks_.push_back(std::make_unique<::tensorflow::tf_shared_lock>(*var->mu()));
      }
    }
    for (size_t i = 0; i < vars_.size(); ++i) {
      if (!vars_[i]->is_initialized) {
        return errors::InvalidArgument(inputs[i].name, " is an uninitialized variable");
      }
    }
    return absl::OkStatus();
  }

  // The i-th locked variable's value; valid while this object lives.
  const Tensor& tensor(int i) const { return *vars_[i]->tensor(); }

  // Access::kWrite only: the i-th variable's buffer, made exclusive first. A
  // buffer another tensor still shares (a dense read's snapshot) is copied,
  // and the variable switches to copy-on-read so later dense reads copy
  // instead (what TensorFlow's own sparse updates do).
  absl::Status MutableTensor(OpKernelContext* ctx, int i, Tensor** out) {
    ::tensorflow::Var* var = vars_[i].get();
    Tensor* tensor = var->tensor();
    if (!tensor->RefCountIsOne()) {
      Tensor copy;
      TF_RETURN_IF_ERROR(ctx->allocate_temp(tensor->dtype(), tensor->shape(), &copy));
      if (tensor->TotalBytes() > 0) {
        std::memcpy(copy.data(), tensor->data(), tensor->TotalBytes());
      }
      *tensor = copy;
    }
    var->copy_on_read_mode.store(true);
    *out = tensor;
    return absl::OkStatus();
  }

 private:
  std::vector<::tensorflow::core::RefCountPtr<::tensorflow::Var>> vars_;
  std::vector<std::unique_ptr<::tensorflow::tf_shared_lock>> read_locks_;
  std::vector<std::unique_ptr<::tensorflow::mutex_lock>> write_locks_;
};

inline absl::Status CheckDtype(const Tensor& t, ::tensorflow::DataType dtype,
                               const char* name) {
  if (t.dtype() != dtype) {
    return errors::InvalidArgument(name, " must be ",
                                   ::tensorflow::DataTypeString(dtype), ", got ",
                                   ::tensorflow::DataTypeString(t.dtype()));
  }
  return absl::OkStatus();
}

// Runs fn(begin, end) over [0, total) on the op's CPU thread pool.
template <typename Fn>
void ParallelFor(OpKernelContext* ctx, int64_t total, int64_t cost_per_item,
                 Fn&& fn) {
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  ::tensorflow::Shard(workers->num_threads, workers->workers, total,
                      cost_per_item, std::forward<Fn>(fn));
}

// The op's CPU thread pool as the core's ParallelRange.
inline ParallelRange OpParallelRange(OpKernelContext* ctx) {
  return [ctx](int64_t n, int64_t cost, const std::function<void(int64_t, int64_t)>& fn) {
    ParallelFor(ctx, n, cost, fn);
  };
}

}  // namespace tf_sampled

#endif  // TF_SAMPLED_KERNELS_COMMON_H_
