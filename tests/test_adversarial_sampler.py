"""The adversarial auxiliary-model sampler: exactness, fit quality, the theorem.

The contract every sampler keeps (frequencies, log q of the draws, eager and
graph calls, seeds, checkpoints) is in test_sampler_contract.py.
"""
import numpy as np
import pytest
import tensorflow as tf

import tf_sampled as tfs
# (random_sampler and oracle_log_probs: also for other test files)
from oracles import adversarial_log_prob as oracle_log_probs
from sampler_cases import adversarial_queries as queries
from sampler_cases import adversarial_sampler as random_sampler
from stats import P_THRESHOLD, chi_square_p_value

AdversarialSampler = tfs.samplers.AdversarialSampler


def hierarchical_data(num_classes=256, dim=32, seed=0):
    """A sampler of (x, y): class centres are sums of offsets along a binary
    hierarchy (shrinking with depth), x = centre + noise, Zipf-like classes."""
    rng = np.random.default_rng(seed)
    depth = int(np.log2(num_classes))
    centres = np.zeros((num_classes, dim))
    for level in range(depth):
        offsets = rng.normal(size=(2 ** (level + 1), dim)) * (2.0 * 0.7 ** level)
        centres += offsets[np.arange(num_classes) >> (depth - level - 1)]
    freq = rng.permutation(1.0 / np.arange(1, num_classes + 1) ** 0.8)
    freq /= freq.sum()

    def draw(n, rng):
        y = rng.choice(num_classes, size=n, p=freq)
        return (centres[y] + rng.normal(size=(n, dim))).astype(np.float32), y
    return draw


# --------------------------------------------------------------------------
# Exactness of p_n
# --------------------------------------------------------------------------

@pytest.mark.parametrize("num_classes", [2, 3, 13, 16, 33])
def test_all_classes_sum_to_one_in_float64(num_classes):
    # Non-powers of two: leaves on two depths (the heap needs no padding).
    sampler = random_sampler(num_classes, scale=3.0)
    log_p = sampler.all_log_probs(queries(16), dtype=tf.float64).numpy()
    np.testing.assert_allclose(np.exp(log_p).sum(axis=1), 1.0, rtol=0, atol=1e-12)
    # (The projection runs in float32.)
    np.testing.assert_allclose(log_p, oracle_log_probs(sampler, queries(16)), atol=1e-5)


@pytest.mark.parametrize("num_classes", [2, 13, 64])
def test_log_prob_op_matches_numpy_oracle(num_classes):
    sampler = random_sampler(num_classes, seed=3)
    x = queries(8, seed=4)
    classes = np.random.default_rng(5).integers(0, num_classes, size=(8, 7))
    got = sampler.log_prob(x, classes).numpy()
    want = np.take_along_axis(oracle_log_probs(sampler, x), classes, axis=1)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
    all_ids = np.tile(np.arange(num_classes), (8, 1))
    np.testing.assert_allclose(np.exp(sampler.log_prob(x, all_ids).numpy()).sum(1), 1.0,
                               atol=1e-5)


@pytest.mark.parametrize("unique", [False, True])
def test_candidate_sampler_counts_follow_the_batch_mixture(unique):
    num_classes, num_sampled = 17, 6
    sampler = random_sampler(num_classes, seed=12)
    x = queries(4, seed=13)
    truth = np.array([[0], [3], [16], [3]])
    sampled, true_count, sampled_count = tfs.random.adversarial_candidate_sampler(
        truth, 1, num_sampled, unique, num_classes, seed=4, inputs=x, sampler=sampler)
    mixture = np.exp(oracle_log_probs(sampler, x)).mean(axis=0)
    if unique:
        assert len(set(sampled.numpy())) == num_sampled
        # Counts 1 - (1 - q)^tries for one tries >= num_sampled shared by all.
        q = mixture[sampled.numpy()]
        tries = np.log1p(-sampled_count.numpy()) / np.log1p(-q)
        np.testing.assert_allclose(tries, tries[0], rtol=1e-3)
        assert tries[0] >= num_sampled - 1e-3
    else:
        np.testing.assert_allclose(sampled_count.numpy(), num_sampled * mixture[sampled.numpy()],
                                   rtol=1e-4)
        np.testing.assert_allclose(true_count.numpy()[:, 0], num_sampled * mixture[truth[:, 0]],
                                   rtol=1e-4)
    draws = tfs.random.adversarial_candidate_sampler(
        truth, 1, 30_000, False, num_classes, seed=5, inputs=x, sampler=sampler)[0].numpy()
    assert chi_square_p_value(np.bincount(draws, minlength=num_classes), mixture) > P_THRESHOLD


def test_serving_function_has_no_custom_ops():
    sampler = random_sampler(11)
    fn = tf.function(sampler.correct_logits).get_concrete_function(
        tf.TensorSpec([None, 11]), tf.TensorSpec([None, 5]))
    op_types = {op.type for op in fn.graph.get_operations()}
    assert not [t for t in op_types if t.startswith("TfSampled")], op_types
    logits = np.zeros((3, 11), np.float32)
    np.testing.assert_allclose(fn(logits, queries(3)).numpy(),
                               oracle_log_probs(sampler, queries(3)), atol=1e-5)


# --------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------

def test_fitted_tree_beats_class_frequencies_on_hierarchical_data():
    draw = hierarchical_data()
    rng = np.random.default_rng(1)
    x, y = draw(20_000, rng)
    x_test, y_test = draw(4_000, rng)
    sampler = AdversarialSampler.fit(x, y, 256, projection_dim=16)
    tree_ll = sampler.log_prob(x_test, y_test[:, None]).numpy().mean()
    counts = np.bincount(y, minlength=256) + 1.0
    frequency_ll = np.log(counts / counts.sum())[y_test].mean()
    # Measured: tree -1.61, frequencies -4.84, uniform -5.55 nats.
    assert tree_ll > frequency_ll + 2.0, (tree_ll, frequency_ll)


def test_fit_gives_unseen_classes_a_leaf_and_is_deterministic():
    rng = np.random.default_rng(2)
    num_classes = 50
    x = rng.normal(size=(400, 6)).astype(np.float32)
    y = rng.integers(0, 30, size=400)  # classes 30..49 never seen
    fits = [AdversarialSampler.fit(x, y, num_classes, projection_dim=4) for _ in range(2)]
    state = fits[0].get_state()
    np.testing.assert_array_equal(np.sort(state["leaf_of_class"]), np.arange(num_classes))
    np.testing.assert_array_equal(state["class_of_leaf"][state["leaf_of_class"]],
                                  np.arange(num_classes))
    for key, value in fits[1].get_state().items():
        np.testing.assert_array_equal(value, state[key])
    log_p = fits[0].all_log_probs(x[:20], dtype=tf.float64).numpy()
    assert np.all(np.isfinite(log_p)) and np.all(log_p[:, 30:] > -60)
    np.testing.assert_allclose(np.exp(log_p).sum(1), 1.0, atol=1e-12)


def test_theorem_correction_recovers_conditional_log_probs():
    """Trained by negative sampling against p_n, xi + log p_n equals
    log p(y|x) - log S; xi alone is off by log p_n(y|x) (Bamler & Mandt Thm. 1)."""
    rng = np.random.default_rng(0)
    num_x, num_classes, dim, num_sampled = 4, 8, 3, 8
    points = (rng.normal(size=(num_x, dim)) * 2).astype(np.float32)
    true_p = np.exp(rng.normal(size=(num_x, num_classes)) * 1.5)
    true_p /= true_p.sum(axis=1, keepdims=True)
    xs = rng.integers(num_x, size=4000)
    ys = np.array([rng.choice(num_classes, p=true_p[i]) for i in xs])
    sampler = AdversarialSampler.fit(points[xs], ys, num_classes, projection_dim=2)
    # xi_y(x) = W[y, x] + b_y: a table, flexible enough for any optimum.
    W = tf.Variable(tf.zeros([num_classes, num_x]))
    b = tf.Variable(tf.zeros([num_classes]))
    optimizer = tf.keras.optimizers.Adam(0.05)
    log_p = tf.constant(np.log(true_p), tf.float32)
    tf.random.set_seed(0)

    @tf.function
    def step():
        idx = tf.random.uniform([512], 0, num_x, tf.int64)
        labels = tf.random.categorical(tf.gather(log_p, idx), 1)
        cands = sampler.sample(tf.gather(points, idx), num_sampled, true_classes=labels)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tfs.nn.negative_sampling_loss(
                W, b, labels, tf.one_hot(idx, num_x), cands))
        optimizer.apply_gradients(zip(tape.gradient(loss, [W, b]), [W, b]))

    for _ in range(1500):
        step()
    xi = (tf.transpose(W) + b).numpy()

    def deviation(scores):
        """Worst probability-weighted RMS of scores - log p, per-x constant removed."""
        d = scores - np.log(true_p)
        d -= (true_p * d).sum(axis=1, keepdims=True)
        return np.sqrt((true_p * d ** 2).sum(axis=1)).max()

    # Measured 0.08 corrected, 0.73 uncorrected.
    assert deviation(sampler.correct_logits(xi, points).numpy()) < 0.2
    assert deviation(xi) > 0.4


# --------------------------------------------------------------------------
# Persistence, the loss
# --------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    sampler = random_sampler(21, seed=16)
    x = queries(3, seed=17)
    path = str(tmp_path / "aux.npz")
    sampler.sample(x, 2, seed=None)  # advances the stream, which the file holds
    sampler.save(path)
    loaded = AdversarialSampler.load(path)
    np.testing.assert_array_equal(loaded.all_log_probs(x).numpy(),
                                  sampler.all_log_probs(x).numpy())
    assert int(loaded.stream.counter.numpy()) == 1
    np.testing.assert_array_equal(loaded.sample(x, 6, seed=None).ids.numpy(),
                                  sampler.sample(x, 6, seed=None).ids.numpy())
    # A file written before streams (no stream state) loads with a fresh stream.
    with np.load(path) as data:
        arrays = {key: data[key] for key in data if not key.startswith("stream_")}
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    assert int(AdversarialSampler.load(path).stream.counter.numpy()) == 0
    np.save(str(tmp_path / "junk.npy"), np.zeros(3))
    with open(str(tmp_path / "junk.npz"), "wb") as f:
        np.savez(f, params=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="not an AdversarialSampler file"):
        AdversarialSampler.load(str(tmp_path / "junk.npz"))


@pytest.mark.parametrize("regularizer", [0.0, 0.3])
def test_negative_sampling_loss_matches_numpy(regularizer):
    rng = np.random.default_rng(19)
    batch, dim, num_classes, num_sampled = 4, 3, 10, 5
    W = rng.normal(size=(num_classes, dim)).astype(np.float32)
    b = rng.normal(size=num_classes).astype(np.float32)
    h = rng.normal(size=(batch, dim)).astype(np.float32)
    labels = rng.integers(0, num_classes, size=(batch, 1))
    ids = rng.integers(0, num_classes, size=(batch, num_sampled))
    log_q = -rng.random((batch, num_sampled)).astype(np.float32) * 3
    true_log_q = -rng.random((batch, 1)).astype(np.float32) * 3
    cands = tfs.samplers.SampledCandidates(ids, log_q, true_log_q)
    got = tfs.nn.negative_sampling_loss(W, b, labels, h, cands, regularizer=regularizer).numpy()
    logits = h @ W.T + b
    xi_y = np.take_along_axis(logits, labels, 1)
    xi_s = np.take_along_axis(logits, ids, 1)
    log_sig = lambda z: -np.logaddexp(0, -z)  # noqa: E731
    want = -log_sig(xi_y)[:, 0] - log_sig(-xi_s).sum(1) + regularizer * (
        ((xi_y + true_log_q) ** 2).sum(1) + ((xi_s + log_q) ** 2).sum(1))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # TensorFlow's triple: log p_n = log(count / S).
    shared = ids[0]
    triple = (shared, np.exp(true_log_q) * num_sampled,
              np.exp(log_q[0]).astype(np.float32) * num_sampled)
    got = tfs.nn.negative_sampling_loss(W, b, labels, h, triple, regularizer=regularizer).numpy()
    xi_s = logits[:, shared]
    want = -log_sig(xi_y)[:, 0] - log_sig(-xi_s).sum(1) + regularizer * (
        ((xi_y + true_log_q) ** 2).sum(1) + ((xi_s + log_q[0]) ** 2).sum(1))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_works_with_sampled_softmax_loss():
    sampler = random_sampler(30, dim=5, seed=20)
    W = tf.Variable(np.random.default_rng(21).normal(size=(30, 5)).astype(np.float32))
    x = queries(4, seed=22)
    labels = np.array([[1], [2], [3], [4]])
    loss = tfs.nn.sampled_softmax_loss(W, None, labels, x,
                                       sampler.sample(x, 8, true_classes=labels, seed=1))
    assert loss.shape == (4,) and np.all(np.isfinite(loss.numpy()))
    triple = tfs.random.adversarial_candidate_sampler(labels, 1, 8, True, 30, inputs=x,
                                                      sampler=sampler)
    loss = tf.nn.sampled_softmax_loss(W, tf.zeros([30]), labels, x, 8, 30,
                                      sampled_values=triple)
    assert np.all(np.isfinite(loss.numpy()))


def test_keras_layer_trains_with_a_saved_adversarial_sampler(tmp_path):
    import keras
    from layer_models import NUM_FEATURES, task
    num_classes = 40
    x, y = task(num_classes, n=1024)
    path = str(tmp_path / "aux.npz")
    AdversarialSampler.fit(x, y, num_classes, projection_dim=4).save(path)
    keras.utils.set_random_seed(0)
    inputs = keras.Input([NUM_FEATURES])
    outputs = tfs.layers.SampledSoftmax(num_classes, num_sampled=8, sampler="adversarial",
                                        sampler_options={"path": path})(inputs)
    model = tfs.layers.SampledSoftmaxModel(inputs, outputs)
    model.compile(tfs.optimizers.LazyAdam(0.05))
    before = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    model.fit(x, y, batch_size=128, epochs=3, verbose=0)
    after = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    assert after < before - 0.5, (before, after)
    model.save(str(tmp_path / "m.keras"))
    restored = keras.models.load_model(str(tmp_path / "m.keras"))
    np.testing.assert_allclose(restored.predict(x[:8], verbose=0), model.predict(x[:8], verbose=0),
                               atol=1e-5)
    with pytest.raises(ValueError, match="path"):
        tfs.layers.SampledSoftmax(num_classes, num_sampled=8, sampler="adversarial")
