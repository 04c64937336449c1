"""examples/compare_samplers.py end to end on tiny budgets: every objective, its outputs.

Runs in-process on a slice of the bundled WordNet task and on lm1b from
TensorFlow Datasets' mock data (offline).
"""

import csv
import dataclasses
import os
import re
import subprocess
import sys

import types

import numpy as np
import pytest
import tensorflow as tf

import tf_sampled as tfs

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(_REPO, "examples"))
import compare_report  # noqa: E402  pylint: disable=wrong-import-position
import compare_samplers  # noqa: E402  pylint: disable=wrong-import-position
import sampler_objectives  # noqa: E402  pylint: disable=wrong-import-position


def _ops_available():
    try:
        tfs.load_ops()
        return True
    except Exception:  # pylint: disable=broad-except
        return False


needs_ops = pytest.mark.skipif(not _ops_available(), reason="tf_sampled op library not built")
_TINY = compare_samplers.RunConfig(
    num_sampled=8, steps=4, batch_size=32, eval_every=2, eval_every_s=0, eval_examples=256,
    leaf_size=64, num_features=16, refresh_every=2,
    lsh_options=dict(num_tables=4, num_hashes=6, rehash_every=4))


@pytest.fixture(scope="module")
def wordnet():
    data = tfs.datasets.load_wordnet()
    return dataclasses.replace(data, x_train=data.x_train[:2048], y_train=data.y_train[:2048])


def _labels(objectives, num_classes, num_sampled=_TINY.num_sampled):
    return [sampler_objectives.parse_objective(o, num_sampled, num_classes).label
            for o in objectives]


def _check_outputs(summary, objectives, out, evaluations, num_classes=20206):
    objectives = _labels(objectives, num_classes)
    assert [s["objective"] for s in summary] == objectives
    for s in summary:
        assert np.isfinite(s["val_ce"]) and 0 < s["val_ce"] < 20
        assert 0 <= s["top1"] <= s["top5"] <= 1 and s["ms_per_step"] > 0
    with open(out / "curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == evaluations * len(objectives)
    with open(out / "summary.csv") as f:
        assert [r["objective"] for r in csv.DictReader(f)] == objectives
    assert (out / "val_ce.png").stat().st_size > 1000


def test_tf_nn_objectives_and_table(wordnet, tmp_path, capsys):
    objectives = ["full", "uniform", "log_uniform", "unigram", "log_uniform@32"]
    summary = compare_samplers.run(objectives, [0], str(tmp_path), wordnet, _TINY)
    _check_outputs(summary, objectives, tmp_path, evaluations=2)
    printed = capsys.readouterr().out
    best = min(summary[1:], key=lambda s: s["val_ce"])  # the built-ins
    assert f"| {best['objective']}" in printed and "x best built-in" in printed
    assert f"the best built-in configuration, {best['objective']}" in printed
    assert "perplexity" not in printed  # not a language model
    assert best["vs_best"] == 1.0  # reaches its own final loss, at its own time
    assert best["steps_to_target"] <= 4


def _rec(obj, seed, step, t, ce):
    return dict(objective=obj, seed=seed, step=step, train_time_s=t, val_ce=ce,
                top1=0.1, top5=0.2)


def test_summary_reads_the_seed_mean_curve_against_the_best_builtin():
    records = [_rec("log_uniform@16", 0, 10, 1.0, 5.0), _rec("log_uniform@16", 0, 20, 2.0, 4.0),
               _rec("log_uniform@16", 1, 10, 1.0, 5.0), _rec("log_uniform@16", 1, 20, 2.0, 3.0),
               _rec("unigram@16", 0, 10, 1.0, 6.0), _rec("unigram@16", 0, 20, 2.0, 5.0),
               _rec("kernel@16", 0, 10, 4.0, 3.4), _rec("kernel@16", 0, 20, 8.0, 3.0),
               _rec("kernel@16", 1, 10, 3.0, 3.6), _rec("kernel@16", 1, 20, 6.0, 3.4),
               _rec("full", 0, 10, 9.0, 3.9)]
    objectives = ["log_uniform@16", "unigram@16", "kernel@16", "full"]
    summary, target, best = compare_report.summarize(
        records, objectives, ["log_uniform@16", "unigram@16"])
    assert best == "log_uniform@16" and target == 3.5  # mean of its final losses
    base, unigram, kernel, full = summary
    # The mean curve: 5.0 at t = 1, 3.5 at t = 2: reached at its end.
    assert base["time_to_target_s"] == 2.0 and base["vs_best"] == 1.0
    assert np.isnan(unigram["time_to_target_s"]) and np.isnan(unigram["vs_best"])
    # Seeds at t = 4 (3.4), 6 (3.4 / seed 0 interpolated 3.2), 8 (3.0 / held 3.4):
    # from t = 4 on (the later first evaluation), 3.4 and 3.5 at t = 4 -> 3.45.
    assert kernel["val_ce"] == 3.2 and kernel["ms_per_step"] == 350.0
    assert kernel["time_to_target_s"] == pytest.approx(4.0)
    assert kernel["vs_best"] == pytest.approx(2.0)
    assert np.isnan(full["time_to_target_s"])
    # Crossings are interpolated between evaluations.
    curve = (np.array([0.0, 10.0]), np.array([0.0, 100.0]), np.array([5.0, 3.0]))
    assert compare_report.time_to_reach(curve, 4.5) == pytest.approx((2.5, 25.0))
    assert compare_report.time_to_reach(curve, 2.0) is None


def test_objective_specs():
    parse = sampler_objectives.parse_objective
    assert parse("log_uniform@1024", 16, 20000).label == "log_uniform@1024"
    assert parse("kernel", 16, 20000) == sampler_objectives.Objective("kernel", 16)
    assert parse("full", 16, 20000).label == "full" and parse("unigram", 8, 100).builtin
    # The layer's default S unless given: 1024, at most C - 1.
    assert parse("layer", 16, 20000).label == "layer@1024"
    assert parse("layer", 16, 500).label == "layer@499"
    assert parse("layer@64", 16, 500).label == "layer@64" and not parse("layer", 8, 100).builtin
    for spec, message in [("nope@16", "Unknown objective 'nope'"),
                          ("kernel@", "positive integer, got ''"),
                          ("kernel@x", "positive integer, got 'x'"),
                          ("kernel@-3", "positive integer, got '-3'"),
                          ("full@16", "full softmax takes no @S"),
                          ("log_uniform@0", r"S = 0 must be in \[1, 100\)"),
                          ("log_uniform@100", r"S = 100 must be in \[1, 100\)")]:
        with pytest.raises(ValueError, match=message):
            parse(spec, 16, 100)


def test_kernel_tree_head_options():
    counts = np.ones(50)
    head = sampler_objectives.head_options("kernel_tree", 8, counts, 0, refresh_every=10)
    assert (head["refresh_touched"], head["refresh_every"]) == (False, 10)
    assert head["sampler"] == "kernel" and head["sampler_options"]["prior_weight"] == 0.0
    assert "prior_weight" not in sampler_objectives.head_options("kernel", 8, counts, 0)[
        "sampler_options"]  # the sampler's default
    assert sampler_objectives.head_options("layer", 8, counts, 0) == dict(num_sampled=8, seed=0)


@needs_ops
def test_kernel_objectives(wordnet, tmp_path):
    objectives = ["log_uniform", "kernel", "kernel_shared"]
    summary = compare_samplers.run(objectives, [0], str(tmp_path), wordnet, _TINY)
    _check_outputs(summary, objectives, tmp_path, evaluations=2)


def test_sweep_and_interleaved_rounds(wordnet, tmp_path, capsys):
    config = dataclasses.replace(_TINY, sweep=True, round_steps=1)
    wordnet_small = dataclasses.replace(wordnet, num_classes=300)  # S < 300 kept
    wordnet_small = dataclasses.replace(
        wordnet_small, y_train=wordnet.y_train % 300, y_val=wordnet.y_val % 300,
        class_counts=np.bincount(wordnet.y_train % 300, minlength=300))
    summary = compare_samplers.run(["full", "log_uniform@16"], [0], str(tmp_path),
                                   wordnet_small, config)
    labels = [s["objective"] for s in summary]
    # The sweep's sizes below 300, log_uniform@16 not twice.
    assert labels == ["full", "log_uniform@16", "log_uniform@64", "log_uniform@256",
                      "unigram@16", "unigram@64", "unigram@256"]
    printed = capsys.readouterr().out
    # Rounds of one step: every objective's evaluation at step 2 comes before
    # any at step 4 (one after the other, full would reach step 4 first).
    evals = [(m[1], int(m[2])) for m in re.finditer(r"\[\s*(\S+) seed 0\] step\s+(\d+)",
                                                     printed)]
    assert evals == [(label, 2) for label in labels] + [(label, 4) for label in labels]


@pytest.mark.slow  # 14 objectives, each traced: a few minutes on 2 loaded cores
@needs_ops
def test_every_tf_sampled_objective(wordnet, tmp_path):
    # The adversarial sampler needs at least as many examples as classes to
    # fit: it has its own test below.
    objectives = [o for o in sampler_objectives.OBJECTIVES
                  if o not in ("full", "uniform", "log_uniform", "unigram")
                  + sampler_objectives.ADVERSARIAL_OBJECTIVES]
    summary = compare_samplers.run(objectives, [0], str(tmp_path), wordnet, _TINY)
    _check_outputs(summary, objectives, tmp_path, evaluations=2)


@pytest.fixture(scope="module")
def synthetic():
    # At least as many training examples as classes: the adversarial tree's fit needs it.
    return tfs.datasets.load("synthetic", num_classes=500, num_train=4096, num_val=512,
                             vocab_size=2000)


@needs_ops
def test_adversarial_objective_fits_then_trains(synthetic, tmp_path, capsys):
    data = synthetic
    summary = compare_samplers.run(["log_uniform", "adversarial"], [0], str(tmp_path), data,
                                   _TINY)
    _check_outputs(summary, ["log_uniform", "adversarial"], tmp_path, evaluations=2)
    assert "AdversarialSampler: auxiliary tree fitted on 4096 frozen-encoder features" in \
        capsys.readouterr().out
    with pytest.raises(ValueError, match="needs aux_features"):
        sampler_objectives.make_loss_fn("adversarial", None, None, 8, None, 0)


@needs_ops
def test_negative_sampling_objectives(synthetic, tmp_path, capsys):
    objectives = ["uniform_ns", "unigram_ns", "adversarial_ns"]
    summary = compare_samplers.run(objectives, [0], str(tmp_path), synthetic, _TINY)
    _check_outputs(summary, objectives, tmp_path, evaluations=2)
    with open(tmp_path / "curves.csv") as f:  # the logistic loss of 1 + S terms
        assert all(0 < float(r["train_loss"]) < 100 for r in csv.DictReader(f))
    assert "| adversarial_ns" in capsys.readouterr().out


def _oracle(scores, y):
    """(mean CE, top-1, top-5) of float64 scores [n, C] with NumPy."""
    scores = scores.astype(np.float64)
    true = scores[np.arange(len(y)), y]
    top = scores.max(axis=1)
    ce = top + np.log(np.exp(scores - top[:, None]).sum(axis=1)) - true
    rank = (scores > true[:, None]).sum(axis=1)
    return np.array([ce.mean(), (rank < 1).mean(), (rank < 5).mean()])


@needs_ops
def test_evaluation_adds_the_noise_correction():
    # A tiny model: x is one token, h its row of a fixed table (dim 8); the
    # adversarial tree reads other features of x (dim 16), not h.
    rng = np.random.default_rng(0)
    num_classes, vocab, n = 20, 50, 64
    h_table = tf.constant(rng.normal(size=(vocab, 8)), tf.float32)
    f_table = tf.constant(rng.normal(size=(vocab, 16)), tf.float32)
    encoder = lambda x: tf.gather(h_table, x[:, 0])  # noqa: E731
    featurize = lambda x: tf.gather(f_table, x[:, 0])  # noqa: E731
    W = tf.Variable(rng.normal(size=(num_classes, 8)).astype(np.float32))
    b = tf.Variable(rng.normal(size=num_classes).astype(np.float32))
    x_val = rng.integers(0, vocab, (n, 1)).astype(np.int32)
    y_val = rng.integers(0, num_classes, n).astype(np.int64)
    data = types.SimpleNamespace(x_val=x_val, y_val=y_val, num_classes=num_classes)
    logits = (encoder(x_val) @ tf.transpose(W) + b).numpy()
    counts = rng.integers(0, 30, num_classes)
    aux = (featurize, rng.integers(0, vocab, (400, 1)).astype(np.int32),
           rng.integers(0, num_classes, 400).astype(np.int64))

    def evaluate(objective):
        options = sampler_objectives.head_options(objective, 4, counts, 0)
        head = None
        if options is not None:  # the layer's own noise, as in training
            head = tfs.layers.SampledSoftmax(num_classes, **options)
            head.build((None, 8))
        _, sampler = sampler_objectives.make_loss_fn(objective, W, b, 4, counts, 0,
                                                     aux_features=aux, head=head)
        correction = sampler_objectives.noise_correction(objective, sampler)
        query = featurize if objective == "adversarial_ns" else None
        return compare_samplers.make_evaluate(data, encoder, W, b, n, correction,
                                              query)(), sampler

    plain = _oracle(logits, y_val)
    np.testing.assert_allclose(
        compare_samplers.make_evaluate(data, encoder, W, b, n)(), plain, rtol=1e-5)
    # Uniform noise adds the same log(1/C) to every class: nothing changes.
    np.testing.assert_allclose(evaluate("uniform_ns")[0], plain, rtol=1e-5)
    # Unigram noise adds log of the (add-one) train frequencies.
    log_freq = np.log((counts + 1) / (counts + 1).sum())
    unigram = _oracle(logits + log_freq, y_val)
    assert not np.allclose(unigram, plain)
    np.testing.assert_allclose(evaluate("unigram_ns")[0], unigram, rtol=1e-5)
    # The tree's log p_n(y|x) of every class, queried with featurize(x), not h.
    got, tree = evaluate("adversarial_ns")
    log_pn = tree.all_log_probs(featurize(x_val)).numpy()
    np.testing.assert_allclose(got, _oracle(logits + log_pn, y_val), rtol=1e-4)
    assert sampler_objectives.noise_correction("adversarial", tree) is None


def test_time_budget_ends_training(wordnet, tmp_path):
    config = dataclasses.replace(_TINY, steps=0, time_budget_s=1e-9, eval_every=0)
    summary = compare_samplers.run(["log_uniform"], [0], str(tmp_path), wordnet, config)
    assert summary[0]["steps"] == 1  # one step exceeds any positive budget
    with pytest.raises(ValueError, match="steps or time_budget_s"):
        compare_samplers.run(["full"], [0], str(tmp_path), wordnet,
                             dataclasses.replace(_TINY, steps=0))
    with pytest.raises(ValueError, match="Unknown objective 'nope'"):
        compare_samplers.run(["nope"], [0], str(tmp_path), wordnet, _TINY)


def test_language_model_on_tfds_mock_data(tmp_path, capsys):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=200):
        data = tfs.datasets.load("lm1b", vocab_size=300, context=4)
    assert data.ordered and data.language_model
    summary = compare_samplers.run(["full", "log_uniform"], [0], str(tmp_path), data,
                                   dataclasses.replace(_TINY, optimizer="lazy_adam"))
    _check_outputs(summary, ["full", "log_uniform"], tmp_path, evaluations=2)
    assert "perplexity" in capsys.readouterr().out
    assert summary[0]["perplexity"] == pytest.approx(np.exp(summary[0]["val_ce"]))


@pytest.mark.slow  # a fresh process importing TensorFlow
def test_command_line(tmp_path):
    # The script as users run it: flags, dataset choice, outputs.
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, os.path.join(_REPO, "examples", "compare_samplers.py"),
         "--dataset=synthetic", "--num_classes=5000", "--objectives=log_uniform",
         "--steps=3", "--eval_every=3", "--batch_size=16", f"--output_dir={out}"],
        capture_output=True, text=True, cwd=_REPO, check=False,
        env=dict(os.environ, PYTHONPATH=_REPO))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "synthetic Zipfian teacher, 5000 classes" in result.stdout
    assert (out / "summary.csv").exists() and (out / "val_ce.png").exists()
