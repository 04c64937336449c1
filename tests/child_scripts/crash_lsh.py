"""Crash cases of the LSH ops: overflow and huge sizes (child_scripts.crash;
tests/test_lsh_bad_input.py runs them all in one interpreter)."""
from types import SimpleNamespace

import numpy as np

import tf_sampled as tfs
from raw_ops import RawOps, clean


def setup():
    """`ops`, a small table and its LSH tables, and queries."""
    ops = RawOps(tfs.load_ops())
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((5, 3)).astype(np.float32)
    params = rng.standard_normal((2, 3)).astype(np.float32)
    attrs = dict(family="simhash", num_tables=1, num_hashes=2)
    b, c, k = ops.tf_sampled_lsh_build(embeddings=emb, hash_params=params, bucket_size=2,
                                       **attrs)
    return SimpleNamespace(ops=ops, emb=emb,
                           tables=dict(buckets=b, counts=c, codes=k, hash_params=params,
                                       **attrs),
                           x=rng.standard_normal((2, 3)).astype(np.float32))


def case_sample_num_sampled_overflow(env):
    clean(lambda: env.ops.tf_sampled_lsh_sample(queries=env.x, true_classes=[[0], [1]],
          counter=0, num_sampled=2**62, **env.tables), "num_sampled", "overflow")


def case_candidate_sampler_huge_num_sampled(env):
    clean(lambda: env.ops.tf_sampled_lsh_candidate_sampler(
          queries=env.x, true_classes=[[0], [1]], counter=0, num_true=1, num_sampled=2**50,
          unique=False, range_max=5, **env.tables), "num_sampled", "OOM", "allocat")


def case_build_huge_tables(env):
    clean(lambda: env.ops.tf_sampled_lsh_build(embeddings=env.emb, hash_params=np.zeros(
          [2**16, 3], np.float32), family="simhash", num_tables=2**16, num_hashes=1,
          bucket_size=2**40), "bucket slots")


def case_num_tables_int64_max(env):
    clean(lambda: env.ops.tf_sampled_lsh_log_prob(queries=env.x, classes=[[0], [1]],
          **dict(env.tables, num_tables=2**63 - 1)), "num_tables")
