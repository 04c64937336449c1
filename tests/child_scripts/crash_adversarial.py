"""Crash cases of the auxiliary-tree ops: huge sizes (child_scripts.crash;
tests/test_adversarial_bad_input.py runs them all in one interpreter)."""
from types import SimpleNamespace

import numpy as np

import tf_sampled as tfs
from raw_ops import clean


def setup():
    """`ops`, a small fitted tree and its data."""
    ops = tfs.load_ops()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 2)).astype(np.float32)
    y = rng.integers(0, 5, 20)
    p, l, c = ops.tf_sampled_adversarial_tree_fit(features=x, labels=y, num_classes=5)
    return SimpleNamespace(ops=ops, x=x, y=y,
                           tree=dict(params=p, class_of_leaf=c, leaf_of_class=l, inputs=x[:2]))


def case_sample_num_sampled_overflow(env):
    clean(lambda: env.ops.tf_sampled_adversarial_tree_sample(
          true_classes=[[0], [1]], counter=0, num_sampled=2**62, **env.tree),
          "num_sampled", "overflow")


def case_candidate_sampler_huge_num_sampled(env):
    clean(lambda: env.ops.tf_sampled_adversarial_tree_candidate_sampler(
          true_classes=[[0], [1]], counter=0, num_true=1, num_sampled=2**50, unique=False,
          range_max=5, **env.tree), "num_sampled", "OOM", "allocat")


def case_fit_num_classes_huge(env):
    clean(lambda: env.ops.tf_sampled_adversarial_tree_fit(features=env.x, labels=env.y,
                                                          num_classes=2**62), "num_classes")
