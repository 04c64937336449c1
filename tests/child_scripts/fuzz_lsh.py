"""The fuzz's calls to the LSH ops (run by child_scripts.fuzz;
tests/test_lsh_bad_input.py)."""
import numpy as np

from child_scripts.fuzz_args import HUGE_COUNTS, FuzzArgs, fuzz_counter

HUGE = list(HUGE_COUNTS)


class Fuzz(FuzzArgs):
    """Calls on a small random table (setup) and its LSH tables; see child_scripts.fuzz."""

    OPS = [(name, f"tf_sampled_lsh_{name}")
           for name in ("build", "update", "sample", "log_prob", "candidate_sampler")]
    PROBABILITIES = [0.05, 0.15, 0.3]
    DESCRIBE_VALUES = False

    def __init__(self, rng, lib):
        super().__init__(rng, bad_ints=[-1, 2**31 - 1, -(2**31), 7, 10**6])
        self.lib = lib

    def setup(self):
        rng, pick = self.rng, self.pick
        c, d = int(rng.integers(1, 12)), int(rng.integers(1, 5))
        family = pick(["simhash", "dwta"])
        bin_size = pick([2, 4])
        L, K = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        bs = int(rng.integers(1, 5))
        emb = rng.standard_normal((c, d)).astype(np.float32)
        params = (rng.standard_normal((L * K, d)) if family == "simhash"
                  else rng.integers(0, d, size=(L * K, bin_size))).astype(np.float32)
        attrs = dict(family=family, num_tables=L, num_hashes=K, bin_size=bin_size)
        buckets, counts, codes = (t.numpy() for t in self.lib.tf_sampled_lsh_build(
            embeddings=emb, hash_params=params, bucket_size=bs, **attrs))
        return dict(c=c, d=d, emb=emb, params=params, attrs=attrs, bs=bs, buckets=buckets,
                    counts=counts, codes=codes,
                    queries=rng.standard_normal((int(rng.integers(0, 4)), d)).astype(np.float32))

    def attrs(self, s, p):
        a = dict(s["attrs"])
        if self.chance(p):
            key = self.pick(["num_tables", "num_hashes", "bin_size"])
            a[key] = self.pick([0, -1, a[key] + 1, 31, 3] + HUGE)
        return a

    def tables(self, s, p):
        maybe = self.maybe
        return dict(buckets=maybe(p, s["buckets"]), counts=maybe(p, s["counts"]),
                    codes=maybe(p, s["codes"]), hash_params=maybe(p, s["params"]))

    def call_build(self, s, p):
        return dict(embeddings=self.maybe(p, s["emb"]), hash_params=self.maybe(p, s["params"]),
                    bucket_size=self.count_attr(p), **self.seeds(), **self.attrs(s, p))

    def call_update(self, s, p):
        return dict(embeddings=self.maybe(p, s["emb"]),
                    ids=self.ids([int(self.rng.integers(0, 4))], s["c"], p),
                    **self.tables(s, p), **self.seeds(), **self.attrs(s, p))

    def call_sample(self, s, p):
        b = len(s["queries"])
        return dict(queries=self.maybe(p, s["queries"]),
                    true_classes=self.ids([b, int(self.rng.integers(0, 3))], s["c"], p),
                    counter=fuzz_counter(self.rng, p), num_sampled=self.count_attr(p),
                    epsilon=self.pick([0.05, 1.0, 0.0, -1.0, 2.0]) if self.chance(p) else 0.1,
                    **self.tables(s, p), **self.seeds(), **self.attrs(s, p))

    def call_log_prob(self, s, p):
        b = len(s["queries"])
        return dict(queries=self.maybe(p, s["queries"]),
                    classes=self.ids([b, int(self.rng.integers(0, 3))], s["c"], p),
                    **self.tables(s, p), **self.attrs(s, p))

    def call_candidate_sampler(self, s, p):
        counts = self.candidate_counts(s["c"], p)
        return dict(queries=self.maybe(p, s["queries"]),
                    **self.candidate_args(len(s["queries"]), s["c"], p, *counts),
                    **self.tables(s, p), **self.seeds(), **self.attrs(s, p))
