// Sampling from the auxiliary tree: per-example negatives, log p_n of given
// classes, and the batch-shared candidate sampler with TensorFlow's contract.
#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "custom_ops/kernels/adversarial_common.h"
#include "custom_ops/kernels/candidate_sampling.h"
#include "custom_ops/kernels/sampler_ops.h"

namespace tf_sampled {

namespace {

// log p_n(classes | x) into float, through a double buffer.
AdversarialTreeStatus LogProbFloat(const AdversarialTreeView& tree, const float* x,
                                   const int64_t* classes, int64_t n,
                                   std::vector<double>* scratch, float* out) {
  scratch->resize(n);
  const AdversarialTreeStatus status =
      AdversarialTreeLogProb(tree, x, classes, n, scratch->data());
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>((*scratch)[i]);
  return status;
}

// Records a status the core returned for row `row` (kOk records nothing).
void RecordStatus(AdversarialTreeStatus status, int64_t row, ShardFailure* failure) {
  if (status != AdversarialTreeStatus::kOk) failure->Record(row, static_cast<int>(status));
}

absl::Status FailureStatus(const ShardFailure& failure) {
  if (!failure.failed()) return absl::OkStatus();
  return AdversarialTreeError(static_cast<AdversarialTreeStatus>(failure.code()), failure.item());
}

}  // namespace

// The adversarial (auxiliary-tree) family of the sampling-op skeleton
// (sampler_ops.h): inputs params, class_of_leaf, leaf_of_class and the
// projected queries `inputs`; no attributes of its own.
class AdversarialFamily {
 public:
  using Inputs = AdversarialTreeInputs;
  static constexpr const char* kQueries = "inputs";
  static constexpr bool kIdsOnHost = true;

  absl::Status Init(OpKernelConstruction*, SamplerOp) { return absl::OkStatus(); }
  absl::Status ParseInputs(OpKernelContext* ctx, Inputs* in) const { return in->Parse(ctx); }
  static int64_t Batch(const Inputs& in) { return in.batch; }
  static int64_t NumClasses(const Inputs& in) { return in.tree.num_classes; }

  absl::Status Sample(OpKernelContext* ctx, const Inputs& in,
                      const SampleRequest& r) const {
    const int64_t k = in.tree.dim;
    ShardFailure failure;
    ParallelFor(ctx, r.batch, in.Cost(r.num_sampled + r.num_true),
                [&](int64_t begin, int64_t end) {
                  AdversarialQueryState state;
                  std::vector<double> scratch;
                  for (int64_t b = begin; b < end; ++b) {
                    Random rng(QuerySeed(*r.block, b));
                    const float* x = in.inputs + b * k;
                    AdversarialTreeStatus status =
                        AdversarialTreeSample(in.tree, x, r.num_sampled, &rng, &state,
                                              r.ids + b * r.num_sampled,
                                              r.log_q + b * r.num_sampled);
                    if (status == AdversarialTreeStatus::kOk) {
                      status = LogProbFloat(in.tree, x, r.true_classes + b * r.num_true,
                                            r.num_true, &scratch,
                                            r.true_log_q + b * r.num_true);
                    }
                    RecordStatus(status, b, &failure);
                  }
                });
    return FailureStatus(failure);
  }

  absl::Status LogProb(OpKernelContext* ctx, const Inputs& in,
                       const LogProbRequest& r) const {
    ShardFailure failure;
    ParallelFor(ctx, r.batch, in.Cost(r.n), [&](int64_t begin, int64_t end) {
      std::vector<double> scratch;
      for (int64_t b = begin; b < end; ++b) {
        RecordStatus(LogProbFloat(in.tree, in.inputs + b * in.tree.dim, r.classes + b * r.n,
                                  r.n, &scratch, r.log_q + b * r.n),
                     b, &failure);
      }
    });
    return FailureStatus(failure);
  }

  absl::Status SampleShared(OpKernelContext* ctx, const Inputs& in,
                            const SharedRequest& r, int64_t* num_tries) const {
    // The mixture's rows; an empty batch uses the mean projected input (0).
    const int64_t k = in.tree.dim;
    const std::vector<float> zero(k, 0.0f);
    const float* rows = r.batch > 0 ? in.inputs : zero.data();
    const int64_t num_rows = r.batch > 0 ? r.batch : 1;

    // Draws: a row uniformly, then one descent of its tree.
    Random rng(QuerySeed(r.block, 0));
    AdversarialQueryState state;
    auto draw = [&](int64_t n, int64_t* ids, float* log_q) -> absl::Status {
      for (int64_t i = 0; i < n; ++i) {
        const int64_t row = static_cast<int64_t>(rng.Below(uint64_t(num_rows)));
        TF_RETURN_IF_ERROR(AdversarialTreeError(
            AdversarialTreeSample(in.tree, rows + row * k, 1, &rng, &state, ids + i, log_q + i),
            row));
      }
      return absl::OkStatus();
    };
    TF_RETURN_IF_ERROR(SampleCandidates(r.unique, r.num_sampled, r.range_max, draw,
                                        r.sampled, r.sampled_log_q, num_tries));

    // Mixture log q of every distinct class asked for: log mean_b p_n(c|x_b).
    const int64_t num_truth = r.batch * r.num_true;
    absl::flat_hash_map<int64_t, int64_t> index;
    std::vector<int64_t> distinct;
    for (int64_t i = 0; i < r.num_sampled + num_truth; ++i) {
      const int64_t c = i < r.num_sampled ? r.sampled[i] : r.true_classes[i - r.num_sampled];
      if (index.emplace(c, distinct.size()).second) distinct.push_back(c);
    }
    std::vector<double> mixture(distinct.size());
    ShardFailure failure;
    const double log_rows = std::log(double(num_rows));
    ParallelFor(ctx, distinct.size(), num_rows * in.Cost(0), [&](int64_t begin, int64_t end) {
      std::vector<double> per_row(num_rows);
      for (int64_t j = begin; j < end; ++j) {
        double top = -INFINITY;
        for (int64_t b = 0; b < num_rows; ++b) {
          const AdversarialTreeStatus status =
              AdversarialTreeLogProb(in.tree, rows + b * k, &distinct[j], 1, &per_row[b]);
          RecordStatus(status, b, &failure);
          if (status != AdversarialTreeStatus::kOk) return;
          top = std::max(top, per_row[b]);
        }
        double sum = 0;
        for (double v : per_row) sum += std::exp(v - top);
        mixture[j] = top + std::log(sum) - log_rows;
      }
    });
    TF_RETURN_IF_ERROR(FailureStatus(failure));
    for (int64_t i = 0; i < r.num_sampled; ++i) {
      r.sampled_log_q[i] = static_cast<float>(mixture[index[r.sampled[i]]]);
    }
    for (int64_t i = 0; i < num_truth; ++i) {
      r.true_log_q[i] = static_cast<float>(mixture[index[r.true_classes[i]]]);
    }
    return absl::OkStatus();
  }
};

TF_SAMPLED_REGISTER_SAMPLER_KERNELS("AdversarialTree", AdversarialFamily);

}  // namespace tf_sampled
