// Building the node sums on the GPU and updating them for changed rows.
#include <cub/cub.cuh>

#include <algorithm>
#include <climits>
#include <string>

#include "custom_ops/cuda/device_common.cuh"
#include "custom_ops/cuda/feature_math.cuh"
#include "custom_ops/cuda/kernel_tree_gpu.h"

namespace tf_sampled {
namespace gpu {

namespace {

constexpr int kThreads = 256;
// Features a thread accumulates in registers per pass over a leaf's rows;
// maps with more than kThreads * kPerThread features (quadratic) take
// several passes, re-reading the leaf's rows (never a [C, F] matrix).
constexpr int kPerThread = 4;
constexpr int64_t kTile = int64_t{kThreads} * kPerThread;

// One block per leaf: the leaf's node row is the sum of phi over its rows.
__global__ void __launch_bounds__(kThreads)
LeafSumKernel(FeatureMapSpec spec, TreeShape shape, const float* rows,
              const float* omega_t, double* nodes, DeviceErrors* errors) {
  __shared__ double shared[32];
  const int64_t f = spec.NumFeatures();
  const int64_t num_leaves = shape.NumLeaves();
  for (int64_t leaf = blockIdx.x; leaf < num_leaves; leaf += gridDim.x) {
    double* out = nodes + shape.NodeOfLeaf(leaf) * f;
    for (int64_t tile = 0; tile < f; tile += kTile) {
      FeatureSlot slots[kPerThread];
      double acc[kPerThread];
#pragma unroll
      for (int m = 0; m < kPerThread; ++m) {
        slots[m] = MakeSlot(spec, tile + threadIdx.x + m * kThreads);
        acc[m] = 0;
      }
      bool bad = false;
      for (int64_t c = shape.LeafBegin(leaf); c < shape.LeafEnd(leaf); ++c) {
        const float* y = rows + c * spec.dim;
        const RowScalars r = BlockRowScalars(spec, y, shared);  // block-uniform
        if (!r.finite) {
          bad = true;
          break;
        }
#pragma unroll
        for (int m = 0; m < kPerThread; ++m) {
          if (slots[m].j >= f) continue;
          const double v = ClassFeature(spec, slots[m], y, r, omega_t);
          if (!isfinite(v)) bad = true;
          acc[m] += v;
        }
      }
      if (bad) RecordError(errors, kNonFiniteRow, leaf);
#pragma unroll
      for (int m = 0; m < kPerThread; ++m) {
        if (slots[m].j < f) out[slots[m].j] = acc[m];
      }
    }
  }
}

// Internal nodes [lo, hi) of one heap level from their children.
__global__ void SumLevelKernel(double* nodes, int64_t f, int64_t lo, int64_t hi) {
  const int64_t total = (hi - lo) * f;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t node = lo + i / f, j = i % f;
    nodes[node * f + j] = nodes[2 * node * f + j] + nodes[(2 * node + 1) * f + j];
  }
}

// One block per row: deltas[r] = phi(new_rows[r]) - phi(old_rows[r]).
__global__ void __launch_bounds__(kThreads)
RowDeltaKernel(FeatureMapSpec spec, int64_t num_classes, const int64_t* ids,
               const float* old_rows, const float* new_rows, int64_t n,
               const float* omega_t, double* deltas, DeviceErrors* errors) {
  __shared__ double shared[32];
  const int64_t f = spec.NumFeatures();
  for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    if (threadIdx.x == 0 && (ids[r] < 0 || ids[r] >= num_classes)) {
      RecordError(errors, kBadClassId, r);
    }
    const float* y_new = new_rows + r * spec.dim;
    const float* y_old = old_rows + r * spec.dim;
    const RowScalars s_new = BlockRowScalars(spec, y_new, shared);
    const RowScalars s_old = BlockRowScalars(spec, y_old, shared);
    bool bad = !s_new.finite || !s_old.finite;
    for (int64_t j = threadIdx.x; j < f && !bad; j += kThreads) {
      const FeatureSlot slot = MakeSlot(spec, j);
      const double a = ClassFeature(spec, slot, y_new, s_new, omega_t);
      const double b = ClassFeature(spec, slot, y_old, s_old, omega_t);
      if (!isfinite(a) || !isfinite(b)) bad = true;
      deltas[r * f + j] = a - b;
    }
    if (bad) RecordError(errors, kNonFiniteRow, r);
  }
}

// nodes += deltas on every node of each row's path; skipped entirely when
// an earlier kernel of the call found an error (nothing half-applied).
__global__ void ApplyDeltasKernel(TreeShape shape, const int64_t* ids,
                                  const double* deltas, int64_t n, int64_t f,
                                  double* nodes, const DeviceErrors* errors) {
  if (AnyError(errors)) return;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n * f;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / f, j = i % f;
    const double d = deltas[i];
    for (int64_t node = shape.NodeOfLeaf(shape.LeafOf(ids[r])); node >= 1; node >>= 1) {
      atomicAdd(&nodes[node * f + j], d);
    }
  }
}

// (node, row) for every node of every row's path, row-major so that a
// stable sort by node keeps rows ascending within a node. Paths shorter than
// `depth` (and rows with a bad id) are padded with node 0, which is unused.
__global__ void PathPairsKernel(TreeShape shape, const int64_t* ids, int64_t n,
                                int depth, unsigned long long* keys, int* rows) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n * depth;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / depth;
    const int t = static_cast<int>(i % depth);
    const int64_t id = ids[r];
    const bool valid = id >= 0 && id < shape.num_classes;
    const int64_t node = valid ? shape.NodeOfLeaf(shape.LeafOf(id)) : 0;
    keys[i] = static_cast<unsigned long long>(node >> t);
    rows[i] = static_cast<int>(r);
  }
}

__global__ void RunSummaryKernel(const int* num_runs, const unsigned long long* unique,
                                 DeviceErrors* errors) {
  errors->result[0] = *num_runs;
  errors->result[1] = static_cast<long long>(unique[0]);
}

// One block per touched node: the sum of its rows' deltas, in row order.
__global__ void SegmentSumKernel(const unsigned long long* unique, const int* counts,
                                 const int* offsets, const int* sorted_rows,
                                 const double* deltas, int64_t f, int64_t skip,
                                 int64_t num_nodes, int64_t* node_ids,
                                 double* node_deltas) {
  for (int64_t u = blockIdx.x; u < num_nodes; u += gridDim.x) {
    const int64_t run = u + skip;
    if (threadIdx.x == 0) node_ids[u] = static_cast<int64_t>(unique[run]);
    const int begin = offsets[run], end = begin + counts[run];
    for (int64_t j = threadIdx.x; j < f; j += blockDim.x) {
      double sum = 0;
      for (int t = begin; t < end; ++t) sum += deltas[sorted_rows[t] * f + j];
      node_deltas[u * f + j] = sum;
    }
  }
}

// Nodes on the longest root-to-leaf path: floor(log2(2N - 1)) + 1.
int PathDepth(const TreeShape& shape) {
  int depth = 0;
  for (int64_t node = 2 * shape.NumLeaves() - 1; node >= 1; node >>= 1) ++depth;
  return depth;
}

int KeyBits(const TreeShape& shape) {
  int bits = 0;
  while ((int64_t{1} << bits) < 2 * shape.NumLeaves()) ++bits;
  return bits < 1 ? 1 : bits;
}

// The update workspace, laid out by one function for sizing and carving.
struct UpdateBuffers {
  DeviceErrors* errors;
  float* omega_t;
  double* deltas;
  unsigned long long *keys_in, *keys_out, *unique;
  int *rows_in, *rows_out, *counts, *offsets, *num_runs;
  void* cub_temp;
  size_t cub_bytes;
};

UpdateBuffers CarveUpdate(const FeatureMapSpec& spec, const TreeShape& shape,
                          int64_t n, void* base, size_t* total) {
  const int64_t items = n * PathDepth(shape);
  const int num_items = static_cast<int>(std::max<int64_t>(items, 1));
  // CUB's temporary sizes (host-only queries: nothing runs on the device).
  size_t sort_bytes = 0, rle_bytes = 0, scan_bytes = 0;
  cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, (unsigned long long*)nullptr,
                                  (unsigned long long*)nullptr, (int*)nullptr,
                                  (int*)nullptr, num_items, 0, KeyBits(shape));
  cub::DeviceRunLengthEncode::Encode(nullptr, rle_bytes,
                                     (unsigned long long*)nullptr,
                                     (unsigned long long*)nullptr, (int*)nullptr,
                                     (int*)nullptr, num_items);
  cub::DeviceScan::ExclusiveSum(nullptr, scan_bytes, (int*)nullptr, (int*)nullptr,
                                num_items);
  Carver carve(base);
  UpdateBuffers b;
  b.errors = carve.Take<DeviceErrors>(1);
  b.omega_t = carve.Take<float>(spec.num_omega * spec.FeatureDim());
  b.deltas = carve.Take<double>(n * spec.NumFeatures());
  b.keys_in = carve.Take<unsigned long long>(num_items);
  b.keys_out = carve.Take<unsigned long long>(num_items);
  b.unique = carve.Take<unsigned long long>(num_items);
  b.rows_in = carve.Take<int>(num_items);
  b.rows_out = carve.Take<int>(num_items);
  b.counts = carve.Take<int>(num_items);
  b.offsets = carve.Take<int>(num_items);
  b.num_runs = carve.Take<int>(1);
  b.cub_bytes = std::max(sort_bytes, std::max(rle_bytes, scan_bytes));
  b.cub_temp = carve.Take<char>(b.cub_bytes);
  *total = carve.used();
  return b;
}

std::string BuildRowMessage(long long leaf, const void* arg) {
  const auto* shape = static_cast<const TreeShape*>(arg);
  return "rows must be finite (embeddings and biases): leaf " +
         std::to_string(leaf) + " (classes from " +
         std::to_string(shape->LeafBegin(leaf)) +
         ") holds a NaN/Inf value or its features overflow";
}

std::string UpdateRowMessage(long long row, const void* arg) {
  const auto* ids = static_cast<const int64_t*>(arg);
  return "old_rows and new_rows must be finite: row " + std::to_string(row) +
         " (class " + std::to_string(ReadOne(ids, row)) +
         ") holds a NaN/Inf value or its features overflow";
}

GpuStatus CheckWorkspace(const Workspace& workspace, size_t needed) {
  if (workspace.data == nullptr || workspace.bytes < needed) {
    return GpuStatus::Invalid("workspace of " + std::to_string(workspace.bytes) +
                              " bytes is smaller than the " +
                              std::to_string(needed) + " bytes needed");
  }
  return GpuStatus::Ok();
}

GpuStatus ValidateUpdate(const FeatureMapSpec& spec, const TreeShape& shape,
                         int64_t n) {
  TF_SAMPLED_RETURN_IF_NOT_OK(ValidateSpecAndShape(spec, shape));
  if (n < 0 || n > INT_MAX / PathDepth(shape)) {
    return GpuStatus::Invalid("the number of rows must be in [0, " +
                              std::to_string(INT_MAX / PathDepth(shape)) +
                              "] on the GPU, got " + std::to_string(n));
  }
  return GpuStatus::Ok();
}

// Row deltas of the n rows into b.deltas, ids checked.
GpuStatus LaunchRowDeltas(const FeatureMapSpec& spec, const TreeShape& shape,
                          const int64_t* ids, const float* old_rows,
                          const float* new_rows, int64_t n,
                          const UpdateBuffers& b, Stream stream) {
  TF_SAMPLED_RETURN_IF_NOT_OK(ResetErrors(b.errors, stream));
  TF_SAMPLED_RETURN_IF_NOT_OK(TransposeOmega(spec, b.omega_t, b.errors, stream));
  if (n == 0) return GpuStatus::Ok();
  RowDeltaKernel<<<GridFor(n), kThreads, 0, stream>>>(
      spec, shape.num_classes, ids, old_rows, new_rows, n, b.omega_t, b.deltas,
      b.errors);
  TF_SAMPLED_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return GpuStatus::Ok();
}

ErrorContext UpdateContext(const FeatureMapSpec& spec, const TreeShape& shape,
                           const int64_t* ids) {
  ErrorContext context;
  context.spec = &spec;
  context.ids = ids;
  context.ids_name = "ids";
  context.num_classes = shape.num_classes;
  context.row_message = UpdateRowMessage;
  context.row_arg = ids;
  return context;
}

}  // namespace

size_t BuildWorkspaceBytes(const FeatureMapSpec& spec) {
  if (!ValidateSpec(spec).ok()) return kTokenWorkspace;
  Carver carve(nullptr);
  carve.Take<DeviceErrors>(1);
  carve.Take<float>(spec.num_omega * spec.FeatureDim());
  return carve.used();
}

GpuStatus BuildNodeSums(const FeatureMapSpec& spec, const TreeShape& shape,
                        const float* rows, double* nodes, Workspace workspace,
                        Stream stream) {
  TF_SAMPLED_RETURN_IF_NOT_OK(ValidateSpecAndShape(spec, shape));
  TF_SAMPLED_RETURN_IF_NOT_OK(CheckWorkspace(workspace, BuildWorkspaceBytes(spec)));
  Carver carve(workspace.data);
  DeviceErrors* errors = carve.Take<DeviceErrors>(1);
  float* omega_t = carve.Take<float>(spec.num_omega * spec.FeatureDim());
  const int64_t f = spec.NumFeatures();
  const int64_t num_leaves = shape.NumLeaves();

  TF_SAMPLED_RETURN_IF_NOT_OK(ResetErrors(errors, stream));
  TF_SAMPLED_RETURN_IF_NOT_OK(TransposeOmega(spec, omega_t, errors, stream));
  TF_SAMPLED_CUDA_RETURN_IF_ERROR(
      cudaMemsetAsync(nodes, 0, f * sizeof(double), stream));  // unused row 0
  LeafSumKernel<<<GridFor(num_leaves), kThreads, 0, stream>>>(
      spec, shape, rows, omega_t, nodes, errors);
  TF_SAMPLED_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  // Level by level from the deepest internal one: the children of nodes
  // [2^k, 2^(k+1)) are leaves or nodes of level k + 1, summed just before.
  int top = 0;
  while ((int64_t{2} << top) <= num_leaves - 1) ++top;
  for (int k = num_leaves > 1 ? top : -1; k >= 0; --k) {
    const int64_t lo = int64_t{1} << k;
    const int64_t hi = std::min<int64_t>(lo << 1, num_leaves);
    SumLevelKernel<<<GridFor(((hi - lo) * f + 255) / 256), 256, 0, stream>>>(
        nodes, f, lo, hi);
    TF_SAMPLED_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  }
  DeviceErrors host;
  TF_SAMPLED_RETURN_IF_NOT_OK(ReadErrors(errors, stream, &host));
  ErrorContext context;
  context.spec = &spec;
  context.row_message = BuildRowMessage;
  context.row_arg = &shape;
  return StatusFromErrors(host, context);
}

size_t UpdateWorkspaceBytes(const FeatureMapSpec& spec, const TreeShape& shape,
                            int64_t n) {
  if (!ValidateUpdate(spec, shape, n).ok()) return kTokenWorkspace;
  size_t total = 0;
  CarveUpdate(spec, shape, std::max<int64_t>(n, 0), nullptr, &total);
  return total;
}

GpuStatus ApplyRowUpdates(const FeatureMapSpec& spec, const TreeShape& shape,
                          const int64_t* ids, const float* old_rows,
                          const float* new_rows, int64_t n, double* nodes,
                          Workspace workspace, Stream stream) {
  TF_SAMPLED_RETURN_IF_NOT_OK(ValidateUpdate(spec, shape, n));
  TF_SAMPLED_RETURN_IF_NOT_OK(
      CheckWorkspace(workspace, UpdateWorkspaceBytes(spec, shape, n)));
  size_t unused;
  const UpdateBuffers b = CarveUpdate(spec, shape, n, workspace.data, &unused);
  TF_SAMPLED_RETURN_IF_NOT_OK(
      LaunchRowDeltas(spec, shape, ids, old_rows, new_rows, n, b, stream));
  const int64_t f = spec.NumFeatures();
  if (n > 0) {
    ApplyDeltasKernel<<<GridFor((n * f + 255) / 256), 256, 0, stream>>>(
        shape, ids, b.deltas, n, f, nodes, b.errors);
    TF_SAMPLED_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  }
  DeviceErrors host;
  TF_SAMPLED_RETURN_IF_NOT_OK(ReadErrors(b.errors, stream, &host));
  return StatusFromErrors(host, UpdateContext(spec, shape, ids));
}

GpuStatus PrepareUpdateDeltas(const FeatureMapSpec& spec, const TreeShape& shape,
                              const int64_t* ids, const float* old_rows,
                              const float* new_rows, int64_t n,
                              Workspace workspace, Stream stream,
                              int64_t* num_nodes) {
  *num_nodes = 0;
  TF_SAMPLED_RETURN_IF_NOT_OK(ValidateUpdate(spec, shape, n));
  TF_SAMPLED_RETURN_IF_NOT_OK(
      CheckWorkspace(workspace, UpdateWorkspaceBytes(spec, shape, n)));
  size_t unused;
  UpdateBuffers b = CarveUpdate(spec, shape, n, workspace.data, &unused);
  TF_SAMPLED_RETURN_IF_NOT_OK(
      LaunchRowDeltas(spec, shape, ids, old_rows, new_rows, n, b, stream));
  if (n > 0) {
    const int depth = PathDepth(shape);
    const int items = static_cast<int>(n * depth);
    PathPairsKernel<<<GridFor((int64_t(items) + 255) / 256), 256, 0, stream>>>(
        shape, ids, n, depth, b.keys_in, b.rows_in);
    TF_SAMPLED_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    TF_SAMPLED_CUDA_RETURN_IF_ERROR(cub::DeviceRadixSort::SortPairs(
        b.cub_temp, b.cub_bytes, b.keys_in, b.keys_out, b.rows_in, b.rows_out,
        items, 0, KeyBits(shape), stream));
    // Encode writes num_runs counts; zeros past them keep the scan defined.
    TF_SAMPLED_CUDA_RETURN_IF_ERROR(
        cudaMemsetAsync(b.counts, 0, sizeof(int) * items, stream));
    TF_SAMPLED_CUDA_RETURN_IF_ERROR(cub::DeviceRunLengthEncode::Encode(
        b.cub_temp, b.cub_bytes, b.keys_out, b.unique, b.counts, b.num_runs,
        items, stream));
    TF_SAMPLED_CUDA_RETURN_IF_ERROR(cub::DeviceScan::ExclusiveSum(
        b.cub_temp, b.cub_bytes, b.counts, b.offsets, items, stream));
    RunSummaryKernel<<<1, 1, 0, stream>>>(b.num_runs, b.unique, b.errors);
    TF_SAMPLED_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  }
  DeviceErrors host;
  TF_SAMPLED_RETURN_IF_NOT_OK(ReadErrors(b.errors, stream, &host));
  TF_SAMPLED_RETURN_IF_NOT_OK(StatusFromErrors(host, UpdateContext(spec, shape, ids)));
  if (n > 0) *num_nodes = host.result[0] - (host.result[1] == 0 ? 1 : 0);
  return GpuStatus::Ok();
}

GpuStatus FinishUpdateDeltas(const FeatureMapSpec& spec, const TreeShape& shape,
                             int64_t n, int64_t num_nodes, Workspace workspace,
                             Stream stream, int64_t* node_ids,
                             double* node_deltas) {
  TF_SAMPLED_RETURN_IF_NOT_OK(ValidateUpdate(spec, shape, n));
  TF_SAMPLED_RETURN_IF_NOT_OK(
      CheckWorkspace(workspace, UpdateWorkspaceBytes(spec, shape, n)));
  if (num_nodes <= 0) return GpuStatus::Ok();
  if (num_nodes > n * PathDepth(shape)) {
    return GpuStatus::Invalid("num_nodes " + std::to_string(num_nodes) +
                              " is more than PrepareUpdateDeltas can return");
  }
  size_t unused;
  const UpdateBuffers b = CarveUpdate(spec, shape, n, workspace.data, &unused);
  // Run 0 is the padding node 0 exactly when the runs outnumber the nodes.
  DeviceErrors host;
  TF_SAMPLED_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      &host, b.errors, sizeof(DeviceErrors), cudaMemcpyDeviceToHost, stream));
  TF_SAMPLED_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  const int64_t skip = host.result[0] - num_nodes;
  if (skip != 0 && skip != 1) {
    return GpuStatus::Invalid("num_nodes " + std::to_string(num_nodes) +
                              " does not match PrepareUpdateDeltas");
  }
  SegmentSumKernel<<<GridFor(num_nodes), 128, 0, stream>>>(
      b.unique, b.counts, b.offsets, b.rows_out, b.deltas, spec.NumFeatures(),
      skip, num_nodes, node_ids, node_deltas);
  TF_SAMPLED_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return GpuStatus::Ok();
}

}  // namespace gpu
}  // namespace tf_sampled
