"""tfs.distribute.Trainer in one process (the default strategy): training,
evaluation, checkpoints. The multi-process runs are in test_distribute_cluster.py."""
import numpy as np
import pytest
import tensorflow as tf

import tf_sampled as tfs
from layer_models import build, task

C = 100


def batches(x, y, batch=32, seed=3):
    return (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed).repeat()
            .batch(batch, drop_remainder=True))


def make(checkpoint_dir=None, **kwargs):
    model = build(C, sampler="kernel", sampler_options={"leaf_size": 8}, num_sampled=8, seed=1)
    return tfs.distribute.Trainer(model, tfs.optimizers.LazyAdam(0.05),
                                  checkpoint_dir=checkpoint_dir, verbose=False, **kwargs)


def test_fit_trains_and_evaluates_like_the_keras_model():
    x, y = task(C, n=1024)
    trainer = make()
    val = tf.data.Dataset.from_tensor_slices((x, y)).batch(100)
    before = trainer.evaluate(val)
    history = trainer.fit(batches(x, y), 60, validation_data=val, validation_every=30,
                          log_every=20)
    assert [r["step"] for r in history["train"]] == [20, 40, 60]
    assert [r["step"] for r in history["validation"]] == [30, 60]
    after = history["validation"][-1]
    assert after["loss"] < before["loss"] - 1.0, (before, after)
    assert after["perplexity"] == pytest.approx(np.exp(after["loss"]))
    assert 0 < history["train"][-1]["sampler_ess"] <= 1
    assert trainer.step == 60 and trainer.collective_ops() == []
    # The same chunked full softmax as SampledSoftmaxModel.evaluate.
    trainer.model.compile(tfs.optimizers.LazyAdam())
    keras_metrics = trainer.model.evaluate(x, y, batch_size=100, verbose=0, return_dict=True)
    for key in ("loss", "top_1_accuracy", "top_5_accuracy"):
        assert trainer.evaluate(val)[key] == pytest.approx(keras_metrics[key], rel=1e-5), key
    assert trainer.fit(batches(x, y), 60) == {"train": [], "validation": []}
    trainer.check_replicas()


def test_sample_weights():
    x, y = task(C, n=200)
    trainer = make()
    weights = np.r_[np.ones(100), np.zeros(100)].astype(np.float32)
    weighted = trainer.evaluate(tf.data.Dataset.from_tensor_slices((x, y, weights)).batch(64))
    first_half = trainer.evaluate(tf.data.Dataset.from_tensor_slices((x[:100], y[:100])).batch(64))
    assert weighted == pytest.approx(first_half, rel=1e-5)
    history = trainer.fit(tf.data.Dataset.from_tensor_slices((x, y, weights)).repeat()
                          .batch(50, drop_remainder=True), 2, log_every=1)
    assert all(np.isfinite(r["loss"]) for r in history["train"])


def test_resume_repeats_the_uninterrupted_run(tmp_path):
    x, y = task(C, n=512)
    whole = make()
    whole_losses = [r["loss"] for r in whole.fit(batches(x, y), 8, log_every=1)["train"]]

    first = make(str(tmp_path), checkpoint_every=2)
    first.fit(batches(x, y), 5, log_every=1)
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-5")
    resumed = make(str(tmp_path))
    assert resumed.restored_from.endswith("ckpt-5") and resumed.step == 5
    losses = [r["loss"] for r in resumed.fit(batches(x, y), 8, log_every=1)["train"]]
    np.testing.assert_allclose(losses, whole_losses[5:], rtol=1e-6)
    def state(trainer):
        sampler = trainer.model.get_layer("head").sampler
        return list(trainer.model.variables) + list(sampler.variables)

    for a, b in zip(state(whole), state(resumed)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7,
                                   err_msg=a.name)
    # Every 2 steps and at the end of each fit, the last 3 kept.
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".index") == [
        "ckpt-4.index", "ckpt-5.index", "ckpt-8.index"]


def test_sum_duplicate_rows():
    gradient = tf.IndexedSlices(tf.constant([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
                                tf.constant([7, 2, 7], tf.int64), tf.constant([10, 2], tf.int64))
    summed = tfs.distribute.trainer.sum_duplicate_rows(gradient)
    np.testing.assert_array_equal(summed.indices, [7, 2])
    np.testing.assert_array_equal(summed.values, [[6.0, 8.0], [3.0, 4.0]])
    np.testing.assert_array_equal(tf.convert_to_tensor(summed), tf.convert_to_tensor(gradient))
    dense = tf.ones([2])
    assert tfs.distribute.trainer.sum_duplicate_rows(dense) is dense
