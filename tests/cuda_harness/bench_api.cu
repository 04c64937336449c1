// Timings for benchmarks/bench_cuda.py: the CUDA core (build, per-example
// sampling, touched-row updates) and the C++ core's per-example sampling on
// all cores, on the same synthetic table (generated from a hash of the
// element index, so the GPU and the CPU see identical data without a copy of
// a 5 GB table through Python).
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <thread>
#include <vector>

#include "custom_ops/core/kernel_tree.h"
#include "custom_ops/core/kernel_tree_batch.h"
#include "custom_ops/cuda/kernel_tree_gpu.h"

namespace gpu = tf_sampled::gpu;
using tf_sampled::FeatureKind;
using tf_sampled::FeatureMapSpec;
using tf_sampled::TreeShape;

namespace {

__host__ __device__ inline uint64_t Mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// A standard normal for element i of stream `salt` (Box-Muller).
__host__ __device__ inline float HashNormal(uint64_t i, uint64_t salt) {
  const uint64_t a = Mix(i * 2 + (salt << 40)), b = Mix(i * 2 + 1 + (salt << 40));
  const double u1 = (double(a >> 11) + 1.0) * (1.0 / 9007199254740992.0);
  const double u2 = double(b >> 11) * (1.0 / 9007199254740992.0);
  return float(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

__global__ void FillNormal(float* out, int64_t n, uint64_t salt, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = scale * HashNormal(i, salt);
  }
}

__global__ void FillIds(int64_t* out, int64_t n, int64_t num_classes, uint64_t salt) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = int64_t(Mix(i + (salt << 40)) % uint64_t(num_classes));
  }
}

void HostNormal(std::vector<float>* out, uint64_t salt, float scale, int threads) {
  const int64_t n = out->size();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([=] {
      for (int64_t i = n * t / threads; i < n * (t + 1) / threads; ++i) {
        (*out)[i] = scale * HashNormal(i, salt);
      }
    });
  }
  for (auto& th : pool) th.join();
}

struct Timer {
  cudaEvent_t start, stop;
  Timer() { cudaEventCreate(&start); cudaEventCreate(&stop); }
  ~Timer() { cudaEventDestroy(start); cudaEventDestroy(stop); }
  void Start() { cudaEventRecord(start); }
  double StopMs() {
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    return ms;
  }
};

FeatureMapSpec BenchSpec(int kind, int64_t d, int64_t num_omega, double temperature) {
  FeatureMapSpec spec;
  spec.kind = static_cast<FeatureKind>(kind);
  spec.dim = d;
  spec.num_omega = (kind == 1 || kind == 2) ? num_omega : 0;
  spec.temperature = temperature;
  spec.alpha = 100.0;
  return spec;
}

constexpr uint64_t kTableSalt = 1, kOmegaSalt = 2, kInputSalt = 3, kNewRowSalt = 4;

}  // namespace

extern "C" {

// out: [build_ms, sample_ms, apply_update_ms, update_deltas_ms, log_prob_ms]
// (each the mean over `reps` calls after one warm-up). Returns 0, or the
// core's status code (the message in `error`).
int tsc_gpu_bench(int kind, int64_t num_classes, int64_t d, int64_t batch,
                  int64_t num_sampled, int64_t leaf_size, int64_t num_omega,
                  double temperature, int64_t touched, int reps, double* out,
                  char* error, int error_len) {
  FeatureMapSpec spec = BenchSpec(kind, d, num_omega, temperature);
  TreeShape shape;
  shape.num_classes = num_classes;
  shape.leaf_size = leaf_size;
  const int64_t f = spec.NumFeatures();
  float *table, *omega, *inputs, *new_rows;
  double* nodes;
  int64_t *ids, *true_ids, *touched_ids, *node_ids;
  double* node_deltas;
  float *log_q, *true_log_q;
  cudaMalloc(&table, num_classes * d * 4);
  cudaMalloc(&omega, std::max<int64_t>(spec.num_omega, 1) * d * 4);
  cudaMalloc(&inputs, batch * d * 4);
  cudaMalloc(&new_rows, touched * d * 4);
  cudaMalloc(&nodes, shape.NumNodeRows() * f * 8);
  cudaMalloc(&ids, batch * num_sampled * 8);
  cudaMalloc(&log_q, batch * num_sampled * 4);
  cudaMalloc(&true_ids, batch * 8);
  cudaMalloc(&true_log_q, batch * 4);
  cudaMalloc(&touched_ids, touched * 8);
  const float row_scale = float(1.0 / std::sqrt(double(d)));
  FillNormal<<<4096, 256>>>(table, num_classes * d, kTableSalt, row_scale);
  FillNormal<<<4096, 256>>>(omega, spec.num_omega * d, kOmegaSalt, 1.0f);
  FillNormal<<<4096, 256>>>(inputs, batch * d, kInputSalt, 3 * row_scale);
  FillNormal<<<4096, 256>>>(new_rows, touched * d, kNewRowSalt, row_scale);
  FillIds<<<4096, 256>>>(true_ids, batch, num_classes, 5);
  FillIds<<<4096, 256>>>(touched_ids, touched, num_classes, 6);
  spec.omega = omega;
  cudaMalloc(&node_ids, touched * 64 * 8);
  cudaMalloc(&node_deltas, std::min<int64_t>(touched * 64, shape.NumNodeRows()) * f * 8);

  const size_t build_bytes = gpu::BuildWorkspaceBytes(spec);
  gpu::TreeView view{spec, shape, nodes, {table, nullptr, d}};
  const size_t query_bytes = gpu::QueryWorkspaceBytes(view, batch);
  const size_t update_bytes = gpu::UpdateWorkspaceBytes(spec, shape, touched);
  void* work;
  cudaMalloc(&work, std::max(build_bytes, std::max(query_bytes, update_bytes)));
  const cudaError_t alloc = cudaDeviceSynchronize();
  if (alloc != cudaSuccess) {
    std::snprintf(error, error_len, "allocation: %s", cudaGetErrorString(alloc));
    return 2;
  }
  gpu::GpuStatus st;
  Timer timer;
  auto run = [&](int slot, auto&& fn) {
    st = fn();  // warm-up
    if (!st.ok()) return;
    double total = 0;
    for (int r = 0; r < reps && st.ok(); ++r) {
      timer.Start();
      st = fn();
      total += timer.StopMs();
    }
    out[slot] = total / reps;
  };
  run(0, [&] { return gpu::BuildNodeSums(spec, shape, table, nodes, {work, build_bytes}, nullptr); });
  uint64_t seed = 1;
  if (st.ok()) {
    run(1, [&] {
      return gpu::Sample(view, inputs, batch, num_sampled, true_ids, 1, {seed++, 0}, ids,
                         log_q, true_log_q, {work, query_bytes}, nullptr);
    });
  }
  // Updates: the same `touched` rows replaced on every call (the tree drifts
  // from the table, which timing does not care about).
  float* old_rows;
  cudaMalloc(&old_rows, touched * d * 4);
  cudaMemcpy(old_rows, table, std::min(touched, num_classes) * d * 4, cudaMemcpyDeviceToDevice);
  if (st.ok()) {
    run(2, [&] {
      return gpu::ApplyRowUpdates(spec, shape, touched_ids, old_rows, new_rows, touched, nodes,
                                  {work, update_bytes}, nullptr);
    });
  }
  if (st.ok()) {
    run(3, [&] {
      int64_t k = 0;
      gpu::GpuStatus s = gpu::PrepareUpdateDeltas(spec, shape, touched_ids, old_rows, new_rows,
                                                  touched, {work, update_bytes}, nullptr, &k);
      if (!s.ok()) return s;
      return gpu::FinishUpdateDeltas(spec, shape, touched, k, {work, update_bytes}, nullptr,
                                     node_ids, node_deltas);
    });
  }
  if (st.ok()) {
    run(4, [&] {
      return gpu::LogProb(view, inputs, batch, ids, num_sampled, log_q, {work, query_bytes},
                          nullptr);
    });
  }
  for (void* p : {(void*)table, (void*)omega, (void*)inputs, (void*)new_rows, (void*)old_rows,
                  (void*)nodes, (void*)ids, (void*)log_q, (void*)true_ids, (void*)true_log_q,
                  (void*)touched_ids, (void*)node_ids, (void*)node_deltas, work}) {
    cudaFree(p);
  }
  if (!st.ok()) std::snprintf(error, error_len, "%s", st.message.c_str());
  return static_cast<int>(st.code);
}

// The C++ core on `threads` threads, same data: out = [build_s, sample_s]
// (sampling: the mean over `reps` calls of batch x num_sampled draws).
int tsc_cpu_bench(int kind, int64_t num_classes, int64_t d, int64_t batch,
                  int64_t num_sampled, int64_t leaf_size, int64_t num_omega,
                  double temperature, int threads, int reps, double* out) {
  FeatureMapSpec spec = BenchSpec(kind, d, num_omega, temperature);
  TreeShape shape;
  shape.num_classes = num_classes;
  shape.leaf_size = leaf_size;
  const float row_scale = float(1.0 / std::sqrt(double(d)));
  std::vector<float> table(num_classes * d), omega(std::max<int64_t>(spec.num_omega, 1) * d),
      inputs(batch * d);
  HostNormal(&table, kTableSalt, row_scale, threads);
  HostNormal(&omega, kOmegaSalt, 1.0f, threads);
  HostNormal(&inputs, kInputSalt, 3 * row_scale, threads);
  spec.omega = omega.data();
  const int64_t f = spec.NumFeatures();
  std::vector<double> nodes(shape.NumNodeRows() * f, 0.0);
  const int64_t leaves = shape.NumLeaves();
  using Clock = std::chrono::steady_clock;
  auto t0 = Clock::now();
  std::vector<std::thread> pool;
  std::vector<int> failed(threads, 0);
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      tf_sampled::FeatureScratch scratch;
      std::vector<double> features;
      for (int64_t leaf = leaves * t / threads; leaf < leaves * (t + 1) / threads; ++leaf) {
        if (!tf_sampled::SumLeafFeatures(spec, shape, table.data(), leaf,
                                         nodes.data() + shape.NodeOfLeaf(leaf) * f,
                                         &scratch, &features)) {
          failed[t] = 1;
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  tf_sampled::SumInternalNodes(shape, f, nodes.data());
  out[0] = std::chrono::duration<double>(Clock::now() - t0).count();
  const tf_sampled::ClassTable class_table{table.data(), nullptr, d};
  const tf_sampled::KernelTree tree(spec, shape, nodes.data(), class_table);
  std::vector<int64_t> ids(batch * num_sampled), true_ids(batch, 0);
  std::vector<float> log_q(batch * num_sampled), true_log_q(batch);
  std::vector<uint64_t> seeds(batch);
  // The op's batched path (all descents, then each leaf against its queries)
  // on `threads` std::threads.
  const tf_sampled::ParallelRange parallel =
      [threads](int64_t n, int64_t, const std::function<void(int64_t, int64_t)>& fn) {
        std::vector<std::thread> workers;
        for (int t = 0; t < threads; ++t) {
          workers.emplace_back([&, t] { fn(n * t / threads, n * (t + 1) / threads); });
        }
        for (auto& w : workers) w.join();
      };
  double total = 0;
  for (int r = 0; r < reps; ++r) {
    for (int64_t b = 0; b < batch; ++b) seeds[b] = uint64_t(r) * batch + b;
    tf_sampled::BatchSampleRequest request;
    request.inputs = inputs.data();
    request.batch = batch;
    request.num_sampled = num_sampled;
    request.true_classes = true_ids.data();
    request.num_true = 1;
    request.seeds = seeds.data();
    request.ids = ids.data();
    request.log_q = log_q.data();
    request.true_log_q = true_log_q.data();
    t0 = Clock::now();
    if (tf_sampled::SampleBatch(tree, request, parallel) >= 0) failed[0] = 1;
    total += std::chrono::duration<double>(Clock::now() - t0).count();
  }
  out[1] = total / reps;
  for (int v : failed) {
    if (v) return 1;
  }
  return 0;
}

}  // extern "C"
