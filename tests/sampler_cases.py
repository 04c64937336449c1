"""Every sampler of the package as a test case: how to build it, its queries
and its exact proposal (the oracle), for the contract suite
(test_sampler_contract.py) and the per-family test files.
"""
import dataclasses
import typing

import numpy as np
import tensorflow as tf

import lsh_oracles
import tf_sampled as tfs
from oracles import (adversarial_log_prob, builtin_probabilities, kernel_log_prob,
                     log_uniform_probabilities)

# --------------------------------------------------------------------------
# Kernel tree
# --------------------------------------------------------------------------

KERNEL_CLASSES, KERNEL_DIM = 1000, 8
KERNEL_MAPS = {
    "quadratic": lambda: tfs.features.Quadratic(alpha=2.0),
    "fourier": lambda: tfs.features.RandomFourier(num_features=64, temperature=2.0, seed=3),
    "positive": lambda: tfs.features.PositiveRandom(num_features=64, seed=4),
    "moments": lambda: tfs.features.GaussianMoments(temperature=0.7),
}


def kernel_table(seed=0, biases=True):
    """W [C, d] (and b [C], or None) as numpy float32 arrays."""
    rng = np.random.RandomState(seed)
    w = rng.normal(size=(KERNEL_CLASSES, KERNEL_DIM)).astype(np.float32) * 0.5
    b = -np.log1p(np.arange(KERNEL_CLASSES)).astype(np.float32) * 0.5 if biases else None
    return w, b


def kernel_sampler(fmap, biases=True, leaf_size=16, seed=0, prior_weight=0.0):
    """A KernelSampler over variables W (and b) of `kernel_table(seed, biases)`."""
    w, b = kernel_table(seed, biases)
    return tfs.samplers.KernelSampler(tf.Variable(w), feature_map=fmap, leaf_size=leaf_size,
                                      biases=None if b is None else tf.Variable(b),
                                      prior_weight=prior_weight)


def kernel_mixture_log_prob(sampler, h):
    """log(a p_lu + (1 - a) q_tree) [batch, C] of a KernelSampler with prior_weight a."""
    a = sampler.prior_weight
    q_tree = np.exp(kernel_log_prob(sampler, h))
    return np.log(a * log_uniform_probabilities(sampler.num_classes) + (1 - a) * q_tree)


def kernel_queries(batch=3, seed=1):
    return np.random.RandomState(seed).normal(size=(batch, KERNEL_DIM)).astype(np.float32)


# --------------------------------------------------------------------------
# LSH
# --------------------------------------------------------------------------

LSH_CLASSES, LSH_DIM = 300, 8
# 16 buckets per table for ~19 classes each: bucket_size 12 makes some overflow.
LSH_CONFIGS = {
    "simhash": dict(family="simhash", num_hashes=4),
    "dwta": dict(family="dwta", num_hashes=2, bin_size=4),
}


def lsh_sampler(family="simhash", query="embedding", seed=0, bucket_size=12, num_tables=6,
                table=None, **kwargs):
    """An LSHSampler over a random N(0, 1) table (or `table`), seeded by `seed`."""
    if table is None:
        rng = np.random.RandomState(seed)
        table = tf.Variable(rng.normal(size=(LSH_CLASSES, LSH_DIM)).astype(np.float32))
    config = dict(LSH_CONFIGS[family], **kwargs)
    return tfs.samplers.LSHSampler(table, num_tables=num_tables, bucket_size=bucket_size,
                                   query=query, epsilon=0.1, seed=seed + 1, **config)


def lsh_inputs_and_truth(batch=3, seed=1):
    rng = np.random.RandomState(seed)
    h = rng.normal(size=(batch, LSH_DIM)).astype(np.float32)
    truth = rng.randint(0, LSH_CLASSES, size=(batch, 2))
    return h, truth


def lsh_reference(sampler, h, truth):
    """Oracle log q [batch, C] for the sampler's query vectors."""
    vectors = (np.asarray(tf.convert_to_tensor(sampler.embeddings))[truth[:, 0]]
               if sampler.query == "label" else h)
    codes, margins = lsh_oracles.codes(sampler, vectors)
    assert margins.min() > 1e-4, "ambiguous query hash: pick another seed"
    return lsh_oracles.log_prob(sampler, codes)


# --------------------------------------------------------------------------
# Adversarial (auxiliary tree)
# --------------------------------------------------------------------------

def adversarial_sampler(num_classes, k=3, dim=5, seed=0, scale=1.0):
    """A tree with random node regressions and a random class-to-leaf map."""
    rng = np.random.default_rng(seed)
    leaf_of_class = rng.permutation(num_classes)
    return tfs.samplers.AdversarialSampler(
        rng.normal(size=dim), rng.normal(size=(dim, k)),
        scale * rng.normal(size=(num_classes, k + 1)), leaf_of_class, np.argsort(leaf_of_class))


def adversarial_queries(batch, dim=5, seed=1):
    return np.random.default_rng(seed).normal(size=(batch, dim)).astype(np.float32)


# --------------------------------------------------------------------------
# TensorFlow's built-in samplers
# --------------------------------------------------------------------------

BUILTIN_CLASSES = 300
BUILTIN_COUNTS = (np.random.RandomState(0).randint(0, 50, size=BUILTIN_CLASSES)
                  .astype(np.float64) + 1)
BUILTIN_DISTORTION = 0.75


def builtin_sampler(name):
    return {"uniform": lambda: tfs.samplers.Uniform(BUILTIN_CLASSES),
            "log_uniform": lambda: tfs.samplers.LogUniform(BUILTIN_CLASSES),
            "unigram": lambda: tfs.samplers.Unigram(BUILTIN_COUNTS,
                                                    distortion=BUILTIN_DISTORTION),
            "learned_unigram": lambda: tfs.samplers.LearnedUnigram(BUILTIN_CLASSES)}[name]()


BUILTIN_NAMES = ("uniform", "log_uniform", "unigram", "learned_unigram")


# --------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------

class ChiSquare(typing.NamedTuple):
    """One chi-square run: `batch` queries from input seed `input_seed`,
    `draws` per query with op seed `seed`."""
    batch: int
    input_seed: int
    draws: int
    seed: int


@dataclasses.dataclass(frozen=True)
class Case:
    """A sampler configuration of the contract suite.

    make(seed): a new sampler (seed 0: the case's configuration; another
      seed: the same configuration with other state, where it has any).
    inputs(batch, seed): (h [batch, dim] float32, truth [batch, 2] int).
    oracle(sampler, h, truth): [batch, C] float64 exact log q of the state.
    tolerance: (rtol, atol) of the op's log q against the oracle.
    chi_square: the frequency test (thresholds from stats.P_THRESHOLD).
    input_free: q does not depend on the inputs (draws of all rows pooled).
    needs_truth: sampling needs true_classes (LSH label queries).
    other_seed: the `make` seed of a sampler a checkpoint restores into
      (the LSH sampler needs its constructor seed: 0).
    learns: sampling changes the proposal (LearnedUnigram counts the true
      classes after each call).
    build(table, biases): the case's sampler over the given class table (and
      biases), for the samplers that take one.
    """
    family: str
    make: typing.Callable
    inputs: typing.Callable
    oracle: typing.Callable
    tolerance: tuple
    chi_square: ChiSquare
    input_free: bool = False
    needs_truth: bool = False
    other_seed: int = 1
    learns: bool = False
    build: typing.Callable = None

    def log_prob(self, sampler, h, classes, truth):
        """log_prob of the sampler (LSH label queries need the true classes)."""
        if self.family == "lsh":
            return sampler.log_prob(h, classes, true_classes=truth)
        return sampler.log_prob(h, classes)


def _kernel_case(name, biases, prior_weight=0.0):
    return Case(
        family="kernel",
        make=lambda seed=0: kernel_sampler(KERNEL_MAPS[name](), biases=biases, seed=seed,
                                           prior_weight=prior_weight),
        inputs=lambda batch, seed: (kernel_queries(batch, seed), np.random.RandomState(seed)
                                    .randint(0, KERNEL_CLASSES, size=(batch, 2))),
        oracle=lambda sampler, h, truth: kernel_mixture_log_prob(sampler, h),
        tolerance=(1e-4, 1e-4),
        chi_square=ChiSquare(batch=2, input_seed=7, draws=100_000, seed=21),
        build=lambda table, biases: tfs.samplers.KernelSampler(
            table, feature_map=KERNEL_MAPS[name](), leaf_size=16, biases=biases,
            prior_weight=prior_weight))


def _lsh_case(family, query):
    return Case(
        family="lsh",
        make=lambda seed=0: lsh_sampler(family, query, seed=seed),
        inputs=lambda batch, seed: lsh_inputs_and_truth(batch, seed),
        oracle=lsh_reference,
        tolerance=(1e-5, 1e-5),
        chi_square=ChiSquare(batch=2, input_seed=7, draws=100_000, seed=21),
        needs_truth=query == "label",
        other_seed=0,
        build=lambda table, biases: lsh_sampler(family, query, table=table))


def _adversarial_case():
    num_classes = 23
    return Case(
        family="adversarial",
        make=lambda seed=0: adversarial_sampler(num_classes, seed=9 + seed),
        inputs=lambda batch, seed: (adversarial_queries(batch, seed=seed),
                                    np.random.default_rng(seed).integers(
                                        0, num_classes, size=(batch, 2))),
        oracle=lambda sampler, h, truth: adversarial_log_prob(sampler, h),
        tolerance=(1e-5, 2e-5),  # (the projection runs in float32)
        chi_square=ChiSquare(batch=2, input_seed=10, draws=40_000, seed=11))


def _builtin_case(name):
    return Case(
        family="builtin",
        make=lambda seed=0: builtin_sampler(name),
        inputs=lambda batch, seed: (np.zeros([batch, 2], np.float32), np.random.RandomState(
            seed).randint(0, BUILTIN_CLASSES, size=(batch, 2))),
        oracle=lambda sampler, h, truth: np.tile(
            np.log(builtin_probabilities(
                name, BUILTIN_CLASSES, BUILTIN_COUNTS, BUILTIN_DISTORTION).astype(np.float64)),
            (len(h), 1)),
        tolerance=(1e-5, 1e-5),
        chi_square=ChiSquare(batch=4, input_seed=3, draws=50_000, seed=3),
        input_free=True,
        learns=name == "learned_unigram")


CASES = {f"kernel-{name}-{'bias' if biases else 'nobias'}": _kernel_case(name, biases)
         for name in KERNEL_MAPS for biases in (True, False)}
# The per-example defensive mixture a p_lu + (1 - a) q_tree.
CASES["kernel-positive-bias-prior50"] = _kernel_case("positive", True, prior_weight=0.5)
CASES["kernel-quadratic-nobias-prior10"] = _kernel_case("quadratic", False, prior_weight=0.1)
CASES.update({f"lsh-{family}-{query}": _lsh_case(family, query)
              for family in LSH_CONFIGS for query in ("embedding", "label")})
CASES["adversarial"] = _adversarial_case()
CASES.update({name: _builtin_case(name) for name in BUILTIN_NAMES})
