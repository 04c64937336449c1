// How the framework-free core is given threads: the op layer passes its
// thread pool as a ParallelRange (kernels/common.h: OpParallelRange).
#ifndef TF_SAMPLED_CORE_PARALLEL_RANGE_H_
#define TF_SAMPLED_CORE_PARALLEL_RANGE_H_

#include <cstdint>
#include <functional>

namespace tf_sampled {

// Runs fn(begin, end) over disjoint ranges covering [0, n), possibly in
// parallel; cost_per_item is a rough count of floating-point operations.
using ParallelRange = std::function<void(
    int64_t n, int64_t cost_per_item,
    const std::function<void(int64_t, int64_t)>& fn)>;

}  // namespace tf_sampled

#endif  // TF_SAMPLED_CORE_PARALLEL_RANGE_H_
