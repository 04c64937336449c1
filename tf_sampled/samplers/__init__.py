"""Samplers with one protocol: `sample`, `log_prob`, `candidate_sampler`, `refresh`."""
from tf_sampled.samplers.adversarial import AdversarialSampler
from tf_sampled.samplers.base import SampledCandidates, Sampler
from tf_sampled.samplers.builtin import LearnedUnigram, LogUniform, Uniform, Unigram
from tf_sampled.samplers.kernel import DEFAULT_LEAF_SIZE, KernelSampler
from tf_sampled.samplers.lsh import LSHSampler
from tf_sampled.samplers import registry
from tf_sampled.samplers.registry import get
from tf_sampled.samplers.stream import SampleStream
