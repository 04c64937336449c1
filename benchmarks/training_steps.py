"""The sampled-softmax training problem the speed benchmarks share.

A linear softmax layer (logits = h W^T + b) over C classes: the class table
W ~ N(0, 0.1^2) [C, d] and b = 0, a batch h with logit std ~1 and uniform
labels, plain SGD, and the step functions of bench_kernel_sampler's
variants (a)-(d) (see that module's docstring), which bench_lsh_sampler and
bench_keras_layer run with their own samplers.
"""
import math

import numpy as np
import tensorflow as tf

import tf_sampled as tfs

LEARNING_RATE = 0.05


def make_table(num_classes, dim, seed):
    """W ~ N(0, 0.1^2) [C, d] and b = 0 [C] as variables.

    Built from one dense tensor: a sliced assign would already switch W to
    copy-on-read mode (see benchmarks/bench_kernel_sampler.py).
    """
    w = tf.Variable(tf.random.stateless_normal([num_classes, dim], seed=[seed, 0],
                                               stddev=0.1), name="W")
    b = tf.Variable(tf.zeros([num_classes]), name="b")
    return w, b


def make_batch(num_classes, dim, batch, seed):
    """h with logit std ~1 against W ~ N(0, 0.01): h ~ N(0, 1 / (0.01 d))."""
    h = tf.random.stateless_normal([batch, dim], seed=[seed, 1]) / math.sqrt(0.01 * dim)
    labels = tf.random.stateless_uniform([batch], seed=[seed, 2], minval=0,
                                         maxval=num_classes, dtype=tf.int64)
    return h, labels


def mean_distinct_leaves(ids, leaf_size):
    leaves = np.asarray(ids) // leaf_size
    return float(np.mean([len(np.unique(row)) for row in leaves]))



def apply_sgd(variables, grads, use_op=False):
    """Plain SGD: sparse gradients by `scatter_sub` (what Keras' SGD runs) or,
    with use_op, by tf_sampled's multi-threaded `SparseApplySgd` op."""
    for var, grad in zip(variables, grads):
        if use_op and isinstance(grad, tf.IndexedSlices):
            assert tfs.optimizers.sparse_apply.sgd(var, grad, LEARNING_RATE)
        elif isinstance(grad, tf.IndexedSlices):
            var.scatter_sub(tf.IndexedSlices(LEARNING_RATE * grad.values, grad.indices,
                                             grad.dense_shape))
        else:
            var.assign_sub(LEARNING_RATE * grad)


def build_functions(w, b, sampler, h, labels, num_classes, num_sampled, with_full):
    """The tf.functions of one sampled-softmax training problem.

    Args:
      w, b: the [C, d] and [C] class table and biases (variables).
      sampler: a KernelSampler, or another sampler with the same calls
        (candidate_sampler with inputs, sample, refresh(ids)).
      h, labels: the batch, [B, d] float and [B] int64.
      num_classes, num_sampled: C and S.
      with_full: whether to include the full softmax step (d).

    Returns:
      (steps {"a", "b", "c", "c0", "c+" (, "d")}: training steps, extras
      {"sample", "shared", "logu", "readW"}: sampling alone and a table read,
      (refresh_ids(ids), refresh_ids_by_deltas(ids)), refresh_full(),
      step_ids(cands): the ids a step touched), as bench_kernel_sampler's
      docstring describes them.
    """
    labels2 = labels[:, None]
    variables = (w, b)

    def tf_step(sampled_values):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sampled_softmax_loss(
                weights=w, biases=b, labels=labels2, inputs=h, num_sampled=num_sampled,
                num_classes=num_classes, sampled_values=sampled_values))
        grads = tape.gradient(loss, variables)
        apply_sgd(variables, grads)
        return loss

    def tfs_step(cands):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tfs.nn.sampled_softmax_loss(w, b, labels2, h, cands))
        grads = tape.gradient(loss, variables)
        apply_sgd(variables, grads)
        return loss

    def step_ids(cands):
        return tf.concat([labels, tf.reshape(cands.ids, [-1])], 0)

    @tf.function
    def step_a():
        return tf_step(tf.random.log_uniform_candidate_sampler(
            labels2, 1, num_sampled, True, num_classes))

    @tf.function
    def step_b():
        # What tfs.random.kernel_candidate_sampler (lsh_candidate_sampler)
        # calls, so the LSH benchmark shares these steps.
        return tf_step(sampler.candidate_sampler(
            labels2, 1, num_sampled, True, num_classes, inputs=h))

    @tf.function
    def step_c():
        return tfs_step(sampler.sample(h, num_sampled, true_classes=labels2))

    @tf.function
    def step_c0():
        ids = tf.random.uniform([h.shape[0], num_sampled], 0, num_classes, tf.int64)
        log_q = tf.fill(tf.shape(ids), -math.log(num_classes))
        true_log_q = tf.fill([h.shape[0], 1], -math.log(num_classes))
        return tfs_step(tfs.samplers.SampledCandidates(ids, log_q, true_log_q))

    @tf.function
    def step_c_refresh():
        cands = sampler.sample(h, num_sampled, true_classes=labels2)
        loss = tfs_step(cands)
        sampler.refresh(step_ids(cands))
        return loss

    @tf.function
    def step_d():
        with tf.GradientTape() as tape:
            logits = tf.matmul(h, w, transpose_b=True) + b
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=labels, logits=logits))
        apply_sgd(variables, tape.gradient(loss, variables))
        return loss

    @tf.function
    def sample_pe():
        return sampler.sample(h, num_sampled, true_classes=labels2).ids

    @tf.function
    def sample_shared():
        return tfs.random.kernel_candidate_sampler(
            labels2, 1, num_sampled, True, num_classes, inputs=h, sampler=sampler)[0]

    @tf.function
    def sample_logu():
        return tf.random.log_uniform_candidate_sampler(
            labels2, 1, num_sampled, True, num_classes)[0]

    @tf.function
    def read_w():
        return tf.reduce_sum(tf.convert_to_tensor(w)[:1])

    @tf.function
    def refresh_ids(ids):
        sampler.refresh(ids)
        return tf.constant(0)

    @tf.function
    def refresh_ids_by_deltas(ids):
        # The path mirrored and GPU variables take (node deltas + scatter-add),
        # for the side-by-side comparison (KernelSampler only).
        sampler.refresh(ids, in_place=False)
        return tf.constant(0)

    @tf.function
    def refresh_full():
        sampler.refresh()
        return tf.constant(0)

    steps = {"a": step_a, "b": step_b, "c": step_c, "c0": step_c0, "c+": step_c_refresh}
    if with_full:
        steps["d"] = step_d
    extras = {"sample": sample_pe, "shared": sample_shared, "logu": sample_logu,
              "readW": read_w}
    return steps, extras, (refresh_ids, refresh_ids_by_deltas), refresh_full, step_ids
