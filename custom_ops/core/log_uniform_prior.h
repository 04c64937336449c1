// TensorFlow's log-uniform (Zipfian) distribution and the defensive mixture
// a p_lu + (1 - a) q_tree that the kernel-tree sampling ops draw from with
// prior_weight a > 0. Framework-free.
#ifndef TF_SAMPLED_CORE_LOG_UNIFORM_PRIOR_H_
#define TF_SAMPLED_CORE_LOG_UNIFORM_PRIOR_H_

#include <cmath>
#include <cstdint>

#include "custom_ops/core/random.h"

namespace tf_sampled {

// p(i) = log((i + 2) / (i + 1)) / log(range_max + 1) over [0, range_max)
// (LogUniformSampler, range_sampler.cc), drawn by inverse CDF.
class LogUniformPrior {
 public:
  explicit LogUniformPrior(int64_t range_max)
      : range_max_(range_max), log_range_(std::log1p(double(range_max))) {}

  // floor(exp(u log(range_max + 1))) - 1 for u uniform in [0, 1), reduced
  // mod range_max as TensorFlow does (only a roundoff reaches range_max).
  int64_t Sample(Random* rng) const {
    const int64_t value =
        static_cast<int64_t>(std::exp(rng->Uniform() * log_range_)) - 1;
    return value % range_max_;
  }

  double Prob(int64_t id) const {
    return std::log((id + 2.0) / (id + 1.0)) / log_range_;
  }

 private:
  int64_t range_max_;
  double log_range_;
};

// log(a p_prior + (1 - a) q_tree) from log q_tree; exactly log p_prior for a = 1.
inline float MixtureLogQ(double a, double p_prior, float log_q_tree) {
  if (a >= 1.0) return static_cast<float>(std::log(p_prior));
  return static_cast<float>(
      std::log(a * p_prior + (1.0 - a) * std::exp(double(log_q_tree))));
}

// How many of n draws come from the prior: Binomial(n, a) by n uniforms
// (none are consumed for a = 0, so a caller's stream is unchanged there).
inline int64_t NumPriorDraws(double a, int64_t n, Random* rng) {
  if (a <= 0.0) return 0;
  int64_t count = 0;
  for (int64_t k = 0; k < n; ++k) count += rng->Uniform() < a;
  return count;
}

}  // namespace tf_sampled

#endif  // TF_SAMPLED_CORE_LOG_UNIFORM_PRIOR_H_
