"""The raw ops with array arguments for the variables they read in place.

The sampling ops take nodes, embeddings and biases as variable handles (the
in-place refresh also the row snapshot; the
LSH ops: buckets, counts, codes and embeddings), the resource form of the
fused loss its weights and biases, the sparse optimizer steps the variable
and its slots; tests that feed arbitrary (also
malformed) arrays wrap each in a fresh variable.
"""
import textwrap

import numpy as np
import tensorflow as tf

# Ops (by their wrapper's name) that read variables in place, and which of
# their arguments are variable handles.
_HANDLE_ARGS = {
    "tf_sampled_kernel_tree_sample": ("nodes", "embeddings", "biases"),
    "tf_sampled_kernel_tree_log_prob": ("nodes", "embeddings", "biases"),
    "tf_sampled_kernel_tree_candidate_sampler": ("nodes", "embeddings", "biases"),
    "tf_sampled_kernel_tree_refresh_rows": ("nodes", "rows", "embeddings", "biases"),
    "tf_sampled_resource_sampled_softmax_loss": ("weights", "biases"),
    "tf_sampled_sparse_apply_sgd": ("var",),
    "tf_sampled_sparse_apply_lazy_adam": ("var", "m", "v"),
    "tf_sampled_sparse_apply_adagrad": ("var", "accumulator"),
}
# Every LSH op: whichever of these it takes.
_LSH_HANDLE_ARGS = ("buckets", "counts", "codes", "embeddings")


def _as_handle(value):
    if isinstance(value, tf.Variable):
        return value.handle
    if isinstance(value, tf.Tensor) and value.dtype == tf.resource:
        return value
    return tf.Variable(value, trainable=False).handle


class RawOps:
    """`tfs.load_ops()` whose sampling ops accept arrays for their variables."""

    def __init__(self, library):
        self._library = library

    def __getattr__(self, name):
        fn = getattr(self._library, name)
        handle_args = _HANDLE_ARGS.get(name) or (
            _LSH_HANDLE_ARGS if name.startswith("tf_sampled_lsh_") else None)
        if handle_args is None:
            return fn

        def call(**kwargs):
            for key in handle_args:
                if key in kwargs:
                    kwargs[key] = _as_handle(kwargs[key])
            return fn(**kwargs)
        return call


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
    """The random choices of a raw-op fuzz script, drawn from one generator.

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


def clean(fn, *names):
    """fn()'s result, or None after an error naming one of `names`; prints a
    CLEAN line either way (crash scripts count them). Anything else raises."""
    try:
        out = fn()
    except (tf.errors.OpError, ValueError) as error:
        message = str(error)
        assert not names or any(n in message for n in names), message
        print("CLEAN error:", type(error).__name__, message.splitlines()[0][-200:])
    else:
        print("CLEAN ok:", [getattr(t, "shape", type(t).__name__)
                            for t in tf.nest.flatten(out)])
        return out


# The start of a child-process script over the kernel-tree ops (child_process):
# a small table, projections, queries and `ops`.
KERNEL_PRELUDE = textwrap.dedent("""
    import numpy as np, tensorflow as tf, tf_sampled as tfs
    from raw_ops import RawOps, clean
    ops = RawOps(tfs.load_ops())
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((5, 3)).astype(np.float32)
    omega = rng.standard_normal((4, 3)).astype(np.float32)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    no_biases = np.zeros([0], np.float32)
    attrs = dict(feature_map="positive_random")
""")
