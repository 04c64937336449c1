// TFS_HOST_DEVICE marks the core's scalar math and shapes that the CUDA core
// (custom_ops/cuda/) calls on the device too, so CPU and GPU share one
// definition: __host__ __device__ under nvcc, nothing under a host compiler.
#ifndef TF_SAMPLED_CORE_HOST_DEVICE_H_
#define TF_SAMPLED_CORE_HOST_DEVICE_H_

#if defined(__CUDACC__)
#define TFS_HOST_DEVICE __host__ __device__
#else
#define TFS_HOST_DEVICE
#endif

#endif  // TF_SAMPLED_CORE_HOST_DEVICE_H_
