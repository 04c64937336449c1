"""Input dtypes and label shapes: supported forms agree, others name the problem.

- The layer casts float inputs of any dtype to float32 (Keras' autocast), in
  fit, evaluate, predict and `sampled_loss`; its table must be float32
  (`dtype="float64"` is refused, naming the dtype).
- Labels [batch] and [batch, 1] are one form, also for a model traced with
  the other; other shapes are a ValueError naming the shape.
- `tfs.nn` losses take inputs and table in one float dtype (float32 for the
  fused op, float64 for the composed reference): a mix is a ValueError naming
  both dtypes.
- Samplers read float32 variables in place: a variable of another dtype is a
  ValueError naming the argument and dtype (a copy would go stale); a float
  tensor or array is copied once as float32, as a float32 one is.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sampled as tfs
from layer_models import NUM_FEATURES, task
from error_assertions import raises_naming

C, DIM, S = 100, 8, 6
InvalidArgument = tf.errors.InvalidArgumentError


def head_model(input_dtype="float32", seed=3, **layer_args):
    """Input(8, input_dtype) -> SampledSoftmax(C): the head sees the inputs as given."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input([NUM_FEATURES], dtype=input_dtype)
    outputs = tfs.layers.SampledSoftmax(C, num_sampled=S, seed=seed, **layer_args)(inputs)
    model = tfs.layers.SampledSoftmaxModel(inputs, outputs)
    model.compile(tfs.optimizers.LazyAdam(0.01))
    return model


def fit_weights(model, *batches):
    for x, y in batches:
        model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    return [np.asarray(v) for v in model.weights]


def assert_same(one, two):
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def data():
    x, y = task(C, n=96)
    return x, y


# ---- the layer: float inputs are cast, the table is float32 ----

@pytest.mark.parametrize("sampler", ["kernel", "log_uniform"])
def test_float64_inputs_train_evaluate_and_predict_as_float32(data, sampler):
    x, y = data
    x64 = x.astype(np.float64)
    as32, as64 = head_model(sampler=sampler), head_model("float64", sampler=sampler)
    assert_same(fit_weights(as32, (x, y)), fit_weights(as64, (x64, y)))
    np.testing.assert_array_equal(as32.evaluate(x, y, verbose=0),
                                  as64.evaluate(x64, y, verbose=0))
    np.testing.assert_array_equal(as32.predict(x, verbose=0), as64.predict(x64, verbose=0))
    head = as64.sampled_softmax
    losses = []
    for h in (tf.constant(x[:8]), tf.constant(x64[:8])):
        head.sampler.stream.counter.assign(0)
        losses.append(head.sampled_loss(h, y[:8])[0].numpy())
    np.testing.assert_array_equal(*losses)


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16"])
def test_layer_dtype_other_than_float32_variables_is_refused(dtype):
    raises_naming(ValueError, lambda: tfs.layers.SampledSoftmax(C, dtype=dtype),
                  "dtype", dtype, "float32")


def test_mixed_policy_keeps_a_float32_table(data):
    x, y = data
    model = head_model(dtype="mixed_float16")
    assert model.sampled_softmax.embeddings.dtype == "float32"
    fit_weights(model, (x, y))
    assert np.isfinite(model.evaluate(x, y, verbose=0)).all()


def test_integer_inputs_to_sampled_loss_are_refused(data):
    _, y = data
    head = head_model().sampled_softmax
    raises_naming(ValueError, lambda: head.sampled_loss(tf.zeros([2, NUM_FEATURES], tf.int32),
                                                        y[:2]), "inputs", "int32")


# ---- the layer: labels [batch] and [batch, 1] ----

def test_labels_of_either_shape_after_a_fit_with_the_other(data):
    x, y = data
    want = fit_weights(head_model(), (x, y), (x, y), (x, y[:, None]), (x, y[:, None]))
    got = fit_weights(head_model(), (x, y[:, None]), (x, y), (x, y[:, None]), (x, y))
    assert_same(want, got)


def test_evaluate_takes_either_label_shape_after_the_other(data):
    x, y = data
    model = head_model()
    first = model.evaluate(x, y, verbose=0)
    np.testing.assert_array_equal(model.evaluate(x, y[:, None], verbose=0), first)
    np.testing.assert_array_equal(model.evaluate(x, y, verbose=0), first)


def test_datasets_of_either_label_shape_after_the_other(data):
    x, y = data

    def dataset(labels):
        return tf.data.Dataset.from_tensor_slices((x, labels)).batch(32)

    want = head_model()
    for labels in (y, y):
        want.fit(dataset(labels), epochs=1, shuffle=False, verbose=0)
    got = head_model()
    for labels in (y[:, None], y):
        got.fit(dataset(labels), epochs=1, shuffle=False, verbose=0)
    assert_same([np.asarray(v) for v in want.weights], [np.asarray(v) for v in got.weights])
    np.testing.assert_array_equal(got.evaluate(dataset(y[:, None]), verbose=0),
                                  got.evaluate(dataset(y), verbose=0))


BAD_LABELS = {"two_columns": lambda y: np.stack([y, y], 1),
              "rank_3": lambda y: y[:, None, None],
              "scalar": lambda y: y[0]}


@pytest.mark.parametrize("bad", sorted(BAD_LABELS))
@pytest.mark.parametrize("traced_with", [None, "vector", "column"])
def test_other_label_shapes_are_a_value_error_naming_the_shape(data, bad, traced_with):
    x, y = data
    model = head_model()
    if traced_with:  # a function traced for one form takes labels of any rank
        fit_weights(model, (x, y if traced_with == "vector" else y[:, None]))
        model.evaluate(x, y, verbose=0)
    labels = BAD_LABELS[bad](y)
    shape = str(tf.TensorShape(np.shape(labels)))
    for fn in (lambda: model.fit(x, labels, epochs=1, verbose=0),
               lambda: model.evaluate(x, labels, verbose=0),
               lambda: model.train_on_batch(x[:32], labels[:32] if np.ndim(labels) else labels),
               lambda: model.fit(x, y, validation_data=(x, labels), verbose=0)):
        raises_naming(ValueError, fn, "labels", "[batch] or [batch, 1]")
    raises_naming(ValueError, lambda: model.fit(x, labels, epochs=1, verbose=0), shape)


def test_bad_label_dataset_after_a_trace_fails_naming_the_shape(data):
    """A dataset's labels reach the relaxed function: checked as the step runs."""
    x, y = data
    model = head_model()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    model.fit(x, y[:, None], batch_size=32, epochs=1, verbose=0)
    bad = tf.data.Dataset.from_tensor_slices((x, np.stack([y, y], 1))).batch(32)
    raises_naming(InvalidArgument, lambda: model.fit(bad, epochs=1, shuffle=False, verbose=0),
                  "labels must have shape [batch] or [batch, 1]", "[32 2]")
    fresh = head_model()
    raises_naming(ValueError, lambda: fresh.fit(bad, epochs=1, shuffle=False, verbose=0),
                  "labels", "(None, 2)")


def test_float_labels_and_label_rows_are_refused(data):
    x, y = data
    model = head_model()
    raises_naming(ValueError, lambda: model.fit(x, y.astype(np.float32), verbose=0),
                  "labels", "float32")
    head = model.sampled_softmax
    raises_naming(ValueError, lambda: head.sampled_loss(tf.constant(x[:4]), y[:3]),
                  "labels", "4 rows", "(3,)")


# ---- tfs.nn: inputs and table in one float dtype ----

@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    weights = tf.Variable(rng.normal(size=(C, DIM)).astype(np.float32))
    biases = tf.Variable(rng.normal(size=C).astype(np.float32))
    inputs = rng.normal(size=(5, DIM)).astype(np.float32)
    labels = rng.integers(0, C, size=5)
    sampler = tfs.samplers.LogUniform(C)
    return dict(weights=weights, biases=biases, inputs=inputs, labels=labels,
                sampled=sampler.sample(inputs, S, true_classes=labels, seed=1),
                triple=sampler.candidate_sampler(labels[:, None], 1, S, True, C, seed=1))


LOSSES = {
    "fused": lambda p, **kw: tfs.nn.sampled_softmax_loss(sampled=p["sampled"], **kw),
    "reference": lambda p, **kw: tfs.nn.sampled_softmax_loss(sampled=p["sampled"],
                                                             fused=False, **kw),
    "triple": lambda p, **kw: tfs.nn.sampled_softmax_loss(sampled=p["triple"], **kw),
    "negative_sampling": lambda p, **kw: tfs.nn.negative_sampling_loss(sampled=p["sampled"],
                                                                       **kw),
}


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_nn_mixed_dtypes_name_inputs_and_table(problem, loss):
    p = problem
    fn = LOSSES[loss]
    args = dict(weights=p["weights"], biases=p["biases"], labels=p["labels"])
    raises_naming(ValueError, lambda: fn(p, inputs=p["inputs"].astype(np.float64), **args),
                  "inputs", "float64", "weights", "float32")
    raises_naming(ValueError, lambda: fn(p, inputs=p["inputs"].astype(np.float16), **args),
                  "inputs", "float16", "weights", "float32")
    raises_naming(ValueError, lambda: fn(p, inputs=p["inputs"], weights=p["weights"],
                                         biases=tf.constant(p["biases"].numpy(), tf.float64),
                                         labels=p["labels"]), "biases", "float64")
    raises_naming(ValueError, lambda: fn(p, inputs=p["inputs"].astype(np.int32), **args),
                  "inputs", "int32")


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_nn_float64_throughout_is_the_float32_loss(problem, loss):
    p = problem
    fn = LOSSES[loss]
    want = fn(p, weights=p["weights"], biases=p["biases"], labels=p["labels"],
              inputs=p["inputs"])
    got = fn(p, weights=tf.constant(p["weights"].numpy(), tf.float64),
             biases=tf.constant(p["biases"].numpy(), tf.float64), labels=p["labels"],
             inputs=p["inputs"].astype(np.float64))
    assert got.dtype == tf.float64
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


def test_nn_labels_vector_and_column_agree(problem):
    p = problem
    args = dict(weights=p["weights"], biases=p["biases"], inputs=p["inputs"],
                sampled=p["sampled"])
    np.testing.assert_array_equal(
        tfs.nn.sampled_softmax_loss(labels=p["labels"], **args).numpy(),
        tfs.nn.sampled_softmax_loss(labels=p["labels"][:, None], **args).numpy())
    raises_naming(ValueError, lambda: tfs.nn.sampled_softmax_loss(
        labels=p["labels"][:, None, None], **args), "labels", "(5, 1, 1)")


# ---- samplers: float32 variables in place, other tables copied once ----

def table_samplers():
    fmap = tfs.features.PositiveRandom(16, seed=0)
    return {"kernel": lambda w, **kw: tfs.samplers.KernelSampler(w, feature_map=fmap,
                                                                 leaf_size=16, **kw),
            "lsh": lambda w: tfs.samplers.LSHSampler(w, num_tables=3, seed=0)}


@pytest.mark.parametrize("kind", ["kernel", "lsh"])
@pytest.mark.parametrize("make_variable", ["tf", "keras"])
def test_float64_variable_tables_are_refused(kind, make_variable):
    table = np.random.default_rng(0).normal(size=(C, DIM))
    variable = (tf.Variable(table) if make_variable == "tf"
                else keras.Variable(table, dtype="float64"))
    raises_naming(ValueError, lambda: table_samplers()[kind](variable),
                  "embeddings", "float64", "float32")
    raises_naming(ValueError, lambda: table_samplers()[kind](tf.constant(table, tf.int32)),
                  "embeddings", "int32")


def test_float64_variable_biases_are_refused():
    table = tf.Variable(np.zeros((C, DIM), np.float32))
    raises_naming(ValueError, lambda: table_samplers()["kernel"](
        table, biases=tf.Variable(np.zeros(C))), "biases", "float64", "float32")


@pytest.mark.parametrize("kind", ["kernel", "lsh"])
def test_float64_arrays_and_tensors_are_copied_as_float32(kind):
    table = np.random.default_rng(0).normal(size=(C, DIM))
    h = np.random.default_rng(1).normal(size=(4, DIM))
    ids = np.tile(np.arange(C), (4, 1))
    make = table_samplers()[kind]
    want = make(tf.constant(table, tf.float32))
    expected = want.log_prob(h.astype(np.float32), ids).numpy()
    for given in (table, tf.constant(table)):
        got = make(given)
        np.testing.assert_array_equal(got.log_prob(h, ids).numpy(), expected)
        np.testing.assert_array_equal(got.sample(h, 5, seed=2).ids.numpy(),
                                      want.sample(h.astype(np.float32), 5, seed=2).ids.numpy())
        want.stream.counter.assign(0)


@pytest.mark.parametrize("kind", ["kernel", "lsh", "log_uniform"])
def test_sample_true_classes_vector_or_column_float64_inputs(kind):
    table = tf.constant(np.random.default_rng(0).normal(size=(C, DIM)), tf.float32)
    sampler = (tfs.samplers.LogUniform(C) if kind == "log_uniform"
               else table_samplers()[kind](table))
    h = np.random.default_rng(1).normal(size=(4, DIM))
    labels = np.array([1, 5, 7, 9])
    results = []
    for inputs, true_classes in ((h.astype(np.float32), labels[:, None]), (h, labels)):
        sampler.stream.counter.assign(0)
        results.append(sampler.sample(inputs, 5, true_classes=true_classes, seed=3))
    for got, want in zip(*results):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    raises_naming(ValueError, lambda: sampler.sample(h, 5, true_classes=labels[:, None, None]),
                  "true_classes", "(4, 1, 1)")
