// The kernel sampling tree on a CUDA GPU, framework-free: device pointers in
// and out, the random stream passed in as (seed, offset), a caller-provided
// device workspace, and a cudaStream_t. No TensorFlow types, and no CUDA
// header either (the stream is forward-declared), so host code built without
// CUDA can include this file.
//
// Same math as the C++ core (custom_ops/core/feature_map.h, kernel_tree.h):
// the same FeatureMapSpec and TreeShape (spec.omega is a DEVICE pointer
// here), the same heap layout of node sums (float64, [2N, F], row 0 unused),
// the same clamped branch probabilities and exact in-leaf kernels, so log q is
// that of the process actually sampled, exactly, as on the CPU.
//
// Every entry point validates sizes on the host before any launch and checks
// values on the device (NaN/Inf inputs, rows and omega; class ids out of
// range): a device-side failure is written to an error record in the
// workspace, read back at the end of the call, and returned as
// kInvalidArgument with the CPU kernels' message. Calls therefore synchronise
// the stream once, at their end.
#ifndef TF_SAMPLED_CUDA_KERNEL_TREE_GPU_H_
#define TF_SAMPLED_CUDA_KERNEL_TREE_GPU_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "custom_ops/core/feature_map.h"
#include "custom_ops/core/kernel_tree.h"

struct CUstream_st;  // cudaStream_t is CUstream_st*.

namespace tf_sampled {
namespace gpu {

using Stream = CUstream_st*;

struct GpuStatus {
  enum Code { kOk = 0, kInvalidArgument = 1, kInternal = 2 };
  Code code = kOk;
  std::string message;

  bool ok() const { return code == kOk; }
  static GpuStatus Ok() { return {}; }
  static GpuStatus Invalid(std::string m) { return {kInvalidArgument, std::move(m)}; }
  static GpuStatus Internal(std::string m) { return {kInternal, std::move(m)}; }
};

// Device workspace: the caller allocates `bytes` (from *WorkspaceBytes) on the
// device. 256-byte aligned pointers are carved from it.
struct Workspace {
  void* data = nullptr;
  size_t bytes = 0;
};

// ---- Building the node sums ------------------------------------------------

// Bytes of workspace BuildNodeSums needs.
size_t BuildWorkspaceBytes(const FeatureMapSpec& spec);

// nodes [shape.NumNodeRows(), spec.NumFeatures()] (device) from augmented rows
// [shape.num_classes, spec.dim] (device). Leaves are summed directly in
// registers (one block per leaf), so no [C, F] matrix is ever formed; the
// internal nodes are then filled one heap level per launch.
GpuStatus BuildNodeSums(const FeatureMapSpec& spec, const TreeShape& shape,
                        const float* rows, double* nodes, Workspace workspace,
                        Stream stream);

// ---- Updating rows -----------------------------------------------------------

// Bytes of workspace the update entry points need for n rows.
size_t UpdateWorkspaceBytes(const FeatureMapSpec& spec, const TreeShape& shape,
                            int64_t n);

// In place: nodes += phi(new_rows[r]) - phi(old_rows[r]) on every node of the
// path of ids[r], for r < n (device arrays; rows augmented [n, spec.dim]).
// Rows sharing a node are summed with double atomics (no lost updates; the
// order of the additions, hence the last bits, is not deterministic). Nothing
// is applied when a row is not finite or an id is out of range.
GpuStatus ApplyRowUpdates(const FeatureMapSpec& spec, const TreeShape& shape,
                          const int64_t* ids, const float* old_rows,
                          const float* new_rows, int64_t n, double* nodes,
                          Workspace workspace, Stream stream);

// The CPU op's contract (AggregatePathDeltas): unique touched nodes ascending
// and their summed deltas, deterministic (rows are summed in row order after
// a stable sort by node). Two steps because the output size is known only on
// the device: Prepare fills the workspace and returns the number of nodes,
// Finish writes node_ids [num_nodes] and node_deltas [num_nodes, F] (device).
GpuStatus PrepareUpdateDeltas(const FeatureMapSpec& spec, const TreeShape& shape,
                              const int64_t* ids, const float* old_rows,
                              const float* new_rows, int64_t n,
                              Workspace workspace, Stream stream,
                              int64_t* num_nodes);
GpuStatus FinishUpdateDeltas(const FeatureMapSpec& spec, const TreeShape& shape,
                             int64_t n, int64_t num_nodes, Workspace workspace,
                             Stream stream, int64_t* node_ids,
                             double* node_deltas);

// ---- Sampling and log q --------------------------------------------------------

// What the sampling entry points read (all device pointers).
struct TreeView {
  FeatureMapSpec spec;  // spec.dim = d + (biases ? 1 : 0)
  TreeShape shape;
  const double* nodes = nullptr;  // [shape.NumNodeRows(), spec.NumFeatures()]
  ClassTable table;               // embeddings [C, d], biases [C] or null
};

// The random stream of one call: query b's draws use Philox4x32-10 with this
// key, subsequence b and the counter starting at `offset`, so results do not
// depend on how the batch is chunked.
struct RandomStream {
  uint64_t seed = 0;
  uint64_t offset = 0;
};

// Bytes of workspace Sample / LogProb need for `batch` queries (the batch is
// processed in chunks that fit kWorkspaceBudget).
constexpr size_t kWorkspaceBudget = size_t{256} << 20;
size_t QueryWorkspaceBytes(const TreeView& tree, int64_t batch);

// Per-example sampling: ids, log_q [batch, num_sampled] from q(.|inputs[b])
// (one warp per query, the draws split down the tree by binomials), and
// true_log_q [batch, num_true] for true_classes [batch, num_true] (num_true
// may be 0). inputs [batch, d].
GpuStatus Sample(const TreeView& tree, const float* inputs, int64_t batch,
                 int64_t num_sampled, const int64_t* true_classes,
                 int64_t num_true, RandomStream random, int64_t* ids,
                 float* log_q, float* true_log_q, Workspace workspace,
                 Stream stream);

// log q(classes[b, k] | inputs[b]) for classes [batch, n] (one warp per id).
GpuStatus LogProb(const TreeView& tree, const float* inputs, int64_t batch,
                  const int64_t* classes, int64_t n, float* log_q,
                  Workspace workspace, Stream stream);

// ---- Adversarial sampler (auxiliary tree) ---------------------------------------
// Reserved: the auxiliary tree's sampling and log p_n go here, beside the
// kernel tree, once the CPU core (custom_ops/core/adversarial_tree*) has landed; they
// will take the same Workspace / RandomStream / Stream arguments and report
// errors the same way.

// Whether a CUDA device is usable (false without a driver or a GPU).
bool DeviceAvailable();

}  // namespace gpu
}  // namespace tf_sampled

#endif  // TF_SAMPLED_CUDA_KERNEL_TREE_GPU_H_
