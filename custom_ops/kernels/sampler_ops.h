// The three sampling OpKernels every sampler family registers, written once:
//
//   SampleOp<Family>            per-example negatives: ids, log_q [batch, S],
//                               true_log_q [batch, num_true]
//   LogProbOp<Family>           log q of given classes [batch, n]
//   CandidateSamplerOp<Family>  batch-shared candidates with TensorFlow's
//                               candidate-sampler contract
//
// The skeleton owns what the families have in common: the count attributes
// and the sample stream, the named inputs `true_classes` / `classes` /
// `counter`, the class-id checks, output allocation, the empty batch and the
// conversion of log q into expected counts. A family supplies its proposal:
//
//   struct Family {
//     // Attributes of the family, parsed for each op (`op` says which).
//     absl::Status Init(OpKernelConstruction* ctx, SamplerOp op);
//     using Inputs = ...;  // the family's state and queries, validated
//     absl::Status ParseInputs(OpKernelContext* ctx, Inputs* in) const;
//     static int64_t Batch(const Inputs& in);
//     static int64_t NumClasses(const Inputs& in);
//     static constexpr const char* kQueries = "inputs";  // the queries' name
//     static constexpr bool kIdsOnHost = true;  // false: the device checks ids
//     absl::Status Sample(OpKernelContext*, const Inputs&, const SampleRequest&) const;
//     absl::Status LogProb(OpKernelContext*, const Inputs&, const LogProbRequest&) const;
//     absl::Status SampleShared(OpKernelContext*, const Inputs&,
//                               const SharedRequest&, int64_t* num_tries) const;
//   };
//
// The count attributes (num_sampled, num_true, range_max) are declared
// `int >= 1` in every op registration, so TensorFlow rejects the others
// before a kernel exists.
#ifndef TF_SAMPLED_KERNELS_SAMPLER_OPS_H_
#define TF_SAMPLED_KERNELS_SAMPLER_OPS_H_

#include <cstdint>

#include "custom_ops/kernels/candidate_sampling.h"
#include "custom_ops/kernels/common.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace tf_sampled {

enum class SamplerOp { kSample, kLogProb, kCandidateSampler };

// A per-example sampling call: query b draws num_sampled classes seeded by
// QuerySeed(*block, b) and scores its true classes.
struct SampleRequest {
  int64_t batch = 0;  // >= 1
  int64_t num_sampled = 0;
  int64_t num_true = 0;
  const int64_t* true_classes = nullptr;  // [batch, num_true], in range
  const ::tensorflow::random::PhiloxRandom* block = nullptr;
  int64_t* ids = nullptr;        // [batch, num_sampled]
  float* log_q = nullptr;        // [batch, num_sampled]
  float* true_log_q = nullptr;   // [batch, num_true]
};

// log q of `n` given classes per query.
struct LogProbRequest {
  int64_t batch = 0;  // >= 1
  int64_t n = 0;      // >= 1
  const int64_t* classes = nullptr;  // [batch, n], in range
  float* log_q = nullptr;            // [batch, n]
};

// A batch-shared call: num_sampled candidates from the batch's proposal
// (drawn with SampleCandidates, which handles `unique`), and log q of every
// candidate and true class under it; the skeleton turns them into counts.
struct SharedRequest {
  int64_t batch = 0;  // may be 0
  int64_t num_true = 0;
  int64_t num_sampled = 0;
  int64_t range_max = 0;  // == the family's number of classes
  bool unique = false;
  const int64_t* true_classes = nullptr;  // [batch, num_true], in range
  ::tensorflow::random::PhiloxRandom block;
  int64_t* sampled = nullptr;      // [num_sampled]
  float* sampled_log_q = nullptr;  // [num_sampled]
  float* true_log_q = nullptr;     // [batch, num_true]
};

// A [batch, n] tensor of class ids, one row per query (`queries` names them),
// with ids in [0, num_classes) when they are on the host.
inline absl::Status CheckQueryClasses(const Tensor& ids, const char* name,
                                      int64_t batch, const char* queries,
                                      int64_t num_classes, bool ids_on_host) {
  TF_RETURN_IF_ERROR(CheckRank(ids, 2, name));
  if (ids.dim_size(0) != batch) {
    return errors::InvalidArgument(name, " must have ", batch, " rows like ", queries,
                                   ", got shape ", ids.shape().DebugString());
  }
  return ids_on_host ? CheckClassIds(ids, num_classes, name) : absl::OkStatus();
}

template <typename Family>
class SampleOp : public ::tensorflow::OpKernel {
 public:
  explicit SampleOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, family_.Init(ctx, SamplerOp::kSample));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_sampled", &num_sampled_));
    OP_REQUIRES_OK(ctx, stream_.Init(ctx));
  }

  void Compute(OpKernelContext* ctx) override {
    typename Family::Inputs in;
    OP_REQUIRES_OK(ctx, family_.ParseInputs(ctx, &in));
    const int64_t batch = Family::Batch(in);
    const Tensor* true_classes;
    OP_REQUIRES_OK(ctx, ctx->input("true_classes", &true_classes));
    OP_REQUIRES_OK(ctx, CheckQueryClasses(*true_classes, "true_classes", batch,
                                          Family::kQueries, Family::NumClasses(in),
                                          Family::kIdsOnHost));
    const int64_t num_true = true_classes->dim_size(1);
    ::tensorflow::random::PhiloxRandom block;
    OP_REQUIRES_OK(ctx, stream_.CallBlock(ctx, &block));
    Tensor *ids, *log_q, *true_log_q;
    OP_REQUIRES_OK(ctx, AllocatePerExampleOutputs(ctx, batch, num_sampled_, num_true, &ids,
                                                  &log_q, &true_log_q));
    if (batch == 0) return;
    SampleRequest request;
    request.batch = batch;
    request.num_sampled = num_sampled_;
    request.num_true = num_true;
    request.true_classes = true_classes->flat<int64_t>().data();
    request.block = &block;
    request.ids = ids->flat<int64_t>().data();
    request.log_q = log_q->flat<float>().data();
    request.true_log_q = true_log_q->flat<float>().data();
    OP_REQUIRES_OK(ctx, family_.Sample(ctx, in, request));
  }

 private:
  Family family_;
  int64_t num_sampled_;
  SampleStream stream_;
};

template <typename Family>
class LogProbOp : public ::tensorflow::OpKernel {
 public:
  explicit LogProbOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, family_.Init(ctx, SamplerOp::kLogProb));
  }

  void Compute(OpKernelContext* ctx) override {
    typename Family::Inputs in;
    OP_REQUIRES_OK(ctx, family_.ParseInputs(ctx, &in));
    const int64_t batch = Family::Batch(in);
    const Tensor* classes;
    OP_REQUIRES_OK(ctx, ctx->input("classes", &classes));
    OP_REQUIRES_OK(ctx, CheckQueryClasses(*classes, "classes", batch, Family::kQueries,
                                          Family::NumClasses(in), Family::kIdsOnHost));
    const int64_t n = classes->dim_size(1);
    Tensor* log_q;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ::tensorflow::TensorShape({batch, n}),
                                             &log_q));
    if (batch == 0 || n == 0) return;
    LogProbRequest request;
    request.batch = batch;
    request.n = n;
    request.classes = classes->flat<int64_t>().data();
    request.log_q = log_q->flat<float>().data();
    OP_REQUIRES_OK(ctx, family_.LogProb(ctx, in, request));
  }

 private:
  Family family_;
};

template <typename Family>
class CandidateSamplerOp : public ::tensorflow::OpKernel {
 public:
  explicit CandidateSamplerOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, family_.Init(ctx, SamplerOp::kCandidateSampler));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_true", &num_true_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_sampled", &num_sampled_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("unique", &unique_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("range_max", &range_max_));
    OP_REQUIRES(ctx, !unique_ || num_sampled_ <= range_max_,
                errors::InvalidArgument("num_sampled (", num_sampled_,
                                        ") must be <= range_max (", range_max_,
                                        ") when unique=True"));
    OP_REQUIRES_OK(ctx, stream_.Init(ctx));
  }

  void Compute(OpKernelContext* ctx) override {
    typename Family::Inputs in;
    OP_REQUIRES_OK(ctx, family_.ParseInputs(ctx, &in));
    const int64_t batch = Family::Batch(in);
    const int64_t num_classes = Family::NumClasses(in);
    OP_REQUIRES(ctx, range_max_ == num_classes,
                errors::InvalidArgument("range_max (", range_max_,
                                        ") must equal the sampler's number of classes (",
                                        num_classes, ")"));
    const Tensor* true_classes;
    OP_REQUIRES_OK(ctx, ctx->input("true_classes", &true_classes));
    OP_REQUIRES_OK(ctx, CheckRank(*true_classes, 2, "true_classes"));
    OP_REQUIRES(ctx,
                true_classes->dim_size(0) == batch && true_classes->dim_size(1) == num_true_,
                errors::InvalidArgument("true_classes must have shape [", batch, ", ",
                                        num_true_, "] (a row per row of ", Family::kQueries,
                                        ", num_true=", num_true_, " columns), got shape ",
                                        true_classes->shape().DebugString()));
    if (Family::kIdsOnHost) {
      OP_REQUIRES_OK(ctx, CheckClassIds(*true_classes, num_classes, "true_classes"));
    }
    SharedRequest request;
    OP_REQUIRES_OK(ctx, stream_.CallBlock(ctx, &request.block));
    Tensor *sampled, *true_count, *sampled_count;
    OP_REQUIRES_OK(ctx, AllocateCandidateOutputs(ctx, batch, num_sampled_, num_true_,
                                                 &sampled, &true_count, &sampled_count));
    request.batch = batch;
    request.num_true = num_true_;
    request.num_sampled = num_sampled_;
    request.range_max = range_max_;
    request.unique = unique_;
    request.true_classes = true_classes->flat<int64_t>().data();
    request.sampled = sampled->flat<int64_t>().data();
    // The count outputs hold log q until the number of tries is known.
    request.sampled_log_q = sampled_count->flat<float>().data();
    request.true_log_q = true_count->flat<float>().data();
    int64_t num_tries = num_sampled_;
    OP_REQUIRES_OK(ctx, family_.SampleShared(ctx, in, request, &num_tries));
    LogQToExpectedCounts(request.sampled_log_q, num_sampled_, num_sampled_, num_tries);
    LogQToExpectedCounts(request.true_log_q, batch * num_true_, num_sampled_, num_tries);
  }

 private:
  Family family_;
  int64_t num_true_, num_sampled_, range_max_;
  bool unique_;
  SampleStream stream_;
};

// Registers the three CPU kernels of a family whose ops are named
// TfSampled>{prefix}Sample, {prefix}LogProb and {prefix}CandidateSampler.
#define TF_SAMPLED_REGISTER_SAMPLER_KERNELS(prefix, Family)                          \
  REGISTER_KERNEL_BUILDER(                                                           \
      Name("TfSampled>" prefix "Sample").Device(::tensorflow::DEVICE_CPU),           \
      ::tf_sampled::SampleOp<Family>);                                               \
  REGISTER_KERNEL_BUILDER(                                                           \
      Name("TfSampled>" prefix "LogProb").Device(::tensorflow::DEVICE_CPU),          \
      ::tf_sampled::LogProbOp<Family>);                                              \
  REGISTER_KERNEL_BUILDER(                                                           \
      Name("TfSampled>" prefix "CandidateSampler").Device(::tensorflow::DEVICE_CPU), \
      ::tf_sampled::CandidateSamplerOp<Family>)

}  // namespace tf_sampled

#endif  // TF_SAMPLED_KERNELS_SAMPLER_OPS_H_
