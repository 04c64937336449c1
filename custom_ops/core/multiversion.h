// Hot loops are compiled twice, for x86-64-v3 (AVX2 + FMA: Haswell, 2013, and
// later) and for the baseline, and the dynamic loader picks one per CPU
// (GCC function multiversioning, an ifunc): the library stays loadable on any
// CPU TensorFlow runs on, while the dot products run 8 floats wide with FMA.
// TensorFlow's own flags target the baseline only.
#ifndef TF_SAMPLED_CORE_MULTIVERSION_H_
#define TF_SAMPLED_CORE_MULTIVERSION_H_

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    defined(__linux__)
#define TF_SAMPLED_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define TF_SAMPLED_MULTIVERSION
#endif

#endif  // TF_SAMPLED_CORE_MULTIVERSION_H_
