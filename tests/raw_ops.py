"""The raw ops with array arguments for the variables they read in place.

The sampling ops take nodes, embeddings and biases as variable handles (the
LSH ops: buckets, counts, codes and embeddings), the resource form of the
fused loss its weights and biases, the sparse optimizer steps the variable
and its slots; tests that feed arbitrary (also
malformed) arrays wrap each in a fresh variable.
"""
import numpy as np
import tensorflow as tf

# Ops (by their wrapper's name) that read variables in place, and which of
# their arguments are variable handles.
_HANDLE_ARGS = {
    "tf_sampled_kernel_tree_sample": ("nodes", "embeddings", "biases"),
    "tf_sampled_kernel_tree_log_prob": ("nodes", "embeddings", "biases"),
    "tf_sampled_kernel_tree_candidate_sampler": ("nodes", "embeddings", "biases"),
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
