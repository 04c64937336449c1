// A C API over the CUDA core and the C++ core for the TensorFlow-free test
// harness (tools/cuda_harness.py drives it through ctypes with NumPy
// arrays). GPU entry points copy host arrays to the device, call the core and
// copy the results back; CPU entry points call the C++ core on the same
// inputs. Every entry point returns 0 (ok), 1 (InvalidArgument) or 2
// (internal/CUDA error) and writes the message into `error`.
//
// Arrays are passed with their real sizes (what is copied); the sizes the
// core is told are passed separately, so the harness can lie about them to
// check that malformed sizes are rejected before any launch.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "custom_ops/core/kernel_tree.h"
#include "custom_ops/cuda/kernel_tree_gpu.h"

using tf_sampled::ClassTable;
using tf_sampled::FeatureKind;
using tf_sampled::FeatureMapSpec;
using tf_sampled::KernelTree;
using tf_sampled::QueryState;
using tf_sampled::Random;
using tf_sampled::TreeShape;
namespace gpu = tf_sampled::gpu;

extern "C" {

// The feature map and tree, as Python passes them (omega on the host).
struct TscSpec {
  int kind;
  int bias_is_weight;
  int64_t dim;
  const float* omega;
  int64_t num_omega;
  double alpha;
  double temperature;
  int64_t num_classes;
  int64_t leaf_size;
};

// The class table (host) for the sampling calls.
struct TscTable {
  const double* nodes;
  int64_t num_node_values;  // real size of nodes
  const float* embeddings;
  int64_t num_embedding_values;
  const float* biases;  // null for none
  int64_t d;
};

}  // extern "C"

namespace {

int Report(const gpu::GpuStatus& status, char* error, int error_len) {
  if (error != nullptr && error_len > 0) {
    std::strncpy(error, status.message.c_str(), error_len - 1);
    error[error_len - 1] = '\0';
  }
  return static_cast<int>(status.code);
}

FeatureMapSpec MakeSpec(const TscSpec& s) {
  FeatureMapSpec spec;
  spec.kind = static_cast<FeatureKind>(s.kind);
  spec.dim = s.dim;
  spec.bias_is_weight = s.bias_is_weight != 0;
  spec.omega = s.omega;
  spec.num_omega = s.num_omega;
  spec.alpha = s.alpha;
  spec.temperature = s.temperature;
  return spec;
}

TreeShape MakeShape(const TscSpec& s) {
  TreeShape shape;
  shape.num_classes = s.num_classes;
  shape.leaf_size = s.leaf_size;
  return shape;
}

// A device copy of a host array (or an uninitialised device array), freed
// with the object. Zero-sized arrays get a null pointer.
class DeviceArray {
 public:
  DeviceArray(const void* host, size_t bytes) : bytes_(bytes) {
    if (bytes == 0) return;
    status_ = cudaMalloc(&data_, bytes);
    if (status_ == cudaSuccess && host != nullptr) {
      status_ = cudaMemcpy(data_, host, bytes, cudaMemcpyHostToDevice);
    }
  }
  ~DeviceArray() {
    if (data_ != nullptr) cudaFree(data_);
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  template <typename T>
  T* get() const { return static_cast<T*>(data_); }
  bool ok() const { return status_ == cudaSuccess; }
  cudaError_t status() const { return status_; }
  gpu::GpuStatus CopyTo(void* host) const {
    if (bytes_ == 0) return gpu::GpuStatus::Ok();
    const cudaError_t e = cudaMemcpy(host, data_, bytes_, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) return gpu::GpuStatus::Internal(cudaGetErrorString(e));
    return gpu::GpuStatus::Ok();
  }

 private:
  void* data_ = nullptr;
  size_t bytes_;
  cudaError_t status_ = cudaSuccess;
};

gpu::GpuStatus AllOk(std::initializer_list<const DeviceArray*> arrays) {
  for (const DeviceArray* a : arrays) {
    if (!a->ok()) return gpu::GpuStatus::Internal(cudaGetErrorString(a->status()));
  }
  return gpu::GpuStatus::Ok();
}

size_t Bytes(int64_t count, size_t size) {
  return count > 0 ? static_cast<size_t>(count) * size : 0;
}

// The core's view of a device copy of the table and spec.
struct DeviceTree {
  DeviceArray omega, nodes, embeddings, biases;
  gpu::TreeView view;
  DeviceTree(const TscSpec& s, const TscTable& t)
      : omega(s.omega, Bytes(s.num_omega * (s.dim - s.bias_is_weight), 4)),
        nodes(t.nodes, Bytes(t.num_node_values, 8)),
        embeddings(t.embeddings, Bytes(t.num_embedding_values, 4)),
        biases(t.biases, t.biases ? Bytes(s.num_classes, 4) : 0) {
    view.spec = MakeSpec(s);
    view.spec.omega = omega.get<float>();
    view.shape = MakeShape(s);
    view.nodes = nodes.get<double>();
    view.table.embeddings = embeddings.get<float>();
    view.table.biases = t.biases ? biases.get<float>() : nullptr;
    view.table.d = t.d;
  }
  gpu::GpuStatus ok() const { return AllOk({&omega, &nodes, &embeddings, &biases}); }
};

// Device copies of an update's inputs and its workspace.
struct DeviceUpdate {
  FeatureMapSpec spec;
  TreeShape shape;
  DeviceArray omega, ids, old_rows, new_rows;
  size_t work_bytes;
  DeviceArray work;
  DeviceUpdate(const TscSpec& s, const int64_t* host_ids, const float* host_old,
               const float* host_new, int64_t n)
      : spec(MakeSpec(s)), shape(MakeShape(s)),
        omega(s.omega, Bytes(s.num_omega * (s.dim - s.bias_is_weight), 4)),
        ids(host_ids, Bytes(n, 8)),
        old_rows(host_old, Bytes(n * s.dim, 4)),
        new_rows(host_new, Bytes(n * s.dim, 4)),
        work_bytes(gpu::UpdateWorkspaceBytes(spec, shape, std::max<int64_t>(n, 0))),
        work(nullptr, work_bytes) {
    spec.omega = omega.get<float>();
  }
  gpu::GpuStatus ok() const { return AllOk({&omega, &ids, &old_rows, &new_rows, &work}); }
  gpu::Workspace workspace() const { return {work.get<void>(), work_bytes}; }
};

// The C++ core's tree over host arrays.
struct HostTree {
  FeatureMapSpec spec;
  TreeShape shape;
  ClassTable table;
  KernelTree tree;
  HostTree(const TscSpec& s, const TscTable& t)
      : spec(MakeSpec(s)), shape(MakeShape(s)),
        table{t.embeddings, t.biases, t.d},
        tree(spec, shape, t.nodes, table) {}
};

}  // namespace

extern "C" {

int tsc_gpu_available() { return gpu::DeviceAvailable() ? 1 : 0; }

// ---- GPU ------------------------------------------------------------------------

// rows [num_rows, dim] (num_rows real rows), nodes_out [2N, F].
int tsc_gpu_build(const TscSpec* s, const float* rows, int64_t num_rows,
                  double* nodes_out, int64_t num_node_values, char* error,
                  int error_len) {
  FeatureMapSpec spec = MakeSpec(*s);
  DeviceArray omega(s->omega, Bytes(s->num_omega * (s->dim - s->bias_is_weight), 4));
  DeviceArray d_rows(rows, Bytes(num_rows * s->dim, 4));
  DeviceArray nodes(nullptr, Bytes(num_node_values, 8));
  DeviceArray work(nullptr, gpu::BuildWorkspaceBytes(spec));
  gpu::GpuStatus st = AllOk({&omega, &d_rows, &nodes, &work});
  if (!st.ok()) return Report(st, error, error_len);
  spec.omega = omega.get<float>();
  st = gpu::BuildNodeSums(spec, MakeShape(*s), d_rows.get<float>(), nodes.get<double>(),
                          {work.get<void>(), gpu::BuildWorkspaceBytes(spec)}, nullptr);
  if (st.ok()) st = nodes.CopyTo(nodes_out);
  return Report(st, error, error_len);
}

int tsc_gpu_sample(const TscSpec* s, const TscTable* t, const float* inputs,
                   int64_t batch, int64_t num_sampled, const int64_t* true_classes,
                   int64_t num_true, uint64_t seed, int64_t* ids, float* log_q,
                   float* true_log_q, char* error, int error_len) {
  DeviceTree tree(*s, *t);
  const int64_t b = std::max<int64_t>(batch, 0);
  DeviceArray d_inputs(inputs, Bytes(b * t->d, 4));
  DeviceArray d_true(true_classes, Bytes(b * num_true, 8));
  DeviceArray d_ids(nullptr, Bytes(b * num_sampled, 8));
  DeviceArray d_log_q(nullptr, Bytes(b * num_sampled, 4));
  DeviceArray d_true_log_q(nullptr, Bytes(b * num_true, 4));
  const size_t work_bytes = gpu::QueryWorkspaceBytes(tree.view, b);
  DeviceArray work(nullptr, work_bytes);
  gpu::GpuStatus st = tree.ok();
  if (st.ok()) st = AllOk({&d_inputs, &d_true, &d_ids, &d_log_q, &d_true_log_q, &work});
  if (!st.ok()) return Report(st, error, error_len);
  st = gpu::Sample(tree.view, d_inputs.get<float>(), batch, num_sampled,
                   d_true.get<int64_t>(), num_true, {seed, 0}, d_ids.get<int64_t>(),
                   d_log_q.get<float>(), d_true_log_q.get<float>(),
                   {work.get<void>(), work_bytes}, nullptr);
  if (st.ok()) st = d_ids.CopyTo(ids);
  if (st.ok()) st = d_log_q.CopyTo(log_q);
  if (st.ok()) st = d_true_log_q.CopyTo(true_log_q);
  return Report(st, error, error_len);
}

int tsc_gpu_log_prob(const TscSpec* s, const TscTable* t, const float* inputs,
                     int64_t batch, const int64_t* classes, int64_t n,
                     float* log_q, char* error, int error_len) {
  DeviceTree tree(*s, *t);
  const int64_t b = std::max<int64_t>(batch, 0);
  DeviceArray d_inputs(inputs, Bytes(b * t->d, 4));
  DeviceArray d_classes(classes, Bytes(b * n, 8));
  DeviceArray d_log_q(nullptr, Bytes(b * n, 4));
  const size_t work_bytes = gpu::QueryWorkspaceBytes(tree.view, b);
  DeviceArray work(nullptr, work_bytes);
  gpu::GpuStatus st = tree.ok();
  if (st.ok()) st = AllOk({&d_inputs, &d_classes, &d_log_q, &work});
  if (!st.ok()) return Report(st, error, error_len);
  st = gpu::LogProb(tree.view, d_inputs.get<float>(), batch, d_classes.get<int64_t>(),
                    n, d_log_q.get<float>(), {work.get<void>(), work_bytes}, nullptr);
  if (st.ok()) st = d_log_q.CopyTo(log_q);
  return Report(st, error, error_len);
}

// In place on a copy of nodes (nodes_inout [num_node_values]).
int tsc_gpu_apply_updates(const TscSpec* s, double* nodes_inout,
                          int64_t num_node_values, const int64_t* ids,
                          const float* old_rows, const float* new_rows, int64_t n,
                          char* error, int error_len) {
  DeviceUpdate u(*s, ids, old_rows, new_rows, n);
  DeviceArray nodes(nodes_inout, Bytes(num_node_values, 8));
  gpu::GpuStatus st = u.ok();
  if (st.ok()) st = AllOk({&nodes});
  if (!st.ok()) return Report(st, error, error_len);
  st = gpu::ApplyRowUpdates(u.spec, u.shape, u.ids.get<int64_t>(), u.old_rows.get<float>(),
                            u.new_rows.get<float>(), n, nodes.get<double>(), u.workspace(),
                            nullptr);
  if (st.ok()) st = nodes.CopyTo(nodes_inout);
  return Report(st, error, error_len);
}

// The CPU op's outputs: node_ids [capacity], node_deltas [capacity, F];
// *num_nodes gets how many were written.
int tsc_gpu_update_deltas(const TscSpec* s, const int64_t* ids, const float* old_rows,
                          const float* new_rows, int64_t n, int64_t capacity,
                          int64_t* num_nodes, int64_t* node_ids, double* node_deltas,
                          char* error, int error_len) {
  DeviceUpdate u(*s, ids, old_rows, new_rows, n);
  gpu::GpuStatus st = u.ok();
  if (!st.ok()) return Report(st, error, error_len);
  *num_nodes = 0;
  int64_t k = 0;
  st = gpu::PrepareUpdateDeltas(u.spec, u.shape, u.ids.get<int64_t>(), u.old_rows.get<float>(),
                                u.new_rows.get<float>(), n, u.workspace(), nullptr, &k);
  if (!st.ok()) return Report(st, error, error_len);
  if (k > capacity) {
    return Report(gpu::GpuStatus::Invalid("capacity too small"), error, error_len);
  }
  const int64_t f = u.spec.NumFeatures();
  DeviceArray out_ids(nullptr, Bytes(k, 8)), out_deltas(nullptr, Bytes(k * f, 8));
  st = AllOk({&out_ids, &out_deltas});
  if (st.ok()) {
    st = gpu::FinishUpdateDeltas(u.spec, u.shape, n, k, u.workspace(), nullptr,
                                 out_ids.get<int64_t>(), out_deltas.get<double>());
  }
  if (st.ok()) st = out_ids.CopyTo(node_ids);
  if (st.ok()) st = out_deltas.CopyTo(node_deltas);
  if (st.ok()) *num_nodes = k;
  return Report(st, error, error_len);
}

// Whether the device is still healthy after a call (no sticky error: an
// illegal access would poison the context).
int tsc_gpu_check_context(char* error, int error_len) {
  const cudaError_t e = cudaDeviceSynchronize();
  if (e != cudaSuccess) {
    return Report(gpu::GpuStatus::Internal(cudaGetErrorString(e)), error, error_len);
  }
  return 0;
}

// ---- CPU reference (the C++ core) -------------------------------------------------

int tsc_cpu_build(const TscSpec* s, const float* rows, double* nodes_out) {
  const FeatureMapSpec spec = MakeSpec(*s);
  const TreeShape shape = MakeShape(*s);
  const int64_t f = spec.NumFeatures();
  tf_sampled::FeatureScratch scratch;
  std::vector<double> features;
  std::fill(nodes_out, nodes_out + f, 0.0);
  for (int64_t leaf = 0; leaf < shape.NumLeaves(); ++leaf) {
    if (!tf_sampled::SumLeafFeatures(spec, shape, rows, leaf,
                                     nodes_out + shape.NodeOfLeaf(leaf) * f,
                                     &scratch, &features)) {
      return 1;
    }
  }
  tf_sampled::SumInternalNodes(shape, f, nodes_out);
  return 0;
}

int tsc_cpu_log_prob(const TscSpec* s, const TscTable* t, const float* inputs,
                     int64_t batch, const int64_t* classes, int64_t n, float* log_q) {
  const HostTree h(*s, *t);
  QueryState state;
  h.tree.InitState(&state);
  for (int64_t b = 0; b < batch; ++b) {
    h.tree.SetQuery(inputs + b * t->d, &state);
    if (!h.tree.LogProb(&state, classes + b * n, n, log_q + b * n)) return 1;
  }
  return 0;
}

int tsc_cpu_sample(const TscSpec* s, const TscTable* t, const float* inputs,
                   int64_t batch, int64_t num_sampled, uint64_t seed, int64_t* ids,
                   float* log_q) {
  const HostTree h(*s, *t);
  QueryState state;
  h.tree.InitState(&state);
  for (int64_t b = 0; b < batch; ++b) {
    Random rng(seed + 0x9e3779b97f4a7c15ULL * uint64_t(b));
    h.tree.SetQuery(inputs + b * t->d, &state);
    if (!h.tree.Sample(&state, num_sampled, &rng, ids + b * num_sampled,
                       log_q + b * num_sampled)) {
      return 1;
    }
  }
  return 0;
}

// AggregatePathDeltas' outputs (capacity as in tsc_gpu_update_deltas).
int tsc_cpu_update_deltas(const TscSpec* s, const int64_t* ids, const float* old_rows,
                          const float* new_rows, int64_t n, int64_t capacity,
                          int64_t* num_nodes, int64_t* node_ids, double* node_deltas) {
  const FeatureMapSpec spec = MakeSpec(*s);
  const TreeShape shape = MakeShape(*s);
  const int64_t f = spec.NumFeatures();
  std::vector<double> deltas(n * f), features;
  tf_sampled::FeatureScratch scratch;
  if (!tf_sampled::RowFeatureDeltas(spec, old_rows, new_rows, n, deltas.data(),
                                    &scratch, &features)) {
    return 1;
  }
  std::vector<int64_t> out_ids;
  std::vector<double> out_deltas;
  tf_sampled::AggregatePathDeltas(shape, f, ids, deltas.data(), n, &out_ids, &out_deltas);
  if (static_cast<int64_t>(out_ids.size()) > capacity) return 2;
  std::copy(out_ids.begin(), out_ids.end(), node_ids);
  std::copy(out_deltas.begin(), out_deltas.end(), node_deltas);
  *num_nodes = out_ids.size();
  return 0;
}

}  // extern "C"
