"""The fuzz's calls to the auxiliary-tree (AdversarialSampler) ops (run by
child_scripts.fuzz; tests/test_adversarial_bad_input.py)."""
import numpy as np

from child_scripts.fuzz_args import HUGE_COUNTS, FuzzArgs, fuzz_counter

HUGE = list(HUGE_COUNTS)


class Fuzz(FuzzArgs):
    """Calls on a small random tree (setup) and its data; see child_scripts.fuzz."""

    OPS = [(name, f"tf_sampled_adversarial_tree_{name}")
           for name in ("fit", "sample", "log_prob", "candidate_sampler")]
    PROBABILITIES = [0.05, 0.15, 0.3]
    DESCRIBE_VALUES = False

    def __init__(self, rng, lib):
        super().__init__(rng, bad_ints=[-1, 2**31 - 1, -(2**31), 7, 10**6, 2**62])
        self.lib = lib

    def setup(self):
        rng = self.rng
        c, k = int(rng.integers(2, 12)), int(rng.integers(1, 4))
        n = c + int(rng.integers(0, 20))
        x = rng.standard_normal((n, k)).astype(np.float32)
        y = rng.integers(0, c, n).astype(np.int64)
        params, leaf_of_class, class_of_leaf = (
            t.numpy() for t in self.lib.tf_sampled_adversarial_tree_fit(
                features=x, labels=y, num_classes=c))
        return dict(c=c, k=k, x=x, y=y, params=params, leaf_of_class=leaf_of_class,
                    class_of_leaf=class_of_leaf,
                    inputs=rng.standard_normal((int(rng.integers(0, 4)), k)).astype(np.float32))

    def tree(self, s, p):
        maybe = self.maybe
        return dict(params=maybe(p, s["params"]), class_of_leaf=maybe(p, s["class_of_leaf"]),
                    leaf_of_class=maybe(p, s["leaf_of_class"]), inputs=maybe(p, s["inputs"]))

    def call_fit(self, s, p):
        pick, chance = self.pick, self.chance
        return dict(features=self.maybe(p, s["x"]), labels=self.maybe(p, s["y"]),
                    num_classes=pick([0, 1, -1, s["c"] + 1, len(s["y"]) + 1] + HUGE)
                    if chance(p) else s["c"],
                    num_iterations=pick([0, -1, 1, 3]) if chance(p) else 2,
                    newton_steps=pick([0, -2, 1, 4]) if chance(p) else 2,
                    l2=pick([0.0, -1.0, float("nan"), float("inf"), 1e-30]) if chance(p)
                    else 0.1)

    def call_sample(self, s, p):
        b = len(s["inputs"])
        return dict(true_classes=self.ids([b, int(self.rng.integers(0, 3))], s["c"], p),
                    counter=fuzz_counter(self.rng, p), num_sampled=self.count_attr(p),
                    **self.tree(s, p), **self.seeds())

    def call_log_prob(self, s, p):
        b = len(s["inputs"])
        return dict(classes=self.ids([b, int(self.rng.integers(0, 3))], s["c"], p),
                    **self.tree(s, p))

    def call_candidate_sampler(self, s, p):
        counts = self.candidate_counts(s["c"], p)
        return dict(**self.candidate_args(len(s["inputs"]), s["c"], p, *counts),
                    **self.tree(s, p), **self.seeds())
