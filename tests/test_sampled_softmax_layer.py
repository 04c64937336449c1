"""SampledSoftmax + SampledSoftmaxModel: training, inference, metrics, refresh, bad input."""
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sampled as tfs
from layer_models import build, hidden, task
from test_nn_loss import numpy_loss

C = 300


class FixedSampler(tfs.samplers.Sampler):
    """Returns the same given candidates at every call (an oracle-friendly sampler)."""

    def __init__(self, num_classes, ids, log_q, true_log_q):
        super().__init__(num_classes)
        self.candidates = tfs.samplers.SampledCandidates(
            tf.constant(ids), tf.constant(log_q), tf.constant(true_log_q))

    def sample(self, inputs, num_sampled, true_classes=None, seed=None):
        return self.candidates


def test_sampled_loss_and_ess_match_numpy():
    rng = np.random.RandomState(0)
    B, S = 6, 5
    ids = rng.randint(0, C, size=(B, S)).astype(np.int64)
    labels = rng.randint(0, C, size=B).astype(np.int64)
    ids[0, 2] = labels[0]  # an accidental hit
    log_q = np.log(rng.uniform(0.001, 0.01, size=(B, S))).astype(np.float32)
    true_log_q = np.log(rng.uniform(0.001, 0.01, size=(B, 1))).astype(np.float32)
    layer = tfs.layers.SampledSoftmax(C, num_sampled=S, ess_rows=4,
                                      sampler=FixedSampler(C, ids, log_q, true_log_q),
                                      bias_initializer="random_normal")
    h = rng.normal(size=(B, 7)).astype(np.float32)
    losses, touched, ess = layer.sampled_loss(h, labels)
    W, b = layer.embeddings.numpy(), layer.bias.numpy()
    np.testing.assert_allclose(
        losses.numpy(), numpy_loss(W, b, labels[:, None], h, ids, log_q, true_log_q, True, True),
        rtol=1e-5)
    np.testing.assert_array_equal(np.sort(touched.numpy()),
                                  np.sort(np.concatenate([labels, ids.ravel()])))
    log_w = (np.einsum("bd,bsd->bs", h, W[ids]) + b[ids] - log_q)[:4].astype(np.float64)
    w = np.where(ids[:4] == labels[:4, None], 0.0, np.exp(log_w))
    np.testing.assert_allclose(ess.numpy(), w.sum(1) ** 2 / (w ** 2).sum(1) / S, rtol=1e-4)


class FixedSharedSampler(tfs.samplers.Sampler):
    """Returns the same TensorFlow triple at every candidate_sampler call."""

    def __init__(self, num_classes, ids, true_counts, sampled_counts):
        super().__init__(num_classes)
        self.triple = (tf.constant(ids), tf.constant(true_counts), tf.constant(sampled_counts))

    def candidate_sampler(self, true_classes, num_true, num_sampled, unique, range_max,
                          seed=None, name=None, inputs=None):
        return self.triple


def test_shared_negatives_loss_and_ess_match_numpy():
    rng = np.random.RandomState(1)
    B, S = 6, 5
    ids = rng.choice(C, S, replace=False).astype(np.int64)
    labels = rng.randint(0, C, size=B).astype(np.int64)
    labels[1] = ids[3]  # an accidental hit
    sampled_counts = rng.uniform(0.01, 0.1, size=S).astype(np.float32)
    true_counts = rng.uniform(0.01, 0.1, size=(B, 1)).astype(np.float32)
    layer = tfs.layers.SampledSoftmax(
        C, num_sampled=S, ess_rows=4, shared_negatives=True,
        sampler=FixedSharedSampler(C, ids, true_counts, sampled_counts),
        bias_initializer="random_normal")
    h = rng.normal(size=(B, 7)).astype(np.float32)
    losses, touched, ess = layer.sampled_loss(h, labels)
    W, b = layer.embeddings.numpy(), layer.bias.numpy()
    # Expected counts are S q: the per-example form with log q = log(count / S).
    tiled = np.tile(ids, (B, 1))
    log_q = np.tile(np.log(sampled_counts / S), (B, 1))
    np.testing.assert_allclose(
        losses.numpy(), numpy_loss(W, b, labels[:, None], h, tiled, log_q,
                                   np.log(true_counts / S), True, True), rtol=1e-5)
    np.testing.assert_array_equal(np.sort(touched.numpy()),
                                  np.sort(np.concatenate([labels, ids])))
    log_w = (h[:4] @ W[ids].T + b[ids] - np.log(sampled_counts)).astype(np.float64)
    w = np.where(tiled[:4] == labels[:4, None], 0.0, np.exp(log_w))
    np.testing.assert_allclose(ess.numpy(), w.sum(1) ** 2 / (w ** 2).sum(1) / S, rtol=1e-4)


def test_default_layer_trains_with_shared_log_uniform_negatives():
    layer = tfs.layers.SampledSoftmax(20_000)
    assert (layer.num_sampled, layer.shared_negatives) == (1024, True)
    assert layer.get_config()["sampler"] == "log_uniform"
    restored = tfs.layers.SampledSoftmax.from_config(layer.get_config())
    assert (restored.num_sampled, restored.shared_negatives) == (1024, True)
    # At most num_classes - 1 negatives.
    assert tfs.layers.SampledSoftmax(300).num_sampled == 299
    assert tfs.layers.SampledSoftmax(2, eval_top_k=(1,)).num_sampled == 1
    # Samplers that read the inputs draw per example, 64 by default; so
    # does negative sampling (iid draws from p_n).
    for args in [dict(sampler="kernel"), dict(sampler="lsh"),
                 dict(loss="negative_sampling"), dict(shared_negatives=False)]:
        layer = tfs.layers.SampledSoftmax(20_000, **args)
        assert (layer.num_sampled, layer.shared_negatives) == (64, False), args
    unigram = tfs.samplers.Unigram(np.arange(1, 301))
    layer = tfs.layers.SampledSoftmax(300, sampler=unigram, num_sampled=16)
    assert (layer.num_sampled, layer.shared_negatives) == (16, True)
    # The default layer's loss is tf.nn's with the same triple.
    h = np.random.RandomState(0).normal(size=(8, 5)).astype(np.float32)
    labels = np.arange(8, dtype=np.int64) * 7
    layer = tfs.layers.SampledSoftmax(300, num_sampled=20, seed=3)
    losses = layer.sampled_loss(h, labels)[0]
    triple = tfs.samplers.LogUniform(300).candidate_sampler(
        labels[:, None], 1, 20, True, 300, seed=3)
    expected = tf.nn.sampled_softmax_loss(layer.embeddings, layer.bias, labels[:, None], h,
                                          20, 300, sampled_values=triple)
    np.testing.assert_allclose(losses.numpy(), expected.numpy(), rtol=1e-5)


def test_importance_ess_is_one_for_the_softmax_and_small_for_a_poor_proposal():
    logits = np.log(np.array([[0.5, 0.25, 0.25, 0.125]]))
    assert tfs.layers.importance_ess(logits, logits).numpy() == pytest.approx([1.0])
    ess = tfs.layers.importance_ess(np.array([[10.0, 0.0, 0.0, 0.0]]), np.zeros([1, 4]))
    assert ess.numpy()[0] < 0.26


def training_graph_tensors(model, batch=32):
    """(op type, shape) of every tensor in the traced train step, nested functions included."""
    step = tf.function(model.train_step).get_concrete_function(
        (tf.TensorSpec([batch, 8]), tf.TensorSpec([batch], tf.int64)))

    def graphs(graph):
        yield graph
        for function in graph._functions.values():  # pylint: disable=protected-access
            if getattr(function, "graph", None) is not None:
                yield from graphs(function.graph)

    for graph in graphs(step.graph):
        for op in graph.get_operations():
            for tensor in op.outputs:
                only_shape = all(c.type == "Shape" for c in tensor.consumers())
                yield op.type, tensor.shape, only_shape


@pytest.mark.parametrize("sampler, shared", [("kernel", False), ("kernel", True),
                                             ("log_uniform", False)])
def test_training_step_never_holds_a_num_classes_tensor(sampler, shared):
    num_classes = 1009  # a size no other dimension has
    model = build(num_classes, sampler=sampler, num_sampled=8, shared_negatives=shared,
                  sampler_options={"leaf_size": 16} if sampler == "kernel" else None)
    model.compile(tfs.optimizers.LazyAdam())
    big = [(op, shape) for op, shape, only_shape in training_graph_tensors(model)
           if shape.rank and num_classes in shape.as_list()
           # A variable read only for its static shape is folded away.
           and not (op == "ReadVariableOp" and only_shape)]
    assert not big, big


def test_dense_adam_is_visible_as_a_whole_table_update():
    # The check above can fail: Keras' Adam materialises [C, dim] updates.
    model = build(1009, sampler="log_uniform", num_sampled=8)
    with pytest.warns(UserWarning, match="Adam updates"):
        model.compile(keras.optimizers.Adam())
    assert any(shape.rank and 1009 in shape.as_list() and op != "ReadVariableOp"
               for op, shape, _ in training_graph_tensors(model))


@pytest.mark.parametrize("sampler, options, shared", [
    ("kernel", {"leaf_size": 16}, False),
    ("kernel", {"leaf_size": 16, "feature_map": "gaussian_moments"}, True),
    ("log_uniform", None, False),
    ("uniform", None, True),
    ("learned_unigram", None, False),
])
def test_fit_learns_and_evaluate_matches_the_full_softmax(sampler, options, shared):
    x, y = task(C)
    model = build(C, sampler=sampler, sampler_options=options, shared_negatives=shared,
                  num_sampled=16, init_seed=1)
    model.compile(tfs.optimizers.LazyAdam(0.02), jit_compile=True)
    assert model.jit_compile is False  # the layer refuses XLA; training still works
    before = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    history = model.fit(x, y, epochs=4, batch_size=128, verbose=0)
    assert set(history.history) == {"loss", "sampler_ess"}
    assert 0.0 < history.history["sampler_ess"][-1] <= 1.0
    result = model.evaluate(x, y, batch_size=256, verbose=0, return_dict=True)
    assert before > 5.5 and result["loss"] < before - 2.0, (before, result)
    # evaluate's chunked metrics against the full logits of predict, in NumPy.
    logits = model.predict(x, verbose=0).astype(np.float64)
    lse = logits.max(1) + np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1))
    ce = lse - logits[np.arange(len(y)), y]
    rank = (logits > logits[np.arange(len(y)), y][:, None]).sum(1)
    assert result["loss"] == pytest.approx(ce.mean(), rel=1e-4)
    assert result["perplexity"] == pytest.approx(np.exp(ce.mean()), rel=1e-3)
    assert result["top_1_accuracy"] == pytest.approx((rank < 1).mean(), abs=1e-6)
    assert result["top_5_accuracy"] == pytest.approx((rank < 5).mean(), abs=1e-6)


def test_inference_outputs_against_numpy():
    x, _ = task(C, n=64)
    for output in ("logits", "probabilities"):
        model = build(C, output=output, top_k=None, bias_initializer="random_normal")
        head = model.sampled_softmax
        logits = hidden(model, x) @ head.embeddings.numpy().T + head.bias.numpy()
        expected = (logits if output == "logits"
                    else np.exp(logits) / np.exp(logits).sum(1, keepdims=True))
        np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-5)
    model = build(C, top_k=3, output="probabilities")
    head = model.sampled_softmax
    logits = hidden(model, x) @ head.embeddings.numpy().T + head.bias.numpy()
    result = model.predict(x, verbose=0)
    np.testing.assert_array_equal(result["ids"], np.argsort(-logits, axis=1)[:, :3])
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(result["scores"], -np.sort(-probs, axis=1)[:, :3], rtol=1e-4)


def tree_matches_table(head):
    sampler = head.sampler
    rows = np.concatenate([head.embeddings.numpy(), head.bias.numpy()[:, None]], 1)
    rebuilt = sampler._build(tf.constant(rows)).numpy()  # pylint: disable=protected-access
    return (np.allclose(sampler.rows.numpy(), rows, rtol=1e-6, atol=1e-7)
            and np.allclose(sampler.nodes.numpy(), rebuilt, rtol=1e-5))


@pytest.mark.parametrize("optimizer, schedule, follows", [
    (lambda: tfs.optimizers.LazyAdam(0.02), {}, True),  # sparse: touched rows suffice
    (lambda: keras.optimizers.SGD(0.5), {}, True),
    (lambda: tfs.optimizers.LazyAdam(0.02), {"refresh_touched": False}, False),
    (lambda: keras.optimizers.Adam(0.02), {}, False),  # dense: every row moves
    (lambda: keras.optimizers.Adam(0.02), {"refresh_every": 4}, True),  # 16 steps
])
def test_sampler_state_follows_the_table(optimizer, schedule, follows):
    x, y = task(C, n=1024)
    model = build(C, sampler="kernel", sampler_options={"leaf_size": 16}, num_sampled=8,
                  **schedule)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.compile(optimizer())
    model.fit(x, y, epochs=2, batch_size=128, verbose=0)
    assert model.sampled_softmax.refresh_step.numpy() == 16
    assert tree_matches_table(model.sampled_softmax) == follows


def test_rolling_slice_refreshes_a_window_per_step():
    layer = tfs.layers.SampledSoftmax(C, sampler="kernel", sampler_options={"leaf_size": 16},
                                      refresh_touched=False, refresh_slice=128)
    layer.build((None, 4))
    old = layer.sampler.rows.numpy().copy()
    layer.embeddings.assign(layer.embeddings.numpy() + 1.0)
    nothing = tf.zeros([0], tf.int64)
    layer.update_sampler(nothing)
    rows = layer.sampler.rows.numpy()[:, :4]
    np.testing.assert_allclose(rows[:128], layer.embeddings.numpy()[:128])
    np.testing.assert_allclose(rows[128:], old[128:, :4])
    layer.update_sampler(nothing)
    layer.update_sampler(nothing)  # wraps around: 384 > 300 rows
    assert tree_matches_table(layer)
    assert layer.refresh_cursor.numpy() == 384 % C


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="num_sampled"):
        tfs.layers.SampledSoftmax(10, num_sampled=10)
    with pytest.raises(ValueError, match="Unknown sampler 'zipf'"):
        tfs.layers.SampledSoftmax(10, num_sampled=2, sampler="zipf")
    with pytest.raises(ValueError, match="unknown"):
        tfs.layers.SampledSoftmax(10, num_sampled=2, sampler="kernel",
                                  sampler_options={"leaf": 4})
    with pytest.raises(ValueError, match="counts"):
        tfs.layers.SampledSoftmax(10, num_sampled=2, sampler="unigram")
    with pytest.raises(ValueError, match="built for 11 classes"):
        tfs.layers.SampledSoftmax(10, num_sampled=2, sampler=tfs.samplers.Uniform(11))(
            np.zeros([2, 4], np.float32))
    other = tfs.samplers.KernelSampler(tf.Variable(tf.zeros([10, 5])), leaf_size=4)
    with pytest.raises(ValueError, match="dim 5"):
        tfs.layers.SampledSoftmax(10, num_sampled=2, sampler=other)(np.zeros([2, 4], np.float32))
    model = build(C, num_sampled=8)
    with pytest.raises(ValueError, match="own loss"):
        model.compile("sgd", loss="sparse_categorical_crossentropy")
    model.compile(keras.optimizers.SGD(0.1))
    x = np.zeros([4, 8], np.float32)
    with pytest.raises(ValueError, match="integer class ids.*float32"):
        model.fit(x, np.zeros([4], np.float32), verbose=0)
    with pytest.raises(ValueError, match=r"\[batch\] or \[batch, 1\]"):
        model.fit(x, np.zeros([4, 2], np.int64), verbose=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"labels must be < num_classes={C}"):
        model.fit(x, np.full([4], C, np.int64), verbose=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must be >= 0"):
        model.fit(x, np.full([4], -1, np.int64), verbose=0)
    assert np.isfinite(model.sampled_softmax.embeddings.numpy()).all()


def test_output_must_be_a_sampled_softmax():
    inputs = keras.Input([4])
    with pytest.raises(ValueError, match="SampledSoftmax"):
        tfs.layers.SampledSoftmaxModel(inputs, keras.layers.Dense(3)(inputs))


def test_sample_weights_weight_the_sampled_loss():
    x, y = task(C, n=128)
    updates = {}
    for name, weights in [("none", None), ("ones", np.ones(128, np.float32)),
                          ("zeros", np.zeros(128, np.float32))]:
        model = build(C, num_sampled=8, seed=5)
        model.compile(keras.optimizers.SGD(1.0))
        start = model.sampled_softmax.embeddings.numpy()
        history = model.fit(x, y, sample_weight=weights, batch_size=128, verbose=0)
        updates[name] = model.sampled_softmax.embeddings.numpy() - start
        if name == "zeros":
            assert history.history["loss"] == [0.0]
    np.testing.assert_allclose(updates["ones"], updates["none"], atol=1e-7)
    assert np.abs(updates["none"]).max() > 1e-3
    np.testing.assert_array_equal(updates["zeros"], 0.0)
