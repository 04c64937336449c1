// Helpers shared by the sampling OpKernels of every sampler: the sample
// stream and per-query seeds, and TensorFlow's candidate-sampler contract
// (unique draws, expected counts).
#ifndef TF_SAMPLED_KERNELS_CANDIDATE_SAMPLING_H_
#define TF_SAMPLED_KERNELS_CANDIDATE_SAMPLING_H_

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "custom_ops/kernels/common.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/lib/random/philox_random.h"

namespace tf_sampled {

// The random stream of a sampling op: a call's draws are a function of the
// seed attributes and the call's `counter` input alone, not of a state kept
// in the kernel instance. The caller (a sampler) keeps the counter in a
// checkpointed variable and increments it per call, so a restored model, a
// new process or another replica with the same seed and counter draws the
// same samples. seed = seed2 = 0 is a seed like any other (deterministic).
class SampleStream {
 public:
  // Reads the seed and seed2 attributes.
  absl::Status Init(OpKernelConstruction* ctx) {
    int64_t seed, seed2;
    TF_RETURN_IF_ERROR(ctx->GetAttr("seed", &seed));
    TF_RETURN_IF_ERROR(ctx->GetAttr("seed2", &seed2));
    // One Philox output of (seed, seed2) as the key: every bit of both seeds
    // reaches the key, which a plain truncation to 64 bits would not give.
    ::tensorflow::random::PhiloxRandom mix(static_cast<uint64_t>(seed),
                                           static_cast<uint64_t>(seed2));
    const auto out = mix();
    key_[0] = out[0] ^ out[2];
    key_[1] = out[1] ^ out[3];
    return absl::OkStatus();
  }

  // The Philox block of this call, from the op's scalar int64 `counter`
  // input (>= 0, in host memory): the counter fills the high 64 bits of the
  // Philox counter, and QuerySeed(block, i) skips i in the low 64 bits, so
  // the streams of distinct (counter, query) pairs never overlap.
  absl::Status CallBlock(OpKernelContext* ctx,
                         ::tensorflow::random::PhiloxRandom* block) const {
    const Tensor* counter_t;
    TF_RETURN_IF_ERROR(ctx->input("counter", &counter_t));
    TF_RETURN_IF_ERROR(CheckRank(*counter_t, 0, "counter"));
    const int64_t counter = counter_t->scalar<int64_t>()();
    if (counter < 0) {
      return errors::InvalidArgument("counter must be >= 0, got ", counter);
    }
    ::tensorflow::random::PhiloxRandom::ResultType position;
    position[0] = 0;
    position[1] = 0;
    position[2] = static_cast<uint32_t>(counter);
    position[3] = static_cast<uint32_t>(static_cast<uint64_t>(counter) >> 32);
    *block = ::tensorflow::random::PhiloxRandom(position, key_);
    return absl::OkStatus();
  }

 private:
  ::tensorflow::random::PhiloxRandom::Key key_;
};

// A 64-bit seed for query `index`, from the call's Philox block
// (SampleStream::CallBlock): each query gets its own stream whatever the
// sharding.
inline uint64_t QuerySeed(const ::tensorflow::random::PhiloxRandom& block,
                          int64_t index) {
  ::tensorflow::random::PhiloxRandom gen = block;
  gen.Skip(index);
  const auto out = gen();
  return (uint64_t(out[0]) << 32 | out[1]) ^
         ((uint64_t(out[2]) << 32 | out[3]) * 0x9e3779b97f4a7c15ULL);
}

// TensorFlow's expected count (range_sampler.cc): num_sampled * q without
// unique (num_tries == num_sampled), 1 - (1 - q)^num_tries with it.
inline float ExpectedCount(float log_q, int64_t num_sampled, int64_t num_tries) {
  const double q = std::exp(double(log_q));
  if (num_tries == num_sampled) return static_cast<float>(q * num_sampled);
  return static_cast<float>(-std::expm1(num_tries * std::log1p(-q)));
}

// Turns log q [n] into expected counts in place.
inline void LogQToExpectedCounts(float* values, int64_t n, int64_t num_sampled,
                                 int64_t num_tries) {
  for (int64_t i = 0; i < n; ++i) {
    values[i] = ExpectedCount(values[i], num_sampled, num_tries);
  }
}

// Allocates a per-example sampling op's outputs 0-2: ids and log_q
// [batch, num_sampled], true_log_q [batch, num_true], after checking that
// batch * num_sampled fits in int64 (TensorShape would CHECK-fail).
inline absl::Status AllocatePerExampleOutputs(::tensorflow::OpKernelContext* ctx,
                                              int64_t batch, int64_t num_sampled,
                                              int64_t num_true, ::tensorflow::Tensor** ids,
                                              ::tensorflow::Tensor** log_q,
                                              ::tensorflow::Tensor** true_log_q) {
  if (batch > 0 && num_sampled > std::numeric_limits<int64_t>::max() / batch) {
    return ::tensorflow::errors::InvalidArgument("num_sampled (", num_sampled,
                                                 ") times the batch (", batch,
                                                 ") overflows int64");
  }
  using ::tensorflow::TensorShape;
  TF_RETURN_IF_ERROR(ctx->allocate_output(0, TensorShape({batch, num_sampled}), ids));
  TF_RETURN_IF_ERROR(ctx->allocate_output(1, TensorShape({batch, num_sampled}), log_q));
  return ctx->allocate_output(2, TensorShape({batch, num_true}), true_log_q);
}

// Allocates a batch-shared candidate sampler's outputs 0-2 (TensorFlow's
// triple): sampled_candidates [num_sampled], true_expected_count
// [batch, num_true], sampled_expected_count [num_sampled].
inline absl::Status AllocateCandidateOutputs(::tensorflow::OpKernelContext* ctx,
                                             int64_t batch, int64_t num_sampled,
                                             int64_t num_true, ::tensorflow::Tensor** sampled,
                                             ::tensorflow::Tensor** true_count,
                                             ::tensorflow::Tensor** sampled_count) {
  using ::tensorflow::TensorShape;
  TF_RETURN_IF_ERROR(ctx->allocate_output(0, TensorShape({num_sampled}), sampled));
  TF_RETURN_IF_ERROR(ctx->allocate_output(1, TensorShape({batch, num_true}), true_count));
  return ctx->allocate_output(2, TensorShape({num_sampled}), sampled_count);
}

// Draws iid until num_sampled distinct classes are seen, as TensorFlow's
// unique samplers do; num_tries counts every draw up to the last new class.
// draw(n, ids, log_q) -> absl::Status fills n iid draws in order. The cap on
// draws turns a proposal with almost all mass on few classes into an error
// instead of a hang.
template <typename DrawFn>
absl::Status SampleUnique(int64_t num_sampled, int64_t range_max, DrawFn&& draw,
                          int64_t* sampled, float* sampled_log_q,
                          int64_t* num_tries) {
  absl::flat_hash_set<int64_t> seen;
  std::vector<int64_t> chunk_ids;
  std::vector<float> chunk_log_q;
  int64_t tries = 0;
  const int64_t max_tries = 1000 * num_sampled + 100 * range_max;
  while (static_cast<int64_t>(seen.size()) < num_sampled) {
    if (tries > max_tries) {
      return ::tensorflow::errors::InvalidArgument(
          "Could not find num_sampled=", num_sampled, " distinct classes in ",
          tries, " draws (unique=True); lower num_sampled (range_max=",
          range_max, ")");
    }
    const int64_t chunk = 2 * (num_sampled - seen.size()) + 8;
    chunk_ids.resize(chunk);
    chunk_log_q.resize(chunk);
    TF_RETURN_IF_ERROR(draw(chunk, chunk_ids.data(), chunk_log_q.data()));
    for (int64_t i = 0;
         i < chunk && static_cast<int64_t>(seen.size()) < num_sampled; ++i) {
      ++tries;
      if (seen.insert(chunk_ids[i]).second) {
        sampled[seen.size() - 1] = chunk_ids[i];
        sampled_log_q[seen.size() - 1] = chunk_log_q[i];
      }
    }
  }
  *num_tries = tries;
  return absl::OkStatus();
}

// A batch-shared sampler's candidates: SampleUnique with `unique`, else
// num_sampled iid draws (num_tries = num_sampled).
template <typename DrawFn>
absl::Status SampleCandidates(bool unique, int64_t num_sampled, int64_t range_max,
                              DrawFn&& draw, int64_t* sampled, float* sampled_log_q,
                              int64_t* num_tries) {
  *num_tries = num_sampled;
  if (unique) {
    return SampleUnique(num_sampled, range_max, draw, sampled, sampled_log_q, num_tries);
  }
  return draw(num_sampled, sampled, sampled_log_q);
}

}  // namespace tf_sampled

#endif  // TF_SAMPLED_KERNELS_CANDIDATE_SAMPLING_H_
