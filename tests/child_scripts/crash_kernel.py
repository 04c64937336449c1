"""Crash cases of the kernel-tree ops (child_scripts.crash;
tests/test_bad_input.py runs each in its own interpreter)."""
from types import SimpleNamespace

import numpy as np
import tensorflow as tf

import tf_sampled as tfs
from raw_ops import RawOps, clean


def setup():
    """A small table, projections, queries and `ops`."""
    rng = np.random.default_rng(0)
    return SimpleNamespace(
        ops=RawOps(tfs.load_ops()),
        emb=rng.standard_normal((5, 3)).astype(np.float32),
        omega=rng.standard_normal((4, 3)).astype(np.float32),
        x=rng.standard_normal((2, 3)).astype(np.float32),
        no_biases=np.zeros([0], np.float32),
        attrs=dict(feature_map="positive_random"))


# leaf_size > num_classes is legal (one leaf). (num_classes + leaf_size - 1)
# overflows in TreeShape::NumLeaves: for 2 classes, -1 leaves and a CHECK
# failure in TensorShape({-2, F}) (SIGABRT); for >= 3 classes, 0 leaves, an
# empty [0, F] output, and the build writes row 0 of it (SIGSEGV).
def case_build_leaf_size_int64_max(env):
    clean(lambda: env.ops.tf_sampled_kernel_tree_build(
        rows=env.emb[:2], omega=env.omega, leaf_size=2**63 - 1, **env.attrs), "leaf_size")


# KernelTree::InitState sizes two buffers by leaf_size, not by the classes
# in a leaf: std::bad_alloc escapes the op (std::terminate in the thread
# pool: SIGABRT).
def case_sample_huge_leaf_size_python_api(env):
    sampler = clean(lambda: tfs.samplers.KernelSampler(
        tf.constant(env.emb), feature_map=tfs.features.PositiveRandom(4, seed=0),
        leaf_size=2**50), "leaf_size")
    if sampler is not None:
        out = clean(lambda: sampler.sample(env.x, 3, true_classes=[[0], [1]]), "leaf_size")
        if out is not None:
            assert np.all((out.ids.numpy() >= 0) & (out.ids.numpy() < 5))


def _nodes(env, leaf_size):
    return env.ops.tf_sampled_kernel_tree_build(rows=env.emb, omega=env.omega,
                                                leaf_size=leaf_size, **env.attrs)


# (One leaf holds all 5 classes for any leaf_size >= 5: same nodes.)
def case_log_prob_huge_leaf_size(env):
    nodes = _nodes(env, leaf_size=5)
    clean(lambda: env.ops.tf_sampled_kernel_tree_log_prob(
        nodes=nodes, embeddings=env.emb, biases=env.no_biases, omega=env.omega, inputs=env.x,
        classes=[[0], [4]], leaf_size=2**50, **env.attrs), "leaf_size")


# Same cause; here the bad_alloc reaches pybind11 without the GIL (SIGSEGV).
def case_candidate_sampler_huge_leaf_size(env):
    nodes = _nodes(env, leaf_size=5)
    clean(lambda: env.ops.tf_sampled_kernel_tree_candidate_sampler(
        nodes=nodes, embeddings=env.emb, biases=env.no_biases, omega=env.omega, inputs=env.x,
        true_classes=[[0], [4]], counter=0, num_true=1, num_sampled=2, unique=True,
        range_max=5, leaf_size=2**50, **env.attrs), "leaf_size")


# TensorShape({batch, num_sampled}) CHECK-fails on the int64 overflow of
# 2 * 2**62 elements (SIGABRT) instead of returning a Status.
def case_sample_num_sampled_overflow_python_api(env):
    sampler = tfs.samplers.KernelSampler(
        tf.constant(env.emb), feature_map=tfs.features.PositiveRandom(4, seed=0), leaf_size=2)
    clean(lambda: sampler.sample(env.x, 2**62), "num_sampled", "OOM", "overflow")


# std::vector<int64_t>(num_sampled) in Compute: bad_alloc instead of an
# allocate_output ResourceExhausted / InvalidArgument (SIGSEGV).
def case_candidate_sampler_huge_num_sampled(env):
    nodes = _nodes(env, leaf_size=2)
    clean(lambda: env.ops.tf_sampled_kernel_tree_candidate_sampler(
        nodes=nodes, embeddings=env.emb, biases=env.no_biases, omega=env.omega, inputs=env.x,
        true_classes=[[0], [4]], counter=0, num_true=1, num_sampled=2**50, unique=False,
        range_max=5, leaf_size=2, **env.attrs), "num_sampled", "OOM", "allocat")
