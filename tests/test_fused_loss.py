"""The fused per-example sampled softmax loss against the reference composition.

`tfs.nn.sampled_softmax_loss(..., fused=False)` (TensorFlow ops, itself checked
against tf.nn's loss and brute force in test_nn_loss.py) is the oracle: loss
values and every gradient must agree to float tolerance, in eager and in
tf.function, for every option and table kind.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sampled as tfs

NUM_CLASSES, DIM, BATCH = 40, 6, 7


def make_problem(num_true=1, num_sampled=5, seed=0, num_classes=NUM_CLASSES, dim=DIM,
                 batch=BATCH, hits=True):
    """Arrays of one batch: rows, biases, labels, inputs and candidates.

    Candidates repeat ids within and across rows, and (with hits) hit true
    classes, so deduplication and accidental hits are exercised.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, (batch, num_true))
    ids = rng.integers(0, num_classes, (batch, num_sampled))
    ids[:, -1] = ids[:, 0]  # a repeat within each row
    ids[1] = ids[0]         # rows sharing candidates
    if hits:
        ids[0, 1] = labels[0, 0]
        ids[2, :2] = labels[2, -1]
    return dict(
        weights=rng.normal(size=(num_classes, dim)).astype(np.float32),
        biases=rng.normal(size=num_classes).astype(np.float32),
        labels=labels,
        inputs=rng.normal(size=(batch, dim)).astype(np.float32),
        candidates=tfs.samplers.SampledCandidates(
            tf.constant(ids),
            tf.constant(rng.normal(-3, 1, (batch, num_sampled)).astype(np.float32)),
            tf.constant(rng.normal(-3, 1, (batch, num_true)).astype(np.float32))))


def make_table(problem, kind, with_biases):
    """(weights, biases) as tf variables, Keras variables or tensors."""
    w, b = problem["weights"], problem["biases"] if with_biases else None
    if kind == "variable":
        return tf.Variable(w), None if b is None else tf.Variable(b)
    if kind == "keras":
        return keras.Variable(w), None if b is None else keras.Variable(b)
    return tf.constant(w), None if b is None else tf.constant(b)


def loss_and_grads(problem, kind, with_biases, fused, options, use_function):
    """Loss [B] and dense gradients of a weighted sum w.r.t. everything."""
    weights, biases = make_table(problem, kind, with_biases)
    inputs = tf.constant(problem["inputs"])
    cands = problem["candidates"]
    # Unequal per-example weights so loss_grad[b] differs across examples.
    scale = tf.range(1.0, BATCH + 1.0) / BATCH

    def run():
        with tf.GradientTape() as tape:
            sources = {"inputs": inputs, "log_q": cands.log_q, "true_log_q": cands.true_log_q}
            for value in sources.values():
                tape.watch(value)
            if kind == "tensor":  # constants must be watched; variables are watched
                tape.watch(weights)
                if biases is not None:
                    tape.watch(biases)
            loss = tfs.nn.sampled_softmax_loss(weights, biases, problem["labels"], inputs,
                                               cands, fused=fused, **options)
            total = tf.reduce_sum(scale * loss)
        sources["weights"] = weights
        if biases is not None:
            sources["biases"] = biases
        grads = tape.gradient(total, sources)
        return loss, grads

    loss, grads = tf.function(run)() if use_function else run()
    dense = {}
    for name, grad in grads.items():
        if name in ("weights", "biases") and fused:
            assert isinstance(grad, tf.IndexedSlices), (name, type(grad))
        dense[name] = None if grad is None else tf.convert_to_tensor(grad).numpy()
    return loss.numpy(), dense


OPTIONS = [dict(remove_accidental_hits=r, subtract_log_q_true=s)
           for r in (True, False) for s in (True, False)]


@pytest.mark.parametrize("use_function", [False, True], ids=["eager", "function"])
@pytest.mark.parametrize("kind", ["variable", "keras", "tensor"])
@pytest.mark.parametrize("with_biases", [True, False], ids=["biases", "no_biases"])
@pytest.mark.parametrize("num_true", [1, 3])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "hits%d-true%d" % (
    o["remove_accidental_hits"], o["subtract_log_q_true"]))
def test_fused_equals_reference(use_function, kind, with_biases, num_true, options):
    problem = make_problem(num_true=num_true, seed=num_true)
    got_loss, got = loss_and_grads(problem, kind, with_biases, True, options, use_function)
    want_loss, want = loss_and_grads(problem, kind, with_biases, False, options, use_function)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5, atol=1e-5)
    assert set(got) == set(want)
    for name in want:
        if want[name] is None or not options["subtract_log_q_true"] and name == "true_log_q":
            # No dependence: the reference may give None or zeros.
            assert got[name] is None or not np.any(got[name]), name
            continue
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5,
                                   err_msg=name)


def test_table_gradient_is_indexed_slices_over_distinct_rows():
    problem = make_problem(num_true=2, num_sampled=6)
    weights, biases = make_table(problem, "variable", True)
    with tf.GradientTape() as tape:
        loss = tfs.nn.sampled_softmax_loss(weights, biases, problem["labels"],
                                           problem["inputs"], problem["candidates"])
    grad_w, grad_b = tape.gradient(loss, [weights, biases])
    read = np.unique(np.concatenate([problem["labels"].ravel(),
                                     problem["candidates"].ids.numpy().ravel()]))
    for grad in (grad_w, grad_b):
        assert isinstance(grad, tf.IndexedSlices)
        np.testing.assert_array_equal(grad.indices.numpy(), read)  # distinct, ascending
        np.testing.assert_array_equal(grad.dense_shape.numpy(), [NUM_CLASSES, DIM][:grad.values.shape.rank])
    assert grad_w.values.shape == (len(read), DIM)


def test_accidental_hits_get_no_probability():
    """A candidate equal to its row's label adds nothing to the loss or gradients."""
    problem = make_problem(hits=False, num_sampled=4)
    ids = problem["candidates"].ids.numpy()
    labels = problem["labels"]
    losses = {}
    for replace in (False, True):
        changed = ids.copy()
        if replace:
            changed[3, 2] = labels[3, 0]
        cands = problem["candidates"]._replace(ids=tf.constant(changed))
        losses[replace] = tfs.nn.sampled_softmax_loss(
            tf.constant(problem["weights"]), None, labels, problem["inputs"], cands).numpy()
    # Row 3 lost one candidate (its term leaves the log-sum-exp); the others are equal.
    np.testing.assert_allclose(np.delete(losses[True], 3), np.delete(losses[False], 3),
                               rtol=1e-6)
    assert losses[True][3] < losses[False][3]


def test_sgd_training_matches_reference():
    """Ten SGD steps (sparse updates) give the same table either way."""
    results = {}
    for fused in (True, False):
        problem = make_problem(num_true=1, num_sampled=8, seed=5)
        weights, biases = make_table(problem, "variable", True)
        optimizer = keras.optimizers.SGD(0.5)

        @tf.function
        def step(inputs, cands, weights=weights, biases=biases, optimizer=optimizer,
                 fused=fused, labels=problem["labels"]):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tfs.nn.sampled_softmax_loss(
                    weights, biases, labels, inputs, cands, fused=fused))
            optimizer.apply_gradients(zip(tape.gradient(loss, [weights, biases]),
                                          [weights, biases]))
            return loss

        for i in range(10):
            step(problem["inputs"] * (1 + 0.1 * i), problem["candidates"])
        results[fused] = (weights.numpy(), biases.numpy())
    for got, want in zip(results[True], results[False]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_reads_the_variable_after_sparse_updates():
    """In-place reads see the current value (also in copy-on-read mode)."""
    problem = make_problem()
    weights, biases = make_table(problem, "variable", True)
    weights.scatter_update(tf.IndexedSlices(tf.ones([2, DIM]), tf.constant([0, 1])))
    biases.scatter_add(tf.IndexedSlices(tf.ones([1]), tf.constant([3])))
    args = (problem["labels"], problem["inputs"], problem["candidates"])
    got = tfs.nn.sampled_softmax_loss(weights, biases, *args)
    want = tfs.nn.sampled_softmax_loss(tf.constant(weights.numpy()),
                                       tf.constant(biases.numpy()), *args)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


def test_with_kernel_sampler_candidates():
    """End to end with the sampler's own draws and log q, at a larger C."""
    rng = np.random.default_rng(3)
    weights = tf.Variable(rng.normal(0, 0.3, (3000, 16)).astype(np.float32))
    biases = tf.Variable(rng.normal(0, 0.3, 3000).astype(np.float32))
    sampler = tfs.samplers.KernelSampler(weights, leaf_size=32, biases=biases)
    inputs = tf.constant(rng.normal(size=(32, 16)).astype(np.float32))
    labels = rng.integers(0, 3000, (32, 1))
    cands = sampler.sample(inputs, 16, true_classes=labels, seed=1)
    results = {}
    for fused in (True, False):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tfs.nn.sampled_softmax_loss(weights, biases, labels, inputs, cands,
                                               fused=fused)
        grads = tape.gradient(loss, [weights, biases, inputs])
        results[fused] = [loss.numpy()] + [tf.convert_to_tensor(g).numpy() for g in grads]
    for got, want in zip(results[True], results[False]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_falls_back_to_reference_where_the_op_does_not_apply():
    """float64 inputs, or a variable table with tensor biases: same values."""
    problem = make_problem()
    weights, _ = make_table(problem, "variable", False)
    args = (problem["labels"], problem["inputs"], problem["candidates"])
    mixed = tfs.nn.sampled_softmax_loss(weights, tf.constant(problem["biases"]), *args)
    want = tfs.nn.sampled_softmax_loss(weights, tf.Variable(problem["biases"]), *args,
                                       fused=False)
    np.testing.assert_allclose(mixed.numpy(), want.numpy(), rtol=1e-6)
    w64 = tf.constant(problem["weights"], tf.float64)
    cands = problem["candidates"]
    double = tfs.nn.sampled_softmax_loss(w64, None, problem["labels"],
                                         tf.constant(problem["inputs"], tf.float64), cands)
    assert double.dtype == tf.float64


def test_xla_compiled_functions_use_the_reference():
    """The op has no XLA kernel: under jit_compile the loss is composed of TF ops."""
    problem = make_problem()
    weights, biases = make_table(problem, "variable", True)
    args = (problem["labels"], problem["inputs"], problem["candidates"])

    def loss_and_grad():
        with tf.GradientTape() as tape:
            loss = tfs.nn.sampled_softmax_loss(weights, biases, *args)
            total = tf.reduce_sum(loss)
        return loss, tape.gradient(total, weights)

    loss, grad = tf.function(loss_and_grad, jit_compile=True)()
    want, want_grad = loss_and_grad()
    assert isinstance(want_grad, tf.IndexedSlices)
    np.testing.assert_allclose(loss.numpy(), want.numpy(), rtol=1e-5)
    np.testing.assert_allclose(tf.convert_to_tensor(grad).numpy(),
                               tf.convert_to_tensor(want_grad).numpy(), rtol=1e-4, atol=1e-6)
