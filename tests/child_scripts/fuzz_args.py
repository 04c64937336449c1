"""The random choices of the raw-op fuzz programs (child_scripts.fuzz_*)."""
import numpy as np


# Malformed stream counters: negative, not a scalar, not int64.
_BAD_COUNTERS = (np.int64(-1), np.int64(-(2**63)), np.array([1, 2], np.int64),
                 np.zeros([0], np.int64), np.int32(3), np.float32(1.0))


def fuzz_counter(rng, p):
    """A sampling op's `counter` for a fuzz: with probability p a malformed
    one, else an int64 scalar >= 0 (up to the largest)."""
    if rng.random() < p:
        return _BAD_COUNTERS[int(rng.integers(len(_BAD_COUNTERS)))]
    good = [0, 1, int(rng.integers(0, 2**62)), 2**63 - 1]
    return np.int64(good[int(rng.integers(len(good)))])


# Sizes beyond any address space (an allocation must fail at once) or
# overflowing int64 products.
HUGE_COUNTS = (2**50, 2**62, 2**63 - 1)


class FuzzArgs:
    """The random choices of a raw-op fuzz (child_scripts.fuzz), from one generator.

    Args:
      rng: the script's `np.random.Generator` (its seed makes the calls).
      bad_ints: integer values that `mangle` may write into an integer array.
    """

    def __init__(self, rng, bad_ints):
        self.rng = rng
        self.bad_ints = list(bad_ints)

    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def chance(self, p):
        return self.rng.random() < p

    def mangle(self, value):
        """A malformed version of the array `value`: a dim changed, a bad
        value written, another dtype, or no rows."""
        value = np.asarray(value)
        how = self.pick(["shape", "values", "values", "dtype", "empty"])
        if how == "shape":
            shape = list(value.shape) or [1]
            i = int(self.rng.integers(len(shape)))
            shape[i] = self.pick([0, 1, shape[i] + 1, max(shape[i] - 1, 0)])
            if self.chance(0.2):
                shape.append(1)
            return np.zeros(shape, value.dtype) + (value.flat[0] if value.size else 0)
        if how == "values":
            value = value.copy()
            if value.size:
                bad = ([np.nan, np.inf, -3e38, 3e38, -1.0, 0.5] if value.dtype.kind == "f"
                       else self.bad_ints)
                value.flat[int(self.rng.integers(value.size))] = self.pick(bad)
            return value
        if how == "dtype":
            return value.astype(self.pick([np.float64, np.int64, np.int32, np.float32]))
        return np.zeros([0] + list(value.shape[1:]), value.dtype)

    def maybe(self, p, value):
        """`value`, or with probability p a mangled copy."""
        return self.mangle(value) if self.chance(p) else value

    def ids(self, shape, c, p):
        """int64 class ids in [0, c) of `shape`, sometimes mangled."""
        value = self.rng.integers(0, c, size=shape).astype(np.int64)
        return self.maybe(p, value) if self.chance(0.7) else value

    def count_attr(self, p):
        """A count attribute in [1, 6), or with probability p a bad one."""
        return self.pick([0, -1, *HUGE_COUNTS]) if self.chance(p) else int(
            self.rng.integers(1, 6))

    def seeds(self):
        """seed (sometimes negative) and seed2 attributes."""
        return dict(seed=int(self.rng.integers(-3, 100)), seed2=int(self.rng.integers(0, 100)))

    def candidate_counts(self, c, p):
        """num_true, unique and num_sampled of a candidate-sampler call on c
        classes (with unique, num_sampled at most c, or sometimes c + 1)."""
        num_true = int(self.rng.integers(1, 3))
        unique = bool(self.chance(0.5))
        num_sampled = self.count_attr(p)
        if unique and num_sampled < 2**31:
            num_sampled = min(num_sampled, c) if self.chance(0.8) else c + 1
        return num_true, unique, num_sampled

    def candidate_args(self, batch, c, p, num_true, unique, num_sampled):
        """true_classes, counter and the attributes of a candidate-sampler call
        (candidate_counts), with probability about p malformed."""
        return dict(true_classes=self.ids([batch, num_true], c, p),
                    counter=fuzz_counter(self.rng, p),
                    num_true=self.count_attr(p) if self.chance(p) else num_true,
                    num_sampled=num_sampled, unique=unique,
                    range_max=self.pick([c, c + 1, 0, 2**62]) if self.chance(p) else c)
