// Host-side helpers of the CUDA core: size validation, the error record and
// the messages it turns into (worded like the CPU kernels' InvalidArgument).
#include <cmath>
#include <limits>

#include "custom_ops/core/str_cat.h"
#include "custom_ops/core/tree_limits.h"
#include "custom_ops/cuda/device_common.cuh"
#include "custom_ops/cuda/feature_math.cuh"

namespace tf_sampled {
namespace gpu {

namespace {

__global__ void TransposeOmegaKernel(const float* omega, int64_t m, int64_t n,
                                     float* omega_t, DeviceErrors* errors) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < m * n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float v = omega[i];
    if (!isfinite(v)) RecordError(errors, kNonFiniteOmega, i);
    omega_t[(i % n) * m + i / n] = v;
  }
}

}  // namespace

std::string FormatFloat(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return StrCat(v);
}

GpuStatus ValidateSpec(const FeatureMapSpec& spec) {
  const std::string error = FeatureSpecError(spec);
  return error.empty() ? GpuStatus::Ok() : GpuStatus::Invalid(error);
}

GpuStatus ValidateSpecAndShape(const FeatureMapSpec& spec, const TreeShape& shape) {
  const std::string error = TreeError(spec, shape);
  return error.empty() ? GpuStatus::Ok() : GpuStatus::Invalid(error);
}

GpuStatus TransposeOmega(const FeatureMapSpec& spec, float* omega_t,
                         DeviceErrors* errors, Stream stream) {
  if (spec.num_omega == 0) return GpuStatus::Ok();
  const int64_t total = spec.num_omega * spec.FeatureDim();
  TransposeOmegaKernel<<<GridFor((total + 255) / 256), 256, 0, stream>>>(
      spec.omega, spec.num_omega, spec.FeatureDim(), omega_t, errors);
  TF_SAMPLED_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return GpuStatus::Ok();
}

GpuStatus ResetErrors(DeviceErrors* errors, Stream stream) {
  TF_SAMPLED_CUDA_RETURN_IF_ERROR(
      cudaMemsetAsync(errors, 0xff, sizeof(DeviceErrors), stream));
  return GpuStatus::Ok();
}

GpuStatus ReadErrors(const DeviceErrors* errors, Stream stream,
                     DeviceErrors* host) {
  TF_SAMPLED_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      host, errors, sizeof(DeviceErrors), cudaMemcpyDeviceToHost, stream));
  TF_SAMPLED_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return GpuStatus::Ok();
}

// The CPU kernels check (in this order) omega, the ids, the inputs, then the
// class rows while they read them; the first failing check is reported.
GpuStatus StatusFromErrors(const DeviceErrors& host, const ErrorContext& context) {
  if (host.first[kNonFiniteOmega] != kNoError) {
    const long long i = host.first[kNonFiniteOmega];
    return GpuStatus::Invalid(StrCat("omega must be finite, got ",
                                     FormatFloat(ReadOne(context.spec->omega, i)),
                                     " at flat index ", i));
  }
  if (host.first[kBadClassId] != kNoError) {
    const long long i = host.first[kBadClassId];
    return GpuStatus::Invalid(StrCat(context.ids_name, " must be in [0, ",
                                     context.num_classes, "), got ",
                                     ReadOne(context.ids, i), " at flat index ", i));
  }
  if (host.first[kNonFiniteInput] != kNoError) {
    const long long i = host.first[kNonFiniteInput];
    return GpuStatus::Invalid(StrCat("inputs must be finite, got ",
                                     FormatFloat(ReadOne(context.inputs, i)),
                                     " at flat index ", i));
  }
  if (host.first[kNonFiniteRow] != kNoError) {
    return GpuStatus::Invalid(
        context.row_message(host.first[kNonFiniteRow], context.row_arg));
  }
  return GpuStatus::Ok();
}

bool DeviceAvailable() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return false;
  }
  return count > 0;
}

}  // namespace gpu
}  // namespace tf_sampled
