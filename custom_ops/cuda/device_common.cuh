// What every CUDA file of the core shares: the device error record, the
// workspace carver, warp/block reductions and a counter-based generator.
#ifndef TF_SAMPLED_CUDA_DEVICE_COMMON_CUH_
#define TF_SAMPLED_CUDA_DEVICE_COMMON_CUH_

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "custom_ops/cuda/kernel_tree_gpu.h"

namespace tf_sampled {
namespace gpu {

// ---- Errors found on the device -------------------------------------------

// What a kernel can find wrong in the values it reads. Each code keeps the
// smallest failing item (atomicMin), so the report is deterministic.
enum ErrorCode : int {
  kBadClassId = 0,      // item: flat index of the id
  kNonFiniteInput = 1,  // item: flat index into inputs
  kNonFiniteOmega = 2,  // item: flat index into omega
  kNonFiniteRow = 3,    // item: leaf (build), row (update) or query (sampling)
  kNumErrorCodes = 4,
};

constexpr unsigned long long kNoError = ~0ULL;

struct DeviceErrors {
  unsigned long long first[kNumErrorCodes];
  // Results a call reads back with the errors (one copy, one sync).
  long long result[2];
};

__device__ inline void RecordError(DeviceErrors* errors, ErrorCode code,
                                   long long item) {
  atomicMin(&errors->first[code], static_cast<unsigned long long>(item));
}

// Kernels after a failed one skip their work (e.g. no update is applied
// when a row was not finite), without a host round trip in between.
__device__ inline bool AnyError(const DeviceErrors* errors) {
  for (int c = 0; c < kNumErrorCodes; ++c) {
    if (*((volatile const unsigned long long*)&errors->first[c]) != kNoError) {
      return true;
    }
  }
  return false;
}

// ---- Host helpers ----------------------------------------------------------------

#define TF_SAMPLED_CUDA_RETURN_IF_ERROR(expr)                                 \
  do {                                                                        \
    const cudaError_t tf_sampled_err_ = (expr);                               \
    if (tf_sampled_err_ != cudaSuccess) {                                     \
      return GpuStatus::Internal(std::string(#expr) + ": " +                  \
                                 cudaGetErrorString(tf_sampled_err_));        \
    }                                                                         \
  } while (0)

#define TF_SAMPLED_RETURN_IF_NOT_OK(expr)          \
  do {                                             \
    GpuStatus tf_sampled_status_ = (expr);         \
    if (!tf_sampled_status_.ok()) return tf_sampled_status_; \
  } while (0)

// Carves 256-byte aligned arrays from a workspace, first the error record.
// Sizing and carving run the same code (data == nullptr only counts).
class Carver {
 public:
  explicit Carver(void* base) : base_(static_cast<char*>(base)) {}
  template <typename T>
  T* Take(size_t count) {
    const size_t at = used_;
    used_ += (count * sizeof(T) + 255) / 256 * 256;
    return base_ == nullptr ? nullptr : reinterpret_cast<T*>(base_ + at);
  }
  size_t used() const { return used_; }

 private:
  char* base_;
  size_t used_ = 0;
};

// Resets the error record at the start of a call.
GpuStatus ResetErrors(DeviceErrors* errors, Stream stream);

// Copies the record back (synchronising the stream) into *host.
GpuStatus ReadErrors(const DeviceErrors* errors, Stream stream,
                     DeviceErrors* host);

// "nan", "inf", "-inf" or the value, as the CPU kernels print it.
std::string FormatFloat(double v);

// Reads one element of a device array (for error messages).
template <typename T>
T ReadOne(const T* device, long long index) {
  T v{};
  cudaMemcpy(&v, device + index, sizeof(T), cudaMemcpyDeviceToHost);
  return v;
}

// Sizes every entry point checks before a launch: a well-formed spec and
// shape, and node-sum sizes that fit int64. The workspace-size functions
// check them too (and then return a token size: the call will reject the
// sizes before it looks at the workspace), so sizing never divides by zero.
GpuStatus ValidateSpec(const FeatureMapSpec& spec);
GpuStatus ValidateSpecAndShape(const FeatureMapSpec& spec, const TreeShape& shape);

// omega [num_omega, FeatureDim] -> omega_t [FeatureDim, num_omega], recording
// non-finite entries (kNonFiniteOmega). No-op for maps without omega.
GpuStatus TransposeOmega(const FeatureMapSpec& spec, float* omega_t,
                         DeviceErrors* errors, Stream stream);

// The InvalidArgument for the first of these codes that failed, as the CPU
// kernels word it, or Ok. `ids`/`ids_name`: the ids kBadClassId refers to;
// `inputs`: the array kNonFiniteInput refers to; `row_message`: the text for
// kNonFiniteRow given the item.
struct ErrorContext {
  const FeatureMapSpec* spec = nullptr;
  const int64_t* ids = nullptr;
  const char* ids_name = "ids";
  int64_t num_classes = 0;
  const float* inputs = nullptr;
  std::string (*row_message)(long long item, const void* arg) = nullptr;
  const void* row_arg = nullptr;
};
GpuStatus StatusFromErrors(const DeviceErrors& host, const ErrorContext& context);

constexpr size_t kTokenWorkspace = 256;

// Grid size for n blocks (grid-stride loops cover the rest).
inline unsigned GridFor(int64_t n) {
  const int64_t cap = int64_t{1} << 20;
  return static_cast<unsigned>(n < 1 ? 1 : (n < cap ? n : cap));
}

// ---- Reductions ------------------------------------------------------------------

constexpr unsigned kFullMask = 0xffffffffu;

// Butterfly (xor) reductions: every lane ends with the same bits (addition is
// commutative), so lanes can branch on the result in lockstep.
template <typename T>
__device__ inline T WarpSum(T v) {
  for (int m = 16; m >= 1; m >>= 1) v += __shfl_xor_sync(kFullMask, v, m);
  return v;
}

__device__ inline double WarpMax(double v) {
  for (int m = 16; m >= 1; m >>= 1) v = fmax(v, __shfl_xor_sync(kFullMask, v, m));
  return v;
}

// Block-wide sum / max (blockDim.x a multiple of 32, at most 1024); every
// thread gets the result. `shared` holds 32 doubles.
__device__ inline double BlockSum(double v, double* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = WarpSum(v);
  __syncthreads();  // `shared` may still be read from a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  double total = 0;
  for (int w = 0; w < warps; ++w) total += shared[w];
  return total;
}

__device__ inline double BlockMax(double v, double* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = WarpMax(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  double top = -INFINITY;
  for (int w = 0; w < warps; ++w) top = fmax(top, shared[w]);
  return top;
}

// ---- Random numbers -------------------------------------------------------------

// Philox4x32-10 (Salmon et al. 2011), the generator TensorFlow's GPU random
// ops use: counter-based, so every (query, lane) gets its own stream by
// putting its ids in the counter.
class Philox {
 public:
  __device__ Philox(uint64_t seed, uint64_t stream, uint64_t offset)
      : key0_(uint32_t(seed)), key1_(uint32_t(seed >> 32)) {
    ctr_[0] = uint32_t(offset);
    ctr_[1] = uint32_t(offset >> 32);
    ctr_[2] = uint32_t(stream);
    ctr_[3] = uint32_t(stream >> 32);
  }

  __device__ uint32_t Next32() {
    if (used_ == 4) Refill();
    return out_[used_++];
  }

  // Uniform in [0, 1) with 53 random bits, like Random::Uniform.
  __device__ double Uniform() {
    const uint64_t hi = Next32(), lo = Next32();
    return double(((hi << 32) | lo) >> 11) * (1.0 / 9007199254740992.0);
  }

  // Uniform integer in [0, n) for n < 2^32 (multiply-shift).
  __device__ uint32_t Below(uint32_t n) {
    return uint32_t((uint64_t(Next32()) * n) >> 32);
  }

 private:
  __device__ void Refill() {
    uint32_t c0 = ctr_[0], c1 = ctr_[1], c2 = ctr_[2], c3 = ctr_[3];
    uint32_t k0 = key0_, k1 = key1_;
    for (int round = 0; round < 10; ++round) {
      const uint32_t hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
      const uint32_t hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
      c0 = hi1 ^ c1 ^ k0;
      c1 = lo1;
      c2 = hi0 ^ c3 ^ k1;
      c3 = lo0;
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    out_[0] = c0; out_[1] = c1; out_[2] = c2; out_[3] = c3;
    used_ = 0;
    if (++ctr_[0] == 0 && ++ctr_[1] == 0) ++ctr_[2];  // 2^64 blocks per stream
  }

  uint32_t key0_, key1_;
  uint32_t ctr_[4];
  uint32_t out_[4];
  int used_ = 4;
};

}  // namespace gpu
}  // namespace tf_sampled

#endif  // TF_SAMPLED_CUDA_DEVICE_COMMON_CUH_
