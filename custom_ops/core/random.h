// A small, fast, seedable generator for the framework-free core. The TensorFlow
// layer derives one 64-bit seed per query from the op's Philox stream, so
// results do not depend on how queries are split over threads.
#ifndef TF_SAMPLED_CORE_RANDOM_H_
#define TF_SAMPLED_CORE_RANDOM_H_

#include <cstdint>

namespace tf_sampled {

// xoshiro256** seeded through splitmix64.
class Random {
 public:
  explicit Random(uint64_t seed) {
    for (uint64_t& s : state_) {
      seed += 0x9e3779b97f4a7c15ULL;
      uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
      s = z ^ (z >> 31);
    }
  }

  uint64_t Next() {
    const uint64_t result = Rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = Rotl(state_[3], 45);
    return result;
  }

  // Uniform in [0, 1) with 53 random bits.
  double Uniform() { return double(Next() >> 11) * (1.0 / 9007199254740992.0); }

  // Uniform integer in [0, n), n > 0 (Lemire's multiply-shift; the bias is
  // below 2^-32 for the n used here).
  uint64_t Below(uint64_t n) {
    return uint64_t((static_cast<unsigned __int128>(Next()) * n) >> 64);
  }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t state_[4];
};

}  // namespace tf_sampled

#endif  // TF_SAMPLED_CORE_RANDOM_H_
