"""LazyAdam and SparseAdagrad against Keras' dense optimizers and a NumPy oracle."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sampled as tfs

C, D = 40, 3


def sparse_grad(ids, rng):
    ids = np.asarray(ids, np.int64)
    return tf.IndexedSlices(tf.constant(rng.normal(size=(len(ids), D)), tf.float32),
                            tf.constant(ids), dense_shape=tf.constant([C, D], tf.int64))


def run(optimizer, grads, init):
    var = keras.Variable(init)
    for grad in grads:
        optimizer.apply([grad], [var])
    return var.numpy()


def lazy_adam_oracle(init, grads, lr=1e-3, beta_1=0.9, beta_2=0.999, eps=1e-7):
    """tensorflow-addons' LazyAdam in NumPy float64 (duplicates summed)."""
    w, m, v = init.astype(np.float64), np.zeros_like(init, np.float64), np.zeros_like(
        init, np.float64)
    for t, grad in enumerate(grads, start=1):
        dense = np.zeros_like(w)
        np.add.at(dense, grad.indices.numpy(), grad.values.numpy())
        rows = np.unique(grad.indices.numpy())
        m[rows] = beta_1 * m[rows] + (1 - beta_1) * dense[rows]
        v[rows] = beta_2 * v[rows] + (1 - beta_2) * dense[rows] ** 2
        alpha = lr * np.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
        w[rows] -= alpha * m[rows] / (np.sqrt(v[rows]) + eps)
    return w


def test_lazy_adam_equals_adam_when_every_row_is_touched():
    rng = np.random.RandomState(0)
    init = rng.normal(size=(C, D)).astype(np.float32)
    # Every row in every step, shuffled with duplicates: Adam's exact update.
    grads = [sparse_grad(np.concatenate([rng.permutation(C), [3, 3, 7]]), rng)
             for _ in range(6)]
    lazy = run(tfs.optimizers.LazyAdam(0.01), grads, init)
    dense = run(keras.optimizers.Adam(0.01), [tf.convert_to_tensor(g) for g in grads], init)
    np.testing.assert_allclose(lazy, dense, rtol=1e-5, atol=1e-6)


def test_lazy_adam_on_sparse_steps_matches_oracle_and_leaves_other_rows():
    rng = np.random.RandomState(1)
    init = rng.normal(size=(C, D)).astype(np.float32)
    grads = [sparse_grad(rng.randint(0, 10, size=7), rng) for _ in range(8)]  # rows 0..9 only
    optimizer = tfs.optimizers.LazyAdam(0.05)
    lazy = run(optimizer, grads, init)
    np.testing.assert_allclose(lazy, lazy_adam_oracle(init, grads, lr=0.05), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(lazy[10:], init[10:])
    # Dense Adam keeps moving rows a step did not touch (momentum): they differ.
    dense = run(keras.optimizers.Adam(0.05), [tf.convert_to_tensor(g) for g in grads], init)
    assert np.abs(dense[:10] - lazy[:10]).max() > 1e-3


def test_lazy_adam_dense_gradient_is_adam():
    rng = np.random.RandomState(2)
    init = rng.normal(size=(C, D)).astype(np.float32)
    grads = [tf.constant(rng.normal(size=(C, D)), tf.float32) for _ in range(3)]
    np.testing.assert_allclose(run(tfs.optimizers.LazyAdam(0.01, amsgrad=True), grads, init),
                               run(keras.optimizers.Adam(0.01, amsgrad=True), grads, init),
                               rtol=1e-6)


def test_sparse_adagrad_equals_keras_adagrad_on_the_dense_gradient():
    rng = np.random.RandomState(3)
    init = rng.normal(size=(C, D)).astype(np.float32)
    grads = [sparse_grad(rng.randint(0, C, size=9), rng) for _ in range(6)]
    # Against the dense gradient: Keras' Adagrad fed the IndexedSlices squares
    # duplicate rows before summing them (sum g^2, not (sum g)^2).
    np.testing.assert_allclose(
        run(tfs.optimizers.SparseAdagrad(0.1), grads, init),
        run(keras.optimizers.Adagrad(0.1), [tf.convert_to_tensor(g) for g in grads], init),
        rtol=1e-5, atol=1e-6)


def test_lazy_adam_gradient_of_a_gather_stays_sparse_and_serializes():
    var = keras.Variable(tf.zeros([C, D]))
    optimizer = tfs.optimizers.LazyAdam(0.1)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.gather(var.value, [1, 5, 5]))
        grad = tape.gradient(loss, [var])
        optimizer.apply(grad, [var])
        return grad[0]

    assert isinstance(step(), tf.IndexedSlices)
    changed = np.nonzero(np.abs(var.numpy()).sum(1))[0]
    np.testing.assert_array_equal(changed, [1, 5])
    config = keras.optimizers.serialize(optimizer)
    assert isinstance(keras.optimizers.deserialize(config), tfs.optimizers.LazyAdam)


@pytest.mark.parametrize("optimizer, densifies", [
    (keras.optimizers.SGD(0.1), False),
    (keras.optimizers.SGD(0.1, momentum=0.9), True),
    (keras.optimizers.Adam(), True),
    (keras.optimizers.Adagrad(), True),
    (keras.optimizers.AdamW(), True),
    (tfs.optimizers.LazyAdam(), False),
    (tfs.optimizers.LazyAdam(weight_decay=0.01), True),
    (tfs.optimizers.SparseAdagrad(), False),
])
def test_densifying_reason(optimizer, densifies):
    assert bool(tfs.optimizers.densifying_reason(optimizer)) == densifies
