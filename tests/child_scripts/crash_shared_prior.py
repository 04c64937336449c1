"""Crash cases of the kernel tree's batch-shared proposal: a prior_weight
outside [0, 1] (or not finite) must raise InvalidArgument naming the
attribute and the value, eagerly and in a tf.function
(tests/test_kernel_shared_prior.py runs them in one interpreter)."""
import functools

import tensorflow as tf

from child_scripts import crash_kernel

# The runner's setup: the kernel cases' small table, projections and queries.
setup = crash_kernel.setup

# name -> (prior_weight, how the error message shows it)
BAD_WEIGHTS = {"negative": (-0.5, "-0.5"), "above_one": (1.25, "1.25"),
               "nan": (float("nan"), "nan"), "inf": (float("inf"), "inf"),
               "minus_inf": (-float("inf"), "-inf")}


def _rejects_bad_prior_weight(env, weight, shown):
    nodes = tf.Variable(env.ops.tf_sampled_kernel_tree_build(
        rows=env.emb, omega=env.omega, leaf_size=2, **env.attrs))
    table, no_bias = tf.Variable(env.emb), tf.Variable(env.no_biases)

    def call():
        return env.ops.tf_sampled_kernel_tree_candidate_sampler(
            nodes=nodes, embeddings=table, biases=no_bias, omega=env.omega, inputs=env.x,
            true_classes=[[0], [4]], counter=0, num_true=1, num_sampled=3, unique=True,
            range_max=5, leaf_size=2, prior_weight=weight, **env.attrs)
    for run in (call, tf.function(call)):
        try:
            run()
        except tf.errors.InvalidArgumentError as error:
            assert "prior_weight" in str(error) and shown in str(error), str(error)
        else:
            raise AssertionError(f"prior_weight={shown} was accepted")
    print(f"CLEAN rejected prior_weight={shown}")


for _name, (_weight, _shown) in BAD_WEIGHTS.items():
    globals()[f"case_candidate_sampler_prior_weight_{_name}"] = functools.partial(
        _rejects_bad_prior_weight, weight=_weight, shown=_shown)
