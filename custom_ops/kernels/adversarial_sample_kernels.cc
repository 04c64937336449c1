// Sampling from the auxiliary tree: per-example negatives, log p_n of given
// classes, and the batch-shared candidate sampler with TensorFlow's contract.
#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "custom_ops/kernels/adversarial_common.h"
#include "custom_ops/kernels/candidate_sampling.h"

namespace tf_sampled {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::TensorShape;

namespace {

// log p_n(classes | x) into float, through a double buffer.
AuxTreeStatus LogProbFloat(const AuxTreeView& tree, const float* x,
                           const int64_t* classes, int64_t n,
                           std::vector<double>* scratch, float* out) {
  scratch->resize(n);
  const AuxTreeStatus status = AuxTreeLogProb(tree, x, classes, n, scratch->data());
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>((*scratch)[i]);
  return status;
}

// Records the first failing row of a sharded loop with its status.
// (Failures are rare: a lock on them costs nothing.)
class StatusRecorder {
 public:
  void Record(AuxTreeStatus status, int64_t row) {
    if (status == AuxTreeStatus::kOk) return;
    absl::MutexLock lock(&mu_);
    if (status_ == AuxTreeStatus::kOk || row < row_) {
      status_ = status;
      row_ = row;
    }
  }
  absl::Status status() {
    absl::MutexLock lock(&mu_);
    return AuxTreeError(status_, row_);
  }

 private:
  absl::Mutex mu_;
  AuxTreeStatus status_ = AuxTreeStatus::kOk;
  int64_t row_ = 0;
};

absl::Status CheckNumSampled(int64_t num_sampled) {
  if (num_sampled < 1) {
    return errors::InvalidArgument("num_sampled must be >= 1, got ", num_sampled);
  }
  return absl::OkStatus();
}

// The sampling ops' `counter` input (after the tree inputs and true_classes).
constexpr int kCounterInput = 5;

}  // namespace

class AuxTreeSampleOp : public OpKernel {
 public:
  explicit AuxTreeSampleOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_sampled", &num_sampled_));
    OP_REQUIRES_OK(ctx, CheckNumSampled(num_sampled_));
    OP_REQUIRES_OK(ctx, stream_.Init(ctx));
  }

  void Compute(OpKernelContext* ctx) override {
    AuxTreeInputs in;
    OP_REQUIRES_OK(ctx, in.Parse(ctx));
    const Tensor& true_classes = ctx->input(4);
    OP_REQUIRES_OK(ctx, in.CheckIds(true_classes, "true_classes"));
    const int64_t num_true = true_classes.dim_size(1);
    ::tensorflow::random::PhiloxRandom block;
    OP_REQUIRES_OK(ctx, stream_.CallBlock(ctx, kCounterInput, &block));
    Tensor *ids_t, *log_q_t, *true_log_q_t;
    OP_REQUIRES_OK(ctx, AllocatePerExampleOutputs(ctx, in.batch, num_sampled_, num_true,
                                                  &ids_t, &log_q_t, &true_log_q_t));
    if (in.batch == 0) return;
    int64_t* ids = ids_t->flat<int64_t>().data();
    float* log_q = log_q_t->flat<float>().data();
    float* true_log_q = true_log_q_t->flat<float>().data();
    const int64_t* truth = true_classes.flat<int64_t>().data();
    const int64_t k = in.tree.dim;
    StatusRecorder failure;
    ParallelFor(ctx, in.batch, in.Cost(num_sampled_ + num_true),
                [&](int64_t begin, int64_t end) {
                  AuxQueryState state;
                  std::vector<double> scratch;
                  for (int64_t b = begin; b < end; ++b) {
                    Random rng(QuerySeed(block, b));
                    const float* x = in.inputs + b * k;
                    AuxTreeStatus status =
                        AuxTreeSample(in.tree, x, num_sampled_, &rng, &state,
                                      ids + b * num_sampled_, log_q + b * num_sampled_);
                    if (status == AuxTreeStatus::kOk) {
                      status = LogProbFloat(in.tree, x, truth + b * num_true, num_true,
                                            &scratch, true_log_q + b * num_true);
                    }
                    failure.Record(status, b);
                  }
                });
    OP_REQUIRES_OK(ctx, failure.status());
  }

 private:
  int64_t num_sampled_;
  SampleStream stream_;
};

class AuxTreeLogProbOp : public OpKernel {
 public:
  explicit AuxTreeLogProbOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    AuxTreeInputs in;
    OP_REQUIRES_OK(ctx, in.Parse(ctx));
    const Tensor& classes = ctx->input(4);
    OP_REQUIRES_OK(ctx, in.CheckIds(classes, "classes"));
    const int64_t n = classes.dim_size(1);
    Tensor* log_q_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({in.batch, n}), &log_q_t));
    if (in.batch == 0 || n == 0) return;
    const int64_t* ids = classes.flat<int64_t>().data();
    float* log_q = log_q_t->flat<float>().data();
    StatusRecorder failure;
    ParallelFor(ctx, in.batch, in.Cost(n), [&](int64_t begin, int64_t end) {
      std::vector<double> scratch;
      for (int64_t b = begin; b < end; ++b) {
        failure.Record(LogProbFloat(in.tree, in.inputs + b * in.tree.dim, ids + b * n, n,
                                    &scratch, log_q + b * n),
                       b);
      }
    });
    OP_REQUIRES_OK(ctx, failure.status());
  }
};

class AuxTreeCandidateSamplerOp : public OpKernel {
 public:
  explicit AuxTreeCandidateSamplerOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_true", &num_true_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_sampled", &num_sampled_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("unique", &unique_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("range_max", &range_max_));
    OP_REQUIRES_OK(ctx, CheckNumSampled(num_sampled_));
    OP_REQUIRES(ctx, num_true_ >= 1 && range_max_ >= 1,
                errors::InvalidArgument("num_true and range_max must be >= 1, got ",
                                        num_true_, ", ", range_max_));
    OP_REQUIRES(ctx, !unique_ || num_sampled_ <= range_max_,
                errors::InvalidArgument("num_sampled (", num_sampled_,
                                        ") must be <= range_max (", range_max_,
                                        ") when unique=True"));
    OP_REQUIRES_OK(ctx, stream_.Init(ctx));
  }

  void Compute(OpKernelContext* ctx) override {
    AuxTreeInputs in;
    OP_REQUIRES_OK(ctx, in.Parse(ctx));
    OP_REQUIRES(ctx, range_max_ == in.tree.num_classes,
                errors::InvalidArgument("range_max (", range_max_,
                                        ") must equal the tree's number of classes (",
                                        in.tree.num_classes, ")"));
    const Tensor& true_classes = ctx->input(4);
    OP_REQUIRES_OK(ctx, in.CheckIds(true_classes, "true_classes"));
    OP_REQUIRES(ctx, true_classes.dim_size(1) == num_true_,
                errors::InvalidArgument("true_classes must have num_true=", num_true_,
                                        " columns, got shape ",
                                        true_classes.shape().DebugString()));
    ::tensorflow::random::PhiloxRandom block;
    OP_REQUIRES_OK(ctx, stream_.CallBlock(ctx, kCounterInput, &block));
    Tensor *sampled_t, *true_count_t, *sampled_count_t;
    OP_REQUIRES_OK(ctx, AllocateCandidateOutputs(ctx, in.batch, num_sampled_, num_true_,
                                                 &sampled_t, &true_count_t,
                                                 &sampled_count_t));
    int64_t* sampled = sampled_t->flat<int64_t>().data();
    float* sampled_log_q = sampled_count_t->flat<float>().data();
    float* true_log_q = true_count_t->flat<float>().data();

    // The mixture's rows; an empty batch uses the mean projected input (0).
    const int64_t k = in.tree.dim;
    const std::vector<float> zero(k, 0.0f);
    const float* rows = in.batch > 0 ? in.inputs : zero.data();
    const int64_t num_rows = in.batch > 0 ? in.batch : 1;

    // Draws: a row uniformly, then one descent of its tree.
    Random rng(QuerySeed(block, 0));
    AuxQueryState state;
    auto draw = [&](int64_t n, int64_t* ids, float* log_q) -> absl::Status {
      for (int64_t i = 0; i < n; ++i) {
        const int64_t row = static_cast<int64_t>(rng.Below(uint64_t(num_rows)));
        TF_RETURN_IF_ERROR(AuxTreeError(
            AuxTreeSample(in.tree, rows + row * k, 1, &rng, &state, ids + i, log_q + i),
            row));
      }
      return absl::OkStatus();
    };
    int64_t num_tries;
    OP_REQUIRES_OK(ctx, SampleCandidates(unique_, num_sampled_, range_max_, draw, sampled,
                                         sampled_log_q, &num_tries));

    // Mixture log q of every distinct class asked for: log mean_b p_n(c|x_b).
    const int64_t* truth = true_classes.flat<int64_t>().data();
    const int64_t num_truth = in.batch * num_true_;
    absl::flat_hash_map<int64_t, int64_t> index;
    std::vector<int64_t> distinct;
    for (int64_t i = 0; i < num_sampled_ + num_truth; ++i) {
      const int64_t c = i < num_sampled_ ? sampled[i] : truth[i - num_sampled_];
      if (index.emplace(c, distinct.size()).second) distinct.push_back(c);
    }
    std::vector<double> mixture(distinct.size());
    StatusRecorder failure;
    const double log_rows = std::log(double(num_rows));
    ParallelFor(ctx, distinct.size(), num_rows * in.Cost(0),
                [&](int64_t begin, int64_t end) {
                  std::vector<double> per_row(num_rows);
                  for (int64_t j = begin; j < end; ++j) {
                    double top = -INFINITY;
                    for (int64_t b = 0; b < num_rows; ++b) {
                      const AuxTreeStatus status = AuxTreeLogProb(
                          in.tree, rows + b * k, &distinct[j], 1, &per_row[b]);
                      failure.Record(status, b);
                      if (status != AuxTreeStatus::kOk) return;
                      top = std::max(top, per_row[b]);
                    }
                    double sum = 0;
                    for (double v : per_row) sum += std::exp(v - top);
                    mixture[j] = top + std::log(sum) - log_rows;
                  }
                });
    OP_REQUIRES_OK(ctx, failure.status());
    for (int64_t i = 0; i < num_sampled_; ++i) {
      sampled_log_q[i] = static_cast<float>(mixture[index[sampled[i]]]);
    }
    for (int64_t i = 0; i < num_truth; ++i) {
      true_log_q[i] = static_cast<float>(mixture[index[truth[i]]]);
    }
    LogQToExpectedCounts(sampled_log_q, num_sampled_, num_sampled_, num_tries);
    LogQToExpectedCounts(true_log_q, num_truth, num_sampled_, num_tries);
  }

 private:
  int64_t num_true_, num_sampled_, range_max_;
  bool unique_;
  SampleStream stream_;
};

REGISTER_KERNEL_BUILDER(Name("TfSampled>AuxTreeSample").Device(DEVICE_CPU),
                        AuxTreeSampleOp);
REGISTER_KERNEL_BUILDER(Name("TfSampled>AuxTreeLogProb").Device(DEVICE_CPU),
                        AuxTreeLogProbOp);
REGISTER_KERNEL_BUILDER(Name("TfSampled>AuxTreeCandidateSampler").Device(DEVICE_CPU),
                        AuxTreeCandidateSamplerOp);

}  // namespace tf_sampled
