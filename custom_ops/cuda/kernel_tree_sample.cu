// Per-example sampling and log q on the GPU: one block per query computes its
// features, then one warp per query descends the tree (KernelTree::Sample)
// and one warp per (query, id) evaluates log q (KernelTree::LogProb).
#include <algorithm>
#include <climits>
#include <limits>
#include <string>

#include "custom_ops/cuda/device_common.cuh"
#include "custom_ops/cuda/feature_math.cuh"
#include "custom_ops/cuda/kernel_tree_gpu.h"

namespace tf_sampled {
namespace gpu {

namespace {

constexpr int kFeatureThreads = 256;
constexpr int kWarps = 4;  // warps (queries or ids) per block
// Deepest pending stack of a descent: root-to-leaf paths have at most 49
// nodes for the 2^48 classes ValidateSpecAndShape allows.
constexpr int kMaxStack = 64;

// The per-chunk query state: features, augmented inputs, their squared
// norms, and one leaf buffer (log kernels, then the CDF) per query.
struct QueryBuffers {
  DeviceErrors* errors;
  float* omega_t;
  double* phi;     // [chunk, QuerySize]
  float* x;        // [chunk, dim]
  double* x_sq;    // [chunk]
  double* leaf;    // [chunk, 2 * MaxLeafSize]
  int64_t chunk;
};

QueryBuffers CarveQuery(const TreeView& tree, int64_t chunk, void* base,
                        size_t* total) {
  const FeatureMapSpec& spec = tree.spec;
  Carver carve(base);
  QueryBuffers b;
  b.errors = carve.Take<DeviceErrors>(1);
  b.omega_t = carve.Take<float>(spec.num_omega * spec.FeatureDim());
  b.phi = carve.Take<double>(chunk * QuerySize(spec));
  b.x = carve.Take<float>(chunk * spec.dim);
  b.x_sq = carve.Take<double>(chunk);
  b.leaf = carve.Take<double>(chunk * 2 * tree.shape.MaxLeafSize());
  b.chunk = chunk;
  *total = carve.used();
  return b;
}

// Queries per chunk: as many as kWorkspaceBudget holds, at least one.
int64_t ChunkSize(const TreeView& tree, int64_t batch) {
  const int64_t per_query = 8 * QuerySize(tree.spec) + 4 * tree.spec.dim + 8 +
                            16 * tree.shape.MaxLeafSize();
  const int64_t fit = static_cast<int64_t>(kWorkspaceBudget) / std::max<int64_t>(per_query, 1);
  return std::max<int64_t>(1, std::min<int64_t>(fit, std::max<int64_t>(batch, 1)));
}

// One block per query of the chunk: x = [h, 1] (or h), |x|^2 and phi(x) up
// to a positive factor (KernelTree::SetQuery, QueryFeatures).
__global__ void __launch_bounds__(kFeatureThreads)
QueryFeaturesKernel(FeatureMapSpec spec, ClassTable table, const float* inputs,
                    int64_t begin, int64_t count, const float* omega_t,
                    QueryBuffers b) {
  __shared__ double shared[32];
  const int64_t q_size = QuerySize(spec);
  const int64_t n = spec.FeatureDim();
  for (int64_t i = blockIdx.x; i < count; i += gridDim.x) {
    const float* h = inputs + (begin + i) * table.d;
    float* x = b.x + i * spec.dim;
    double* phi = b.phi + i * q_size;
    for (int64_t k = threadIdx.x; k < table.d; k += blockDim.x) {
      const float v = h[k];
      if (!isfinite(v)) RecordError(b.errors, kNonFiniteInput, (begin + i) * table.d + k);
      x[k] = v;
    }
    if (threadIdx.x == 0 && table.biases != nullptr) x[table.d] = 1.0f;
    __syncthreads();  // x complete (global writes are visible in the block)
    double sq_all = 0, sq_features = 0;
    for (int64_t k = threadIdx.x; k < spec.dim; k += blockDim.x) {
      const double v2 = double(x[k]) * x[k];
      sq_all += v2;
      if (k < n) sq_features += v2;
    }
    const double x_sq = BlockSum(sq_all, shared);
    const double norm_sq = BlockSum(sq_features, shared);
    if (threadIdx.x == 0) b.x_sq[i] = x_sq;
    double top = -INFINITY;
    for (int64_t j = threadIdx.x; j < q_size; j += blockDim.x) {
      const double v = QueryFeatureRaw(spec, MakeSlot(spec, j), x, norm_sq, omega_t);
      phi[j] = v;
      top = fmax(top, v);
    }
    if (spec.kind == FeatureKind::kPositiveRandom) {
      // As on the CPU: subtracting the max keeps the query's features in
      // range and rescales every node mass of this query alike.
      top = BlockMax(top, shared);
      for (int64_t j = threadIdx.x; j < q_size; j += blockDim.x) {
        phi[j] = exp(phi[j] - top);
      }
    }
    __syncthreads();  // `shared` and x are reused by the next query
  }
}

// KernelTree::LeafLogKernels by a warp: the leaf's exact log kernels into
// `kernel`, their running sums of exp(kernel - max) into `cdf`. Returns
// false (on every lane) if a row or kernel is not finite.
__device__ bool WarpLeafLogKernels(const FeatureMapSpec& spec, const ClassTable& table,
                                   const TreeShape& shape, const float* x,
                                   double x_sq, int64_t leaf, double* kernel,
                                   double* cdf, int lane, double* log_norm) {
  const int64_t begin = shape.LeafBegin(leaf), end = shape.LeafEnd(leaf);
  double top = -INFINITY;
  for (int64_t c = begin; c < end; ++c) {
    const double k = WarpClassLogKernel(spec, table, x, x_sq, c, lane);
    if (isnan(k)) return false;  // warp-uniform: every lane has the same k
    if (lane == 0) kernel[c - begin] = k;
    top = fmax(top, k);
  }
  __syncwarp();
  double carry = 0;
  for (int64_t base = 0; base < end - begin; base += 32) {
    const int64_t i = base + lane;
    double v = i < end - begin ? exp(kernel[i] - top) : 0.0;
    for (int o = 1; o < 32; o <<= 1) {
      const double t = __shfl_up_sync(kFullMask, v, o);
      if (lane >= o) v += t;
    }
    if (i < end - begin) cdf[i] = carry + v;
    carry += __shfl_sync(kFullMask, v, 31);
  }
  __syncwarp();
  *log_norm = top + log(carry);
  return true;
}

struct Pending {
  int64_t node;
  int64_t count;
  double log_p;
};

// One warp per query: KernelTree::Sample. The S draws of a query are split
// down the tree (the lanes draw a node's Bernoullis in parallel), each leaf
// reached is evaluated once, and the draws are shuffled at the end.
__global__ void __launch_bounds__(kWarps * 32)
SampleKernel(FeatureMapSpec spec, ClassTable table, TreeShape shape,
             const double* nodes, int64_t begin, int64_t count,
             int64_t num_sampled, RandomStream random, QueryBuffers b,
             int64_t* ids, float* log_q) {
  __shared__ Pending stacks[kWarps][kMaxStack];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  Pending* stack = stacks[warp];
  const int64_t f = spec.NumFeatures();
  const int64_t max_leaf = shape.MaxLeafSize();
  const int64_t num_leaves = shape.NumLeaves();
  for (int64_t i = int64_t(blockIdx.x) * kWarps + warp; i < count;
       i += int64_t(gridDim.x) * kWarps) {
    const int64_t q = begin + i;
    const double* phi = b.phi + i * QuerySize(spec);
    const float* x = b.x + i * spec.dim;
    const double x_sq = b.x_sq[i];
    double* kernel = b.leaf + i * 2 * max_leaf;
    double* cdf = kernel + max_leaf;
    int64_t* out_ids = ids + q * num_sampled;
    float* out_log_q = log_q + q * num_sampled;
    Philox rng(random.seed, uint64_t(q) * 32 + lane, random.offset);

    int top = 1;
    if (lane == 0) stack[0] = {1, num_sampled, 0.0};
    __syncwarp();
    int64_t filled = 0;
    bool ok = true;
    while (top > 0) {
      const Pending item = stack[--top];
      __syncwarp();  // every lane has read the item before it is overwritten
      if (item.node >= num_leaves) {
        const int64_t leaf = item.node - num_leaves;
        double log_norm;
        if (!WarpLeafLogKernels(spec, table, shape, x, x_sq, leaf, kernel, cdf,
                                lane, &log_norm)) {
          ok = false;
          break;
        }
        const int64_t size = shape.LeafEnd(leaf) - shape.LeafBegin(leaf);
        const double running = cdf[size - 1];
        for (int64_t k = lane; k < item.count; k += 32) {
          const double u = rng.Uniform() * running;
          int64_t lo = 0, hi = size;  // upper_bound: first cdf > u
          while (lo < hi) {
            const int64_t mid = (lo + hi) / 2;
            if (cdf[mid] <= u) lo = mid + 1; else hi = mid;
          }
          const int64_t c = lo < size ? lo : size - 1;
          out_ids[filled + k] = shape.LeafBegin(leaf) + c;
          out_log_q[filled + k] = static_cast<float>(item.log_p + kernel[c] - log_norm);
        }
        filled += item.count;
        __syncwarp();  // the leaf buffer is free again
        continue;
      }
      double log_left, log_right;
      WarpBranchLogProbs(spec, phi, nodes, f, item.node, lane, &log_left, &log_right);
      const double p_left = exp(log_left);
      int64_t left = 0;
      for (int64_t k = lane; k < item.count; k += 32) left += rng.Uniform() < p_left;
      left = WarpSum(left);
      if (lane == 0) {
        if (item.count - left > 0) {
          stack[top++] = {2 * item.node + 1, item.count - left, item.log_p + log_right};
        }
        if (left > 0) stack[top++] = {2 * item.node, left, item.log_p + log_left};
      }
      top = __shfl_sync(kFullMask, top, 0);
      __syncwarp();
    }
    if (!ok) {
      if (lane == 0) RecordError(b.errors, kNonFiniteRow, q);
      continue;
    }
    __syncwarp();  // every lane's draws are written
    if (lane == 0) {
      // Draws come out grouped by leaf; a uniform shuffle makes the sequence
      // exactly iid (as on the CPU).
      for (int64_t k = num_sampled - 1; k > 0; --k) {
        const int64_t j = rng.Below(static_cast<uint32_t>(k + 1));
        const int64_t id = out_ids[k];
        out_ids[k] = out_ids[j];
        out_ids[j] = id;
        const float lq = out_log_q[k];
        out_log_q[k] = out_log_q[j];
        out_log_q[j] = lq;
      }
    }
    __syncwarp();
  }
}

// One warp per (query, id): KernelTree::LogProb for one class, the leaf's
// normaliser by an online log-sum-exp (no buffer).
__global__ void __launch_bounds__(kWarps * 32)
LogProbKernel(FeatureMapSpec spec, ClassTable table, TreeShape shape,
              const double* nodes, int64_t begin, int64_t count,
              const int64_t* classes, int64_t n, QueryBuffers b, float* log_q) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t f = spec.NumFeatures();
  for (int64_t p = int64_t(blockIdx.x) * kWarps + warp; p < count * n;
       p += int64_t(gridDim.x) * kWarps) {
    const int64_t i = p / n, q = begin + i;
    const int64_t flat = q * n + p % n;
    const int64_t c = classes[flat];
    if (c < 0 || c >= shape.num_classes) {
      if (lane == 0) RecordError(b.errors, kBadClassId, flat);
      continue;
    }
    const double* phi = b.phi + i * QuerySize(spec);
    const float* x = b.x + i * spec.dim;
    const double x_sq = b.x_sq[i];
    double log_p = 0;
    for (int64_t node = shape.NodeOfLeaf(shape.LeafOf(c)); node > 1; node >>= 1) {
      double log_left, log_right;
      WarpBranchLogProbs(spec, phi, nodes, f, node >> 1, lane, &log_left, &log_right);
      log_p += (node & 1) ? log_right : log_left;
    }
    const int64_t leaf = c / shape.leaf_size;
    double top = -INFINITY, sum = 0, own = 0;
    bool ok = true;
    for (int64_t k = shape.LeafBegin(leaf); k < shape.LeafEnd(leaf); ++k) {
      const double lk = WarpClassLogKernel(spec, table, x, x_sq, k, lane);
      if (isnan(lk)) {
        ok = false;
        break;
      }
      if (lk > top) {
        sum = sum * exp(top - lk) + 1.0;
        top = lk;
      } else {
        sum += exp(lk - top);
      }
      if (k == c) own = lk;
    }
    if (!ok) {
      if (lane == 0) RecordError(b.errors, kNonFiniteRow, q);
      continue;
    }
    if (lane == 0) log_q[flat] = static_cast<float>(log_p + own - (top + log(sum)));
  }
}

std::string SampleRowMessage(long long query, const void*) {
  return "embeddings and biases must be finite: a class row read for query " +
         std::to_string(query) + " holds a NaN/Inf value (or its logit overflows)";
}

GpuStatus ValidateView(const TreeView& tree, int64_t batch, Workspace workspace) {
  TF_SAMPLED_RETURN_IF_NOT_OK(ValidateSpecAndShape(tree.spec, tree.shape));
  const int64_t d = tree.table.d;
  if (d < 1 || tree.spec.dim != d + (tree.table.biases != nullptr ? 1 : 0)) {
    return GpuStatus::Invalid(
        "the feature map's width (" + std::to_string(tree.spec.dim) +
        ") must be the embeddings' width (" + std::to_string(d) +
        ") plus one when there are biases");
  }
  if (tree.nodes == nullptr || tree.table.embeddings == nullptr) {
    return GpuStatus::Invalid("nodes and embeddings must be device arrays");
  }
  if (batch < 0 || batch > std::numeric_limits<int64_t>::max() / 32 / d) {
    return GpuStatus::Invalid("batch must be in [0, 2^63 / (32 d)), got " +
                              std::to_string(batch));
  }
  const size_t needed = QueryWorkspaceBytes(tree, batch);
  if (workspace.data == nullptr || workspace.bytes < needed) {
    return GpuStatus::Invalid("workspace of " + std::to_string(workspace.bytes) +
                              " bytes is smaller than the " +
                              std::to_string(needed) + " bytes needed");
  }
  return GpuStatus::Ok();
}

GpuStatus CheckPerQuery(int64_t batch, int64_t per_query, const char* name) {
  if (per_query < 0 || (batch > 0 && per_query > std::numeric_limits<int64_t>::max() / batch)) {
    return GpuStatus::Invalid(std::string(name) + " (" + std::to_string(per_query) +
                              ") must be >= 0 and its product with the batch (" +
                              std::to_string(batch) + ") must fit int64");
  }
  return GpuStatus::Ok();
}

unsigned BlocksForWarps(int64_t warps) { return GridFor((warps + kWarps - 1) / kWarps); }

GpuStatus LaunchQueryFeatures(const TreeView& tree, const float* inputs,
                              int64_t begin, int64_t count, const QueryBuffers& b,
                              Stream stream) {
  QueryFeaturesKernel<<<GridFor(count), kFeatureThreads, 0, stream>>>(
      tree.spec, tree.table, inputs, begin, count, b.omega_t, b);
  TF_SAMPLED_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return GpuStatus::Ok();
}

GpuStatus LaunchLogProb(const TreeView& tree, int64_t begin, int64_t count,
                        const int64_t* classes, int64_t n, const QueryBuffers& b,
                        float* log_q, Stream stream) {
  if (n == 0) return GpuStatus::Ok();
  LogProbKernel<<<BlocksForWarps(count * n), kWarps * 32, 0, stream>>>(
      tree.spec, tree.table, tree.shape, tree.nodes, begin, count,
      classes, n, b, log_q);
  TF_SAMPLED_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return GpuStatus::Ok();
}

GpuStatus Finish(const TreeView& tree, const QueryBuffers& b, const float* inputs,
                 const int64_t* ids, const char* ids_name, Stream stream) {
  DeviceErrors host;
  TF_SAMPLED_RETURN_IF_NOT_OK(ReadErrors(b.errors, stream, &host));
  ErrorContext context;
  context.spec = &tree.spec;
  context.ids = ids;
  context.ids_name = ids_name;
  context.num_classes = tree.shape.num_classes;
  context.inputs = inputs;
  context.row_message = SampleRowMessage;
  return StatusFromErrors(host, context);
}

}  // namespace

size_t QueryWorkspaceBytes(const TreeView& tree, int64_t batch) {
  if (!ValidateSpecAndShape(tree.spec, tree.shape).ok()) return kTokenWorkspace;
  size_t total = 0;
  CarveQuery(tree, ChunkSize(tree, batch), nullptr, &total);
  return total;
}

GpuStatus Sample(const TreeView& tree, const float* inputs, int64_t batch,
                 int64_t num_sampled, const int64_t* true_classes,
                 int64_t num_true, RandomStream random, int64_t* ids,
                 float* log_q, float* true_log_q, Workspace workspace,
                 Stream stream) {
  TF_SAMPLED_RETURN_IF_NOT_OK(ValidateView(tree, batch, workspace));
  if (num_sampled < 1 || num_sampled > INT_MAX) {
    return GpuStatus::Invalid("num_sampled must be in [1, 2^31), got " +
                              std::to_string(num_sampled));
  }
  TF_SAMPLED_RETURN_IF_NOT_OK(CheckPerQuery(batch, num_sampled, "num_sampled"));
  TF_SAMPLED_RETURN_IF_NOT_OK(CheckPerQuery(batch, num_true, "num_true"));
  size_t unused;
  const QueryBuffers b = CarveQuery(tree, ChunkSize(tree, batch), workspace.data, &unused);
  TF_SAMPLED_RETURN_IF_NOT_OK(ResetErrors(b.errors, stream));
  TF_SAMPLED_RETURN_IF_NOT_OK(TransposeOmega(tree.spec, b.omega_t, b.errors, stream));
  for (int64_t begin = 0; begin < batch; begin += b.chunk) {
    const int64_t count = std::min(b.chunk, batch - begin);
    TF_SAMPLED_RETURN_IF_NOT_OK(LaunchQueryFeatures(tree, inputs, begin, count, b, stream));
    SampleKernel<<<BlocksForWarps(count), kWarps * 32, 0, stream>>>(
        tree.spec, tree.table, tree.shape, tree.nodes, begin, count,
        num_sampled, random, b, ids, log_q);
    TF_SAMPLED_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    TF_SAMPLED_RETURN_IF_NOT_OK(LaunchLogProb(tree, begin, count, true_classes,
                                              num_true, b, true_log_q, stream));
  }
  return Finish(tree, b, inputs, true_classes, "true_classes", stream);
}

GpuStatus LogProb(const TreeView& tree, const float* inputs, int64_t batch,
                  const int64_t* classes, int64_t n, float* log_q,
                  Workspace workspace, Stream stream) {
  TF_SAMPLED_RETURN_IF_NOT_OK(ValidateView(tree, batch, workspace));
  TF_SAMPLED_RETURN_IF_NOT_OK(CheckPerQuery(batch, n, "the number of classes"));
  size_t unused;
  const QueryBuffers b = CarveQuery(tree, ChunkSize(tree, batch), workspace.data, &unused);
  TF_SAMPLED_RETURN_IF_NOT_OK(ResetErrors(b.errors, stream));
  TF_SAMPLED_RETURN_IF_NOT_OK(TransposeOmega(tree.spec, b.omega_t, b.errors, stream));
  for (int64_t begin = 0; begin < batch && n > 0; begin += b.chunk) {
    const int64_t count = std::min(b.chunk, batch - begin);
    TF_SAMPLED_RETURN_IF_NOT_OK(LaunchQueryFeatures(tree, inputs, begin, count, b, stream));
    TF_SAMPLED_RETURN_IF_NOT_OK(LaunchLogProb(tree, begin, count, classes, n, b,
                                              log_q, stream));
  }
  return Finish(tree, b, inputs, classes, "classes", stream);
}

}  // namespace gpu
}  // namespace tf_sampled
