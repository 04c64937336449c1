"""The raw ops with array arguments for the variables they read in place.

The sampling ops take nodes, embeddings and biases as variable handles, the
resource form of the fused loss its weights and biases; tests that feed
arbitrary (also malformed) arrays wrap each in a fresh variable.
"""
import tensorflow as tf

# Ops (by prefix of their wrapper's name) that read variables in place, and
# which of their arguments are variable handles.
_HANDLE_ARGS = {
    "tf_sampled_kernel_tree_sample": ("nodes", "embeddings", "biases"),
    "tf_sampled_kernel_tree_log_prob": ("nodes", "embeddings", "biases"),
    "tf_sampled_kernel_tree_candidate_sampler": ("nodes", "embeddings", "biases"),
    "tf_sampled_resource_sampled_softmax_loss": ("weights", "biases"),
}


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
        handle_args = _HANDLE_ARGS.get(name)
        if handle_args is None:
            return fn

        def call(**kwargs):
            for key in handle_args:
                if key in kwargs:
                    kwargs[key] = _as_handle(kwargs[key])
            return fn(**kwargs)
        return call
