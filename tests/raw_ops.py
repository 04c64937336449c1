"""The raw ops with array arguments for the variables they read in place.

The sampling ops take nodes, embeddings and biases (the LSH ops: buckets,
counts, codes and embeddings) as variable handles; tests
that feed arbitrary (also malformed) arrays wrap each in a fresh variable.
"""
import tensorflow as tf

_HANDLE_ARGS = ("nodes", "embeddings", "biases", "buckets", "counts", "codes")


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
        reads_variables = name.startswith("tf_sampled_lsh_") or (
            name.startswith("tf_sampled_kernel_tree_") and not name.endswith(("build", "update")))
        if not reads_variables:
            return fn

        def call(**kwargs):
            for key in _HANDLE_ARGS:
                if key in kwargs:
                    kwargs[key] = _as_handle(kwargs[key])
            return fn(**kwargs)
        return call
