"""The raw ops with array arguments for the variables they read in place.

The sampling ops take nodes, embeddings and biases as variable handles (the
LSH ops: buckets, counts, codes and embeddings), the resource form of the
fused loss its weights and biases; tests that feed arbitrary (also
malformed) arrays wrap each in a fresh variable.
"""
import tensorflow as tf

# Ops (by their wrapper's name) that read variables in place, and which of
# their arguments are variable handles.
_HANDLE_ARGS = {
    "tf_sampled_kernel_tree_sample": ("nodes", "embeddings", "biases"),
    "tf_sampled_kernel_tree_log_prob": ("nodes", "embeddings", "biases"),
    "tf_sampled_kernel_tree_candidate_sampler": ("nodes", "embeddings", "biases"),
    "tf_sampled_resource_sampled_softmax_loss": ("weights", "biases"),
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
