"""SampledSoftmax(loss="negative_sampling"): the corrected scores xi + log p_n(y|x).

Inference, top-k, probabilities and the chunked evaluation use logits +
log p_n against NumPy oracles; a fit on hierarchical data recovers the
softmax only with the correction; config, .keras and SavedModel round trips;
the combinations the correction does not hold for are refused.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sampled as tfs
from layer_models import build, hidden, task
from test_adversarial_sampler import hierarchical_data, oracle_log_probs, random_sampler
from test_layer_persistence import SERVE, run_python, saved_model_ops
from test_sampled_softmax_layer import training_graph_tensors

C = 203  # not a power of two: the tree has leaves on two levels
COUNTS = np.random.default_rng(0).integers(1, 50, size=C).astype(float)
NS = dict(loss="negative_sampling", num_sampled=8, seed=3)


def adversarial_options(directory, num_classes=C, dim=16):
    """sampler="adversarial" options with a random tree for the Dense(16) trunk's outputs."""
    path = directory / f"aux_{num_classes}_{dim}.npz"
    if not path.exists():
        random_sampler(num_classes, dim=dim, seed=1).save(str(path))
    return dict(sampler="adversarial", sampler_options={"path": str(path)})


def sampler_args(kind, directory):
    if kind == "adversarial":
        return adversarial_options(directory)
    if kind == "unigram":
        return dict(sampler="unigram", sampler_options={"counts": list(COUNTS)})
    return dict(sampler=kind)


def noise_oracle(kind, head, h, y):
    """log p_n(y|h) of every class in NumPy: [batch or 1, C] (y: the labels trained on)."""
    if kind == "adversarial":
        return oracle_log_probs(head.sampler, h)
    if kind == "uniform":
        return np.full([1, C], -np.log(C))
    if kind == "log_uniform":
        k = np.arange(C, dtype=np.float64)
        return np.log(np.log1p(1 / (k + 1)) / np.log(C + 1))[None]
    # learned_unigram: one per class, plus the labels of one epoch.
    counts = COUNTS if kind == "unigram" else 1.0 + np.bincount(y, minlength=C)
    return np.log(counts / counts.sum())[None]


def softmax_stats(scores, y):
    """Cross-entropy [n] and rank [n] of the true classes under scores [n, C], float64."""
    scores = scores.astype(np.float64)
    lse = scores.max(1) + np.log(np.exp(scores - scores.max(1, keepdims=True)).sum(1))
    true = scores[np.arange(len(y)), y]
    return lse - true, (scores > true[:, None]).sum(1)


# --------------------------------------------------------------------------
# The corrected scores
# --------------------------------------------------------------------------

@pytest.mark.parametrize("num_classes", [2, 3, 13, 16, 33])
def test_subtrees_partition_the_classes_and_match_the_oracle(num_classes):
    sampler = random_sampler(num_classes, scale=2.0, seed=num_classes)
    x = np.random.default_rng(2).normal(size=(4, 5)).astype(np.float32)
    want = oracle_log_probs(sampler, x)
    chunk = tf.function(sampler.subtree_log_probs)
    for per in (1, 3, sampler.num_subtrees):
        seen = []
        for start in range(0, sampler.num_subtrees, per):
            ids, log_p = chunk(x, tf.constant(start),
                               tf.constant(min(start + per, sampler.num_subtrees)))
            assert len(ids) <= 2 * per
            np.testing.assert_allclose(log_p.numpy(), want[:, ids.numpy()], atol=1e-5)
            seen += list(ids.numpy())
        assert sorted(seen) == list(range(num_classes))


@pytest.mark.parametrize("kind", ["adversarial", "uniform", "log_uniform", "unigram",
                                  "learned_unigram"])
def test_call_predict_and_evaluate_use_logits_plus_log_noise(kind, tmp_path):
    x, y = task(C, n=256)
    model = build(C, eval_chunk_size=7, bias_initializer="random_normal", **NS,
                  **sampler_args(kind, tmp_path))
    model.compile(tfs.optimizers.LazyAdam(0.02))
    if kind == "learned_unigram":  # its noise moves with training: counts from 1 to 1 + seen
        model.fit(x, y, epochs=1, batch_size=128, verbose=0)
    head = model.sampled_softmax
    h = hidden(model, x)
    logits = h @ head.embeddings.numpy().T + head.bias.numpy()
    scores = logits + noise_oracle(kind, head, h, y)
    np.testing.assert_allclose(model.predict(x, verbose=0), scores, rtol=1e-5, atol=2e-5)
    # evaluate: chunks of 7 classes (3 subtrees for the tree) against the full scores.
    result = model.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    ce, rank = softmax_stats(scores, y)
    assert result["loss"] == pytest.approx(ce.mean(), rel=1e-4)
    assert result["top_1_accuracy"] == pytest.approx((rank < 1).mean(), abs=1e-6)
    assert result["top_5_accuracy"] == pytest.approx((rank < 5).mean(), abs=1e-6)
    if kind != "uniform":  # (uniform's correction is a constant)
        _, plain_rank = softmax_stats(logits, y)
        assert not np.array_equal(rank, plain_rank)


def test_probabilities_and_top_k_rank_the_corrected_scores(tmp_path):
    args = dict(NS, **adversarial_options(tmp_path))
    layer = tfs.layers.SampledSoftmax(C, output="probabilities", top_k=4, **args)
    h = np.random.default_rng(3).normal(size=(32, 16)).astype(np.float32)
    result = layer(h)
    scores = (h @ layer.embeddings.numpy().T + layer.bias.numpy()
              + oracle_log_probs(layer.sampler, h))
    probs = np.exp(scores - scores.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    np.testing.assert_array_equal(result["ids"].numpy(), np.argsort(-scores, axis=1)[:, :4])
    np.testing.assert_allclose(result["scores"].numpy(), -np.sort(-probs, axis=1)[:, :4],
                               rtol=1e-4, atol=1e-7)
    # The correction changes the ranking (else this test would prove nothing).
    plain = h @ layer.embeddings.numpy().T + layer.bias.numpy()
    assert not np.array_equal(np.argsort(-plain, axis=1)[:, :4], result["ids"].numpy())


class FixedUniform(tfs.samplers.Uniform):
    """Uniform noise that returns the same given negatives at every call."""

    def __init__(self, num_classes, ids):
        super().__init__(num_classes)
        self.ids = tf.constant(ids)

    def sample(self, inputs, num_sampled, true_classes=None, seed=None):
        log_q = tf.fill(tf.shape(self.ids), -tf.math.log(float(self.num_classes)))
        return tfs.samplers.SampledCandidates(self.ids, log_q, log_q[:, :1])


def test_sampled_loss_is_the_negative_sampling_loss_and_ess_weights_are_exp_xi():
    rng = np.random.default_rng(4)
    batch, num_sampled = 6, 5
    ids = rng.integers(0, C, size=(batch, num_sampled))
    labels = rng.integers(0, C, size=batch)
    layer = tfs.layers.SampledSoftmax(
        C, num_sampled=num_sampled, sampler=FixedUniform(C, ids), loss="negative_sampling",
        negative_sampling_regularizer=0.3, bias_initializer="random_normal", ess_rows=4)
    h = rng.normal(size=(batch, 7)).astype(np.float32)
    losses, touched, ess = layer.sampled_loss(h, labels)
    W, b = layer.embeddings.numpy(), layer.bias.numpy()
    log_sig = lambda z: -np.logaddexp(0, -z)  # noqa: E731
    xi_y = (h * W[labels]).sum(1) + b[labels]
    xi_s = np.einsum("bd,bsd->bs", h, W[ids]) + b[ids]
    log_p = -np.log(C)
    want = -log_sig(xi_y) - log_sig(-xi_s).sum(1) + 0.3 * (
        (xi_y + log_p) ** 2 + ((xi_s + log_p) ** 2).sum(1))  # accidental hits kept
    np.testing.assert_allclose(losses.numpy(), want, rtol=1e-5)
    np.testing.assert_array_equal(np.sort(touched.numpy()),
                                  np.sort(np.concatenate([labels, ids.ravel()])))
    w = np.exp(xi_s[:4].astype(np.float64))  # model exp(xi + log p_n) / proposal p_n
    np.testing.assert_allclose(ess.numpy(), w.sum(1) ** 2 / (w ** 2).sum(1) / num_sampled,
                               rtol=1e-4)


def test_training_step_never_holds_a_num_classes_tensor(tmp_path):
    num_classes = 1009  # a size no other dimension has
    model = build(num_classes, **NS, **adversarial_options(tmp_path, num_classes))
    model.compile(tfs.optimizers.LazyAdam())
    # No log p_n of all classes (that is inference only). The tree's state
    # ([C, k + 1] params, [C] permutations) goes to the sampling op whole, as
    # variable reads; nothing [.., C] is computed.
    big = [(op, shape) for op, shape, _ in training_graph_tensors(model)
           if shape.rank and num_classes in shape.as_list() and op != "ReadVariableOp"]
    assert not big, big


# --------------------------------------------------------------------------
# The theorem, through the layer
# --------------------------------------------------------------------------

def test_fit_on_hierarchical_data_recovers_the_softmax_only_with_the_correction(tmp_path):
    num_classes, dim = 128, 32
    draw = hierarchical_data(num_classes, dim, seed=0)
    rng = np.random.default_rng(1)
    x, y = draw(8192, rng)
    x_val, y_val = draw(2048, rng)
    path = str(tmp_path / "hier.npz")
    tfs.samplers.AdversarialSampler.fit(x, y, num_classes).save(path)
    results = {}
    for name, sampler in [("adversarial", dict(sampler="adversarial",
                                               sampler_options={"path": path})),
                          ("uniform", dict(sampler="uniform"))]:
        keras.utils.set_random_seed(0)
        inputs = keras.Input([dim], name="features")
        outputs = tfs.layers.SampledSoftmax(num_classes, **NS, **sampler)(inputs)
        model = tfs.layers.SampledSoftmaxModel(inputs, outputs)
        model.compile(tfs.optimizers.LazyAdam(0.02))
        before = model.evaluate(x_val, y_val, batch_size=512, verbose=0, return_dict=True)
        model.fit(x, y, epochs=3, batch_size=256, verbose=0)
        after = model.evaluate(x_val, y_val, batch_size=512, verbose=0, return_dict=True)
        head = model.sampled_softmax
        plain_ce, _ = softmax_stats(x_val @ head.embeddings.numpy().T + head.bias.numpy(), y_val)
        results[name] = (before["loss"], after["loss"], plain_ce.mean())
    before, after, plain = results["adversarial"]
    # Measured: before 3.10 (p_n alone), after 1.03, uncorrected logits 7.52;
    # uniform noise after the same steps 1.24 (its correction is a constant).
    assert after < before - 1.5, results
    assert plain > after + 4.0, results
    assert after < results["uniform"][1] - 0.1, results
    assert results["uniform"][2] == pytest.approx(results["uniform"][1], rel=1e-4)


# --------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An adversarial negative-sampling model after one epoch, and its data."""
    directory = tmp_path_factory.mktemp("ns")
    x, y = task(C, n=512)
    model = build(C, negative_sampling_regularizer=0.01, **NS,
                  **adversarial_options(directory))
    model.compile(tfs.optimizers.LazyAdam(0.02))
    model.fit(x, y, epochs=1, batch_size=128, verbose=0)
    return model, x, y


def test_config_and_keras_file_round_trip(trained, tmp_path):
    model, x, y = trained
    head = model.sampled_softmax
    config = head.get_config()
    assert (config["loss"], config["negative_sampling_regularizer"]) == ("negative_sampling", 0.01)
    assert (config["remove_accidental_hits"], config["subtract_log_q_true"]) == (False, None)
    assert tfs.layers.SampledSoftmax.from_config(config).get_config() == config
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.sampled_softmax.get_config() == config
    np.testing.assert_array_equal(loaded.predict(x[:16], verbose=0),
                                  model.predict(x[:16], verbose=0))
    assert (loaded.evaluate(x, y, verbose=0, return_dict=True)
            == model.evaluate(x, y, verbose=0, return_dict=True))


@pytest.mark.parametrize("kind", ["adversarial", "learned_unigram"])
def test_export_serves_the_corrected_scores_without_custom_ops(kind, trained, tmp_path):
    if kind == "adversarial":
        model, x, _ = trained
    else:  # the noise is a variable (the counts) the export must carry
        x, y = task(C, n=256)
        model = build(C, sampler="learned_unigram", **NS)
        model.compile(tfs.optimizers.LazyAdam(0.02))
        model.fit(x, y, epochs=1, batch_size=128, verbose=0)
    model.export(tmp_path / "served", verbose=False)
    ops = saved_model_ops(tmp_path / "served")
    assert "MatMul" in ops and not [op for op in ops if op.startswith("TfSampled")], ops
    served = tf.saved_model.load(str(tmp_path / "served")).signatures["serving_default"]
    np.testing.assert_allclose(served(features=tf.constant(x[:16]))["output_0"].numpy(),
                               model.predict(x[:16], verbose=0), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_export_serves_in_a_process_without_tf_sampled(trained, tmp_path):
    model, x, _ = trained
    model.export(tmp_path / "served", verbose=False)
    np.save(tmp_path / "x.npy", x[:16])
    result = run_python(SERVE, tmp_path / "served", tmp_path / "x.npy", tmp_path / "y.npy")
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), model.predict(x[:16], verbose=0),
                               rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------

def test_combinations_the_correction_does_not_hold_for_are_named(tmp_path):
    def layer(**args):
        return tfs.layers.SampledSoftmax(C, num_sampled=8, **args)

    with pytest.raises(ValueError, match="loss must be one of.*'nce'"):
        layer(loss="nce")
    for sampler in ("kernel", "lsh",
                    tfs.samplers.KernelSampler(tf.Variable(tf.zeros([C, 4])), leaf_size=16)):
        with pytest.raises(ValueError, match="loss='negative_sampling'.*sampler="):
            layer(loss="negative_sampling", sampler=sampler)
    with pytest.raises(ValueError, match="shared_negatives=True.*sampler='adversarial'"):
        layer(loss="negative_sampling", shared_negatives=True, unique=False,
              **adversarial_options(tmp_path))
    with pytest.raises(ValueError, match="unique=True.*pass unique=False"):
        layer(loss="negative_sampling", sampler="log_uniform", shared_negatives=True)
    with pytest.raises(ValueError, match="remove_accidental_hits=True"):
        layer(loss="negative_sampling", sampler="uniform", remove_accidental_hits=True)
    with pytest.raises(ValueError, match="subtract_log_q_true=False applies to "
                                         "loss='sampled_softmax'"):
        layer(loss="negative_sampling", sampler="uniform", subtract_log_q_true=False)
    with pytest.raises(ValueError, match="negative_sampling_regularizer=0.5 applies to "
                                         "loss='negative_sampling'"):
        layer(negative_sampling_regularizer=0.5)
    for bad in (-1.0, float("nan"), True, "0.1"):
        with pytest.raises(ValueError, match="negative_sampling_regularizer must be"):
            layer(loss="negative_sampling", sampler="uniform",
                  negative_sampling_regularizer=bad)
    # Batch-shared iid draws from an input-free noise are fine.
    shared = build(C, loss="negative_sampling", sampler="log_uniform", shared_negatives=True,
                   unique=False, num_sampled=8)
    shared.compile(keras.optimizers.SGD(0.1))
    x, y = task(C, n=128)
    assert np.isfinite(shared.fit(x, y, verbose=0).history["loss"][-1])
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"labels must be < num_classes={C}"):
        shared.fit(x, np.full([128], C, np.int64), verbose=0)
