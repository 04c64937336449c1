"""Every path that scores all classes, at one class count, in this process.

Run as a script by tests/test_all_classes_scoring.py in a child process whose
TF_ENABLE_ONEDNN_OPTS is set (TensorFlow reads it at import, and a oneDNN
primitive that fails aborts the process, so a crash must not take pytest
with it):

    python tests/scoring_cases.py NUM_CLASSES OUTPUT_DIR

Before each case it prints `CASE <name>` (flushed), so a parent that sees
the child die can name the case that killed it; it ends with `DONE`.
Scores are checked against NumPy oracles (logits h W^T + b; log p_n of the
adversarial tree by a walk of each leaf's path; input-free noise summing to
one), and every path against the eager call.
"""
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import tf_sampled as tfs
from test_adversarial_sampler import oracle_log_probs, random_sampler

START = time.time()
tf.get_logger().setLevel("ERROR")  # Keras' retracing warnings: one model per case
DIM = 8
BATCH = 5
# (loss, sampler): every sampler the layer takes by name, with each loss it
# supports. The scoring graph depends on the loss and, with negative
# sampling, on the noise; `export` marks one config per distinct graph.
CONFIGS = [("sampled_softmax", name, name == "kernel") for name in (
    "kernel", "lsh", "adversarial", "uniform", "log_uniform", "unigram", "learned_unigram")]
CONFIGS += [("negative_sampling", name, True) for name in (
    "adversarial", "uniform", "log_uniform", "unigram", "learned_unigram")]


def case(name):
    print(f"CASE {name}", f"{time.time() - START:.1f}s", flush=True)


def check_close(name, got, want, atol=1e-4):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape or not np.allclose(got, want, atol=atol, rtol=1e-4):
        raise AssertionError(f"{name}: got {got.shape} {got.ravel()[:6]}, want "
                             f"{want.shape} {want.ravel()[:6]}")


def layer_args(sampler, num_classes, directory):
    if sampler == "adversarial":
        path = os.path.join(directory, f"aux_{num_classes}.npz")
        random_sampler(num_classes, k=3, dim=DIM, seed=num_classes).save(path)
        return dict(sampler="adversarial", sampler_options={"path": path})
    if sampler == "unigram":
        return dict(sampler="unigram", sampler_options={
            "counts": list(np.arange(1.0, num_classes + 1))})
    if sampler == "kernel":  # one leaf at C = 2
        return dict(sampler="kernel", sampler_options={"leaf_size": 2})
    return dict(sampler=sampler)


def expected_scores(head, h, loss):
    """h W^T + b (+ log p_n): [batch, C] float64, from NumPy or a NumPy walk."""
    scores = h.astype(np.float64) @ head.embeddings.numpy().T.astype(np.float64)
    scores += head.bias.numpy()
    if loss == "sampled_softmax":
        return scores
    if isinstance(head.sampler, tfs.samplers.AdversarialSampler):
        return scores + oracle_log_probs(head.sampler, h)
    noise = head._noise.all(tf.constant(h)).numpy().astype(np.float64)  # pylint: disable=protected-access
    total = np.logaddexp.reduce(noise, axis=1)
    if not np.allclose(total, 0.0, atol=1e-4):
        raise AssertionError(f"log p_n of every class does not sum to one: {total}")
    return scores + noise


def layer_cases(num_classes, directory, rng):
    h = rng.normal(size=(BATCH, DIM)).astype(np.float32)
    y = rng.integers(0, num_classes, size=BATCH).astype(np.int64)
    for loss, sampler, export in CONFIGS:
        tag = f"C={num_classes} {loss} {sampler}"
        case(f"{tag} build")
        keras.utils.set_random_seed(num_classes)
        inputs = keras.Input([DIM])
        head = tfs.layers.SampledSoftmax(
            num_classes, num_sampled=1, loss=loss, seed=1, eval_chunk_size=2,
            eval_top_k=(1,), embeddings_initializer="random_normal",
            **layer_args(sampler, num_classes, directory))
        model = tfs.layers.SampledSoftmaxModel(inputs, head(inputs))
        model.compile()
        want = expected_scores(head, h, loss)
        case(f"{tag} eager")
        check_close(f"{tag} eager", model(h), want)
        case(f"{tag} tf.function")
        check_close(f"{tag} tf.function", tf.function(lambda x: model(x))(h), want)  # pylint: disable=unnecessary-lambda
        case(f"{tag} predict")
        check_close(f"{tag} predict", model.predict(h, batch_size=2, verbose=0), want)
        case(f"{tag} evaluate")
        got = model.evaluate(h, y, batch_size=BATCH, verbose=0, return_dict=True)["loss"]
        lse = np.logaddexp.reduce(want, axis=1)
        check_close(f"{tag} evaluate", got, np.mean(lse - want[np.arange(BATCH), y]))
        if export:
            case(f"{tag} exported SavedModel")
            path = os.path.join(directory, f"served_{num_classes}_{loss}_{sampler}")
            model.export(path, verbose=False)
            served = tf.saved_model.load(path)  # held: its functions use its variables
            check_close(f"{tag} exported SavedModel", served.serve(h), want)


def sampler_cases(num_classes, rng):
    """AdversarialSampler's own all-classes paths: correct_logits, chunked subtrees."""
    case(f"C={num_classes} AdversarialSampler.fit")
    if num_classes < 2:
        try:
            random_sampler(num_classes, k=3, dim=DIM)
        except ValueError as err:
            assert "num_classes >= 2" in str(err), err
            return
        raise AssertionError("an AdversarialSampler with one class was accepted")
    sampler = random_sampler(num_classes, k=3, dim=DIM, seed=num_classes)
    h = rng.normal(size=(BATCH, DIM)).astype(np.float32)
    logits = rng.normal(size=(BATCH, num_classes)).astype(np.float32)
    want = logits + oracle_log_probs(sampler, h)
    case(f"C={num_classes} correct_logits eager")
    check_close("correct_logits eager", sampler.correct_logits(logits, h), want)
    case(f"C={num_classes} correct_logits tf.function")
    check_close("correct_logits tf.function", tf.function(sampler.correct_logits)(logits, h),
                want)

    # start and stop as tensors: one trace serves every range, as in the
    # layer's chunked evaluation.
    log_probs = tf.function(sampler.subtree_log_probs, input_signature=[
        tf.TensorSpec([None, DIM], tf.float32), tf.TensorSpec([], tf.int32),
        tf.TensorSpec([], tf.int32)])
    for per in sorted({1, 2, max(1, sampler.num_subtrees // 3)}):
        case(f"C={num_classes} subtree_log_probs chunks of {per} in tf.function")
        parts = [log_probs(h, start, min(start + per, sampler.num_subtrees))
                 for start in range(0, sampler.num_subtrees, per)]
        classes = np.concatenate([c.numpy() for c, _ in parts])
        order = np.argsort(classes)
        if not np.array_equal(classes[order], np.arange(num_classes)):
            raise AssertionError(f"subtree chunks of {per} do not hold every class once")
        log_p = np.concatenate([p.numpy() for _, p in parts], axis=1)
        check_close(f"subtree chunks of {per}", log_p[:, order], oracle_log_probs(sampler, h))


def main(num_classes, directory):
    rng = np.random.default_rng(num_classes)
    sampler_cases(num_classes, rng)
    if num_classes < 2:
        case(f"C={num_classes} layer refuses")
        try:
            tfs.layers.SampledSoftmax(num_classes, num_sampled=1)
        except ValueError as err:
            assert "num_sampled (1) must be < num_classes (1)" in str(err), err
        else:
            raise AssertionError("SampledSoftmax(1) was accepted")
    else:
        layer_cases(num_classes, directory, rng)
    print("DONE", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
