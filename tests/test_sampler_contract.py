"""The contract every sampler keeps: one suite, parametrized over all of them.

The samplers (sampler_cases.CASES) are the kernel tree with each feature map,
with and without biases; the LSH sampler, both hash families and both
queries; the adversarial auxiliary tree; TensorFlow's built-in samplers.
Each of them:

- draws from its exact proposal (chi-square against a brute-force oracle);
- returns as log q of a call the oracle's and `log_prob`'s log q of the ids;
- draws the same samples eagerly and in a `tf.function`;
- draws the same samples for the same seed and stream counter, other ones
  for another seed or counter, and calls in one function take consecutive
  counters;
- restores its state, hence its samples, from a checkpoint;
- reads a class table passed as a variable in place, as it documents.

Family-specific behaviour (tree shapes, hash tables, fitting, TensorFlow's
triples) stays in the per-family test files.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

import lsh_oracles
from oracles import kernel_log_prob
from sampler_cases import (BUILTIN_COUNTS, CASES, KERNEL_CLASSES, KERNEL_DIM, LSH_CLASSES,
                           LSH_DIM, kernel_table, lsh_reference)
from stats import P_THRESHOLD, chi_square_p_value


def cases(family=None, names=None):
    return [pytest.param(case, id=name) for name, case in CASES.items()
            if (family is None or case.family == family) and (names is None or name in names)]


def all_ids(sampler, batch):
    return np.tile(np.arange(sampler.num_classes), (batch, 1))


def assert_same_log_q(actual, expected):
    """The op's log q of a call and `log_prob` of its ids (one computation)."""
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-6)


def draw(sampler, h, truth, shared, seed=3):
    """One sampling call: (ids, log_q, true_log_q) per example [4, 6], or the
    batch-shared triple (6 unique ids)."""
    if shared:
        return sampler.candidate_sampler(truth[:, :1], 1, 6, True, sampler.num_classes,
                                         seed=seed, inputs=h)
    return tuple(sampler.sample(h, 6, true_classes=truth, seed=seed))


def assert_same_draws(left, right):
    for a, b in zip(left, right):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def different_ids(left, right):
    return not np.array_equal(np.asarray(left[0]), np.asarray(right[0]))


# --------------------------------------------------------------------------
# The distribution
# --------------------------------------------------------------------------

@pytest.mark.parametrize("case", cases())
def test_draws_pass_chi_square_against_the_exact_proposal(case):
    run = case.chi_square
    sampler = case.make()
    h, truth = case.inputs(run.batch, run.input_seed)
    truth = truth if case.needs_truth else None
    num_classes = sampler.num_classes
    q = np.exp(case.oracle(sampler, h, truth))
    log_prob = case.log_prob(sampler, h, all_ids(sampler, run.batch), truth).numpy()
    cands = sampler.sample(h, run.draws, true_classes=truth, seed=run.seed)
    ids = cands.ids.numpy()
    assert ids.shape == (run.batch, run.draws)
    if truth is None:
        assert cands.true_log_q.shape == (run.batch, 0)
    # Input-free proposals: every row draws from the same q (pooled).
    rows = [ids.ravel()] if case.input_free else ids
    for row, probs in zip(rows, q):
        assert chi_square_p_value(np.bincount(row, minlength=num_classes), probs) > P_THRESHOLD
    # The draws of a row are iid (not grouped by the sampler's structure):
    # the first half has the same law.
    first = np.bincount(ids[0, :run.draws // 2], minlength=num_classes)
    assert chi_square_p_value(first, q[0]) > P_THRESHOLD
    assert_same_log_q(cands.log_q.numpy(), np.take_along_axis(log_prob, ids, 1))


@pytest.mark.parametrize("case", cases())
def test_sample_log_q_is_the_exact_log_prob_of_the_ids(case):
    sampler = case.make()
    num_classes = sampler.num_classes
    h, _ = case.inputs(3, 1)
    truth = np.array([[0, 5], [num_classes - 1, 17 % num_classes], [3, 3]])
    # The proposal the call samples from (LearnedUnigram learns after it).
    ref = case.oracle(sampler, h, truth)
    before = case.log_prob(sampler, h, all_ids(sampler, 3), truth).numpy()
    cands = sampler.sample(h, 200, true_classes=truth, seed=11)
    ids = cands.ids.numpy()
    assert ids.shape == (3, 200) and ids.min() >= 0 and ids.max() < num_classes
    rtol, atol = case.tolerance
    np.testing.assert_allclose(cands.log_q.numpy(), np.take_along_axis(ref, ids, 1),
                               rtol=rtol, atol=atol)
    np.testing.assert_allclose(cands.true_log_q.numpy(), np.take_along_axis(ref, truth, 1),
                               rtol=rtol, atol=atol)
    assert_same_log_q(cands.log_q.numpy(), np.take_along_axis(before, ids, 1))
    assert_same_log_q(cands.true_log_q.numpy(), np.take_along_axis(before, truth, 1))
    if not case.learns:
        assert_same_log_q(cands.log_q.numpy(), case.log_prob(sampler, h, ids, truth).numpy())
        assert_same_log_q(cands.true_log_q.numpy(),
                          case.log_prob(sampler, h, truth, truth).numpy())


# --------------------------------------------------------------------------
# The stream: eager and graph calls, seeds, counters
# --------------------------------------------------------------------------

@pytest.mark.parametrize("shared", [False, True], ids=["per_example", "shared"])
@pytest.mark.parametrize("case", cases())
def test_eager_and_tf_function_draw_the_same(case, shared):
    h, truth = case.inputs(4, 1)
    one, two = case.make(), case.make()
    eager = [draw(one, h, truth, shared) for _ in range(2)]  # counters 0 and 1
    assert different_ids(eager[0], eager[1])
    # Another sampler at the same counters, in a tf.function.
    graph_draw = tf.function(lambda: draw(two, h, truth, shared))
    assert_same_draws(graph_draw(), eager[0])
    assert_same_draws(graph_draw(), eager[1])
    assert int(two.stream.counter.numpy()) == 2
    # A counter set by hand (a restored position) draws that call's samples.
    one.stream.counter.assign(7)
    two.stream.counter.assign(7)
    assert_same_draws(draw(one, h, truth, shared), graph_draw())
    if not case.learns:  # (LearnedUnigram's counts moved on)
        # A new function at the stream's first call: the first samples.
        one.stream.counter.assign(0)
        assert_same_draws(tf.function(lambda: draw(one, h, truth, shared))(), eager[0])
    # The global seed does not enter.
    three, four = case.make(), case.make()
    tf.random.set_seed(1)
    first = tf.function(lambda: draw(three, h, truth, shared, seed=7))()
    tf.random.set_seed(2)
    assert_same_draws(tf.function(lambda: draw(four, h, truth, shared, seed=7))(), first)
    ids = all_ids(one, 4)
    np.testing.assert_allclose(tf.function(lambda: case.log_prob(one, h, ids, truth))().numpy(),
                               case.log_prob(one, h, ids, truth).numpy())


@pytest.mark.parametrize("shared", [False, True], ids=["per_example", "shared"])
@pytest.mark.parametrize("case", cases())
def test_same_seed_and_counter_draw_the_same(case, shared):
    h, truth = case.inputs(4, 1)
    one, two, three = case.make(), case.make(), case.make()
    # Calls in one function take consecutive counters, as eager calls do.
    eager = [draw(one, h, truth, shared) for _ in range(3)]
    graph = tf.function(lambda: [draw(two, h, truth, shared) for _ in range(3)])()
    for left, right in zip(eager, graph):
        assert_same_draws(left, right)
    assert int(two.stream.counter.numpy()) == 3
    assert different_ids(eager[0], eager[1]) and different_ids(eager[1], eager[2])
    # Another seed draws other samples at the same counter.
    assert different_ids(draw(three, h, truth, shared, seed=4), eager[0])


# --------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------

def _change_kernel(sampler):
    sampler.embeddings.assign(sampler.embeddings[::-1])  # other rows in each leaf
    sampler.refresh()


# How the state of each family moves on after a checkpoint (besides the
# stream and LearnedUnigram's counts, which sampling moves), and the state
# that then differs.
CHANGES = {
    "kernel": (_change_kernel, ["nodes"]),
    "lsh": (lambda sampler: sampler.rehash(), ["codes", "version"]),
    "adversarial": (lambda sampler: sampler.params.assign(sampler.params + 1.0), ["params"]),
    "builtin": (lambda sampler: None, []),
}


@pytest.mark.parametrize("case", cases())
def test_checkpoint_restores_the_state_and_the_samples(case, tmp_path):
    h, truth = case.inputs(4, 1)
    sampler = case.make()
    draw(sampler, h, truth, False, seed=None)  # its own stream moves on
    saved = [v.numpy() for v in sampler.variables]
    change, changed = CHANGES[case.family]
    changed = changed + (["counts"] if case.learns else [])
    saved_changed = [getattr(sampler, name).numpy() for name in changed]
    path = tf.train.Checkpoint(sampler=sampler).save(str(tmp_path / "ckpt"))
    expected = draw(sampler, h, truth, False, seed=None)
    change(sampler)
    for name, value in zip(changed, saved_changed):
        assert not np.allclose(getattr(sampler, name).numpy(), value), name
    tf.train.Checkpoint(sampler=sampler).restore(path).assert_consumed()
    assert_same_draws([v.numpy() for v in sampler.variables], saved)
    assert_same_draws(draw(sampler, h, truth, False, seed=None), expected)
    # Into another sampler, with a stream (and state) of its own.
    other = case.make(case.other_seed)
    assert other.stream.offset.numpy() != sampler.stream.offset.numpy()
    assert different_ids(draw(other, h, truth, False, seed=None), expected)
    tf.train.Checkpoint(sampler=other).restore(path).assert_consumed()
    assert_same_draws([v.numpy() for v in other.variables], saved)
    assert_same_draws(draw(other, h, truth, False, seed=None), expected)


# --------------------------------------------------------------------------
# In-place reads
# --------------------------------------------------------------------------

@pytest.mark.parametrize("case", cases("kernel"))
def test_kernel_reads_the_table_in_place_and_copies_constants_once(case):
    """Embeddings and biases are read at every call (no refresh): log q is
    the stale tree's proposal with the current rows in the leaves."""
    w = np.random.RandomState(3).normal(size=(KERNEL_CLASSES, KERNEL_DIM)).astype(np.float32)
    b = kernel_table(biases=case.make().biases is not None)[1]
    keras_w = keras.Variable(w)
    keras_b = None if b is None else keras.Variable(b)
    from_keras = case.build(keras_w, keras_b)
    from_constant = case.build(tf.constant(w), None if b is None else tf.constant(b))
    h, _ = case.inputs(3, 1)
    ids = all_ids(from_keras, 3)
    constant = from_constant.log_prob(h, ids).numpy()
    np.testing.assert_allclose(from_keras.log_prob(h, ids).numpy(), constant, rtol=1e-6)
    updates = [(keras_w, w[::-1].copy())] + ([] if b is None else [(keras_b, b[::-1].copy())])
    previous = constant
    for variable, value in updates:
        variable.assign(value)  # read in place: the in-leaf kernels follow
        log_q = from_keras.log_prob(h, ids).numpy()
        assert not np.allclose(log_q, previous, rtol=1e-3)
        np.testing.assert_allclose(log_q, case.oracle(from_keras, h, None), rtol=1e-4, atol=1e-4)
        cands = from_keras.sample(h, 50, seed=1)
        assert_same_log_q(cands.log_q.numpy(), np.take_along_axis(log_q, cands.ids.numpy(), 1))
        previous = log_q
    np.testing.assert_array_equal(from_constant.log_prob(h, ids).numpy(), constant)


@pytest.mark.parametrize("case", cases("lsh"))
def test_lsh_reads_the_table_in_place_and_copies_constants_once(case):
    """The tables are as built until a refresh; label queries read the true
    class's current row at every call."""
    table = np.random.RandomState(3).normal(size=(LSH_CLASSES, LSH_DIM)).astype(np.float32)
    keras_table = keras.Variable(table)
    from_keras = case.build(keras_table, None)
    from_constant = case.build(tf.constant(table), None)
    np.testing.assert_array_equal(from_keras.codes.numpy(), from_constant.codes.numpy())
    h, truth = case.inputs(3, 1)
    ids = all_ids(from_keras, 3)
    before = case.log_prob(from_keras, h, ids, truth).numpy()
    constant = case.log_prob(from_constant, h, ids, truth).numpy()
    np.testing.assert_array_equal(before, constant)
    keras_table.assign(-table)
    after = case.log_prob(from_keras, h, ids, truth).numpy()
    if from_keras.query == "label":
        assert not np.allclose(after, before)
        rtol, atol = case.tolerance
        np.testing.assert_allclose(after, lsh_reference(from_keras, h, truth), rtol=rtol,
                                   atol=atol)
    else:
        np.testing.assert_array_equal(after, before)
    np.testing.assert_array_equal(case.log_prob(from_constant, h, ids, truth).numpy(), constant)
    # A rebuild sees the new rows.
    from_keras.refresh()
    from_constant.refresh()
    assert not np.array_equal(from_keras.codes.numpy(), from_constant.codes.numpy())
    codes, margins = lsh_oracles.codes(from_keras, -table)
    clear = margins > 1e-4
    np.testing.assert_array_equal(from_keras.codes.numpy()[clear], codes[clear])


@pytest.mark.parametrize("case", cases(names=["learned_unigram"]))
def test_learned_unigram_reads_its_counts_in_place(case):
    sampler = case.make()
    sampler.counts.assign(BUILTIN_COUNTS)
    log_q = np.log(BUILTIN_COUNTS / BUILTIN_COUNTS.sum())
    np.testing.assert_allclose(sampler.log_prob(None, all_ids(sampler, 1)).numpy()[0], log_q,
                               rtol=1e-5)
    cands = sampler.sample(np.zeros([2, 2], np.float32), 50, seed=1)
    np.testing.assert_allclose(cands.log_q.numpy(), log_q[cands.ids.numpy()], rtol=1e-5)
