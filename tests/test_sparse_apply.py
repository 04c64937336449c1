"""The sparse optimizer-step ops against the plain TensorFlow updates they replace.

`TfSampled>SparseApply{Sgd,LazyAdam,Adagrad}` update the touched rows in
place. The oracles are the same optimizers with the op disabled (their plain
TensorFlow path: unique, segment sum, gathers, scatters) and NumPy; values
must agree to float tolerance in eager and in tf.function, with duplicate and
unsorted indices, int32 and int64 indices, and tables of rank 1 to 3.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sampled as tfs
from tf_sampled.optimizers import sparse_apply

OPTIMIZERS = {
    "sgd": (lambda: tfs.optimizers.SparseSGD(0.1), "sgd"),
    "lazy_adam": (lambda: tfs.optimizers.LazyAdam(0.05), "lazy_adam"),
    "adagrad": (lambda: tfs.optimizers.SparseAdagrad(0.1), "adagrad"),
}


def _gradients(rng, shape, steps, indices_dtype):
    """`steps` IndexedSlices over `shape`'s rows: unsorted, with duplicates,
    the last one already distinct and ascending (the fused loss's form)."""
    grads = []
    for step in range(steps):
        if step == steps - 1:
            ids = np.sort(rng.choice(shape[0], size=min(7, shape[0]), replace=False))
        else:
            ids = rng.integers(0, shape[0], size=9)
        values = rng.normal(size=(len(ids),) + tuple(shape[1:])).astype(np.float32)
        grads.append(tf.IndexedSlices(tf.constant(values), tf.constant(ids, indices_dtype),
                                      tf.constant(shape, tf.int64)))
    return grads


def _train(make_optimizer, grads, init, use_op, use_function, monkeypatch, op_name):
    """The variable after applying `grads`, with the op or the plain TF path."""
    with monkeypatch.context() as patch:
        if not use_op:
            patch.setattr(sparse_apply, op_name, lambda *args, **kwargs: False)
        variable = keras.Variable(init)
        optimizer = make_optimizer()
        optimizer.build([variable])
        apply = lambda grad: optimizer.apply([grad], [variable])  # noqa: E731
        if use_function:
            apply = tf.function(apply, reduce_retracing=True)
        for grad in grads:
            apply(grad)
        return variable.numpy()


@pytest.mark.parametrize("use_function", [False, True], ids=["eager", "function"])
@pytest.mark.parametrize("shape", [(30,), (30, 4), (12, 3, 2)], ids=["rank1", "rank2", "rank3"])
@pytest.mark.parametrize("indices_dtype", [tf.int32, tf.int64])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_op_step_equals_the_plain_tensorflow_step(name, indices_dtype, shape, use_function,
                                                  monkeypatch):
    rng = np.random.default_rng(0)
    init = rng.normal(size=shape).astype(np.float32)
    grads = _gradients(rng, shape, 5, indices_dtype)
    make_optimizer, op_name = OPTIMIZERS[name]
    with_op = _train(make_optimizer, grads, init, True, use_function, monkeypatch, op_name)
    plain = _train(make_optimizer, grads, init, False, use_function, monkeypatch, op_name)
    np.testing.assert_allclose(with_op, plain, rtol=2e-6, atol=2e-6)
    touched = np.unique(np.concatenate([g.indices.numpy() for g in grads]))
    untouched = np.setdiff1d(np.arange(shape[0]), touched)
    np.testing.assert_array_equal(with_op[untouched], init[untouched])
    assert np.abs(with_op[touched] - init[touched]).max() > 1e-3


def test_sparse_sgd_equals_numpy_and_keras_sgd():
    rng = np.random.default_rng(1)
    init = rng.normal(size=(20, 3)).astype(np.float32)
    grads = _gradients(rng, (20, 3), 4, tf.int64)
    expected = init.astype(np.float64)
    for grad in grads:
        np.subtract.at(expected, grad.indices.numpy(), 0.1 * grad.values.numpy())
    for optimizer in (tfs.optimizers.SparseSGD(0.1), keras.optimizers.SGD(0.1)):
        variable = keras.Variable(init)
        for grad in grads:
            optimizer.apply([grad], [variable])
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_sparse_sgd_with_momentum_is_keras_sgd():
    rng = np.random.default_rng(2)
    init = rng.normal(size=(10, 2)).astype(np.float32)
    grads = _gradients(rng, (10, 2), 3, tf.int64)
    results = []
    for optimizer in (tfs.optimizers.SparseSGD(0.1, momentum=0.9),
                      keras.optimizers.SGD(0.1, momentum=0.9)):
        variable = keras.Variable(init)
        for grad in grads:
            optimizer.apply([grad], [variable])
        results.append(variable.numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6, atol=1e-7)
    assert tfs.optimizers.densifying_reason(tfs.optimizers.SparseSGD(0.1)) is None
    assert "momentum" in tfs.optimizers.densifying_reason(
        tfs.optimizers.SparseSGD(0.1, momentum=0.9))


def test_sparse_sgd_serializes():
    config = keras.optimizers.serialize(tfs.optimizers.SparseSGD(0.3))
    restored = keras.optimizers.deserialize(config)
    assert isinstance(restored, tfs.optimizers.SparseSGD)
    assert float(restored.learning_rate) == pytest.approx(0.3)


def test_a_dense_read_taken_before_the_step_keeps_its_values():
    """The op updates in place: a snapshot sharing the buffer must not change."""
    variable = tf.Variable(np.zeros((6, 2), np.float32))
    snapshot = variable.read_value()
    grad = tf.IndexedSlices(tf.ones([2, 2]), tf.constant([1, 4], tf.int64))
    assert sparse_apply.sgd(variable, grad, 0.5)
    np.testing.assert_array_equal(snapshot.numpy(), np.zeros((6, 2)))
    expected = np.zeros((6, 2), np.float32)
    expected[[1, 4]] = -0.5
    np.testing.assert_array_equal(variable.numpy(), expected)


def test_empty_gradient_changes_nothing():
    variable = tf.Variable(np.ones((4, 2), np.float32))
    grad = tf.IndexedSlices(tf.zeros([0, 2]), tf.zeros([0], tf.int64))
    assert sparse_apply.lazy_adam(variable, tf.Variable(tf.zeros([4, 2])),
                                  tf.Variable(tf.zeros([4, 2])), grad, 0.1, 0.9, 0.999, 1e-7)
    np.testing.assert_array_equal(variable.numpy(), np.ones((4, 2)))


def test_variables_the_op_cannot_take_fall_back():
    grad = tf.IndexedSlices(tf.ones([1, 2], tf.float64), tf.constant([0], tf.int64))
    variable = tf.Variable(np.zeros((3, 2), np.float64))
    assert not sparse_apply.sgd(variable, grad, 0.1)
    assert not sparse_apply.sgd(tf.zeros([3, 2]), grad, 0.1)  # not a variable
    # Keras' optimizer then runs its own update.
    keras_variable = keras.Variable(np.zeros((3, 2)), dtype="float64")
    tfs.optimizers.SparseSGD(0.5).apply([grad], [keras_variable])
    np.testing.assert_array_equal(keras_variable.numpy()[0], [-0.5, -0.5])


# --------------------------------------------------------------------------
# Bad input to the raw ops: InvalidArgument naming the argument
# --------------------------------------------------------------------------

def _call(op, **kwargs):
    variables = {"var", "m", "v", "accumulator"}
    for key in variables & set(kwargs):
        value = kwargs[key]
        kwargs[key] = (value if isinstance(value, tf.Variable) else tf.Variable(value)).handle
    return getattr(tfs.load_ops(), op)(**kwargs)


def _sgd_args(**overrides):
    args = dict(var=np.zeros((5, 2), np.float32), indices=np.array([0, 3], np.int64),
                grads=np.ones((2, 2), np.float32), lr=np.float32(0.1))
    args.update(overrides)
    return args


@pytest.mark.parametrize("overrides, fragments", [
    (dict(indices=np.array([0, 5], np.int64)), ["indices", "[0, 5)", "got 5"]),
    (dict(indices=np.array([-1, 2], np.int64)), ["indices", "got -1"]),
    (dict(indices=np.array([0, 7], np.int32)), ["indices", "got 7"]),
    (dict(indices=np.array([[0, 1]], np.int64)), ["indices", "rank"]),
    (dict(grads=np.ones((3, 2), np.float32)), ["grads", "one row per index"]),
    (dict(grads=np.ones((2, 3), np.float32)), ["grads", "row shape"]),
    (dict(lr=np.float32(np.nan)), ["lr", "finite"]),
    (dict(lr=np.float32(np.inf)), ["lr", "finite"]),
    (dict(lr=np.array([0.1], np.float32)), ["lr", "scalar"]),
    (dict(var=np.zeros((5, 2), np.float64)), ["var", "float"]),
    (dict(var=np.float32(1.0), indices=np.zeros([0], np.int64),
          grads=np.zeros([0], np.float32)), ["var", "rank"]),
])
def test_sgd_op_rejects_bad_input(overrides, fragments):
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)) as info:
        _call("tf_sampled_sparse_apply_sgd", **_sgd_args(**overrides))
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_adam_and_adagrad_ops_reject_bad_slots_and_scalars():
    var = tf.Variable(np.zeros((5, 2), np.float32))
    common = dict(indices=np.array([1], np.int64), grads=np.ones((1, 2), np.float32),
                  lr=np.float32(0.1))
    adam = dict(beta1=np.float32(0.9), beta2=np.float32(0.999), epsilon=np.float32(1e-7))
    cases = [
        ("tf_sampled_sparse_apply_lazy_adam",
         dict(var=var, m=np.zeros((5, 3), np.float32), v=np.zeros((5, 2), np.float32), **adam),
         ["m", "var's shape"]),
        ("tf_sampled_sparse_apply_lazy_adam",
         dict(var=var, m=var, v=np.zeros((5, 2), np.float32), **adam),
         ["m", "var", "different variables"]),
        ("tf_sampled_sparse_apply_lazy_adam",
         dict(var=var, m=np.zeros((5, 2), np.float32), v=np.zeros((5, 2), np.float32),
              **dict(adam, beta2=np.float32(np.nan))), ["beta2", "finite"]),
        ("tf_sampled_sparse_apply_adagrad",
         dict(var=var, accumulator=np.zeros((4, 2), np.float32), epsilon=np.float32(1e-7)),
         ["accumulator", "var's shape"]),
        ("tf_sampled_sparse_apply_adagrad",
         dict(var=var, accumulator=np.zeros((5, 2), np.float32),
              epsilon=np.array([1e-7], np.float32)), ["epsilon", "scalar"]),
    ]
    for op, kwargs, fragments in cases:
        with pytest.raises((tf.errors.InvalidArgumentError, ValueError)) as info:
            _call(op, **common, **kwargs)
        for fragment in fragments:
            assert fragment in str(info.value), (op, str(info.value))
    np.testing.assert_array_equal(var.numpy(), np.zeros((5, 2)))  # nothing applied


def test_op_rejects_a_handle_with_no_variable_behind_it():
    handle = tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[4, 2], shared_name="never_set")
    with pytest.raises(tf.errors.InvalidArgumentError, match="var must be a variable handle"):
        tfs.load_ops().tf_sampled_sparse_apply_sgd(
            var=handle, indices=np.array([0], np.int64), grads=np.ones((1, 2), np.float32),
            lr=np.float32(0.1))
