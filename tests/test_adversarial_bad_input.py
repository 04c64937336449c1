"""Malformed input to the auxiliary-tree ops and AdversarialSampler: clear
errors, never a crash.

Every bad argument gives ValueError (Python) or InvalidArgumentError (op)
whose message names the argument (and the bad value where the op reports
it). Huge sizes and a random fuzz over every raw AdversarialTree op run in a
subprocess (child_process; the cases and the fuzz are the modules
child_scripts/crash_adversarial.py and fuzz_adversarial.py).
"""
import numpy as np
import pytest
import tensorflow as tf

import tf_sampled as tfs
from child_process import run_crash_cases, run_fuzz
from child_scripts import crash_adversarial, fuzz_adversarial
from error_assertions import assert_rejects_bad_counters, raises_naming

NUM_CLASSES, DIM, K = 12, 5, 3
InvalidArgument = tf.errors.InvalidArgumentError
AdversarialSampler = tfs.samplers.AdversarialSampler


def data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, DIM)).astype(np.float32),
            rng.integers(0, NUM_CLASSES, size=n))


@pytest.fixture(scope="module")
def sampler():
    x, y = data()
    return AdversarialSampler.fit(x, y, NUM_CLASSES, projection_dim=K)


def queries(batch=2, seed=1):
    return np.random.default_rng(seed).normal(size=(batch, DIM)).astype(np.float32)


# --------------------------------------------------------------------------
# AdversarialSampler.fit and the constructor (Python API)
# --------------------------------------------------------------------------

def test_fit_rejects_bad_data():
    x, y = data()
    fit = AdversarialSampler.fit
    bad = y.copy()
    bad[7] = NUM_CLASSES
    raises_naming(ValueError, lambda: fit(x, bad, NUM_CLASSES, projection_dim=K), "labels",
                  f"got {NUM_CLASSES}")
    bad[7] = -1
    raises_naming(ValueError, lambda: fit(x, bad, NUM_CLASSES, projection_dim=K), "labels",
                  "got -1")
    raises_naming(ValueError, lambda: fit(x, y[:-1], NUM_CLASSES, projection_dim=K), "labels",
                  "one entry per row", "60")
    nan = x.copy()
    nan[9, 2] = np.nan
    raises_naming(ValueError, lambda: fit(nan, y, NUM_CLASSES, projection_dim=K), "features",
                  "finite", "row 9")
    raises_naming(ValueError, lambda: fit(x, y, NUM_CLASSES, projection_dim=DIM + 1),
                  "projection_dim", str(DIM + 1), f"{DIM} columns")
    raises_naming(ValueError, lambda: fit(x[:NUM_CLASSES - 1], y[:NUM_CLASSES - 1] % 3,
                                          NUM_CLASSES, projection_dim=K),
                  "num_classes", "rows", str(NUM_CLASSES - 1))
    raises_naming(ValueError, lambda: fit(x, y * 0, 1, projection_dim=K), "num_classes", "1")
    raises_naming(ValueError, lambda: fit(x.astype(np.int32), y, NUM_CLASSES), "features")
    raises_naming(ValueError, lambda: fit(x, y.astype(np.float32), NUM_CLASSES), "labels")
    raises_naming(ValueError, lambda: fit(x[0], y, NUM_CLASSES), "features", "shape")


@pytest.mark.parametrize("arg, value", [
    ("projection_dim", 0), ("projection_dim", 2.5), ("projection_dim", True),
    ("num_iterations", 0), ("newton_steps", -1), ("l2", 0.0), ("l2", -1.0),
    ("l2", float("nan")), ("l2", "0.1"), ("num_classes", 2.0),
])
def test_fit_rejects_bad_arguments(arg, value):
    x, y = data()
    kwargs = dict(num_classes=NUM_CLASSES, projection_dim=K)
    kwargs[arg] = value
    raises_naming(ValueError, lambda: AdversarialSampler.fit(x, y, **kwargs), arg, repr(value))


def test_constructor_rejects_inconsistent_state(sampler):
    state = sampler.get_state()

    def build(**overrides):
        return AdversarialSampler(**dict(state, **overrides))
    raises_naming(ValueError, lambda: build(leaf_of_class=np.zeros(NUM_CLASSES, np.int64)),
                  "leaf_of_class", "permutation")
    raises_naming(ValueError, lambda: build(class_of_leaf=np.roll(state["class_of_leaf"], 1)),
                  "inverse")
    raises_naming(ValueError, lambda: build(params=state["params"][:, :-1]), "projection")
    raises_naming(ValueError, lambda: build(mean=state["mean"][:-1]), "mean")
    raises_naming(ValueError, lambda: build(params=state["params"][:1]), "params")
    params = state["params"].copy()
    params[3, 0] = np.inf
    raises_naming(ValueError, lambda: build(params=params), "finite")


def test_query_errors(sampler):
    h = queries()
    raises_naming(ValueError, lambda: sampler.sample(h, 0), "num_sampled", "0")
    raises_naming(ValueError, lambda: sampler.sample(np.zeros((2, DIM + 1), np.float32), 2),
                  "inputs", "shape")
    raises_naming(ValueError, lambda: sampler.sample(np.zeros((2, DIM), np.int32), 2),
                  "inputs", "int32")
    h[1, 2] = np.nan
    raises_naming(InvalidArgument, lambda: sampler.sample(h, 3), "inputs", "finite")
    raises_naming(InvalidArgument, lambda: sampler.log_prob(h, [[0], [1]]), "inputs", "finite")
    raises_naming(InvalidArgument, lambda: tfs.random.adversarial_candidate_sampler(
        [[0], [1]], 1, 3, False, NUM_CLASSES, inputs=h, sampler=sampler), "inputs", "finite")
    for bad_id in (NUM_CLASSES, -1, 2**40):
        ids = np.array([[0], [bad_id]])
        fragments = (f"[0, {NUM_CLASSES})", f"got {bad_id}")
        raises_naming(InvalidArgument, lambda: sampler.sample(queries(), 2, true_classes=ids),
                      "true_classes", *fragments)
        raises_naming(InvalidArgument, lambda: sampler.log_prob(queries(), ids), "classes",
                      *fragments)
        raises_naming(InvalidArgument, lambda: tfs.random.adversarial_candidate_sampler(
            ids, 1, 2, True, NUM_CLASSES, inputs=queries(), sampler=sampler), "true_classes",
            *fragments)
    sample = tfs.random.adversarial_candidate_sampler
    raises_naming(ValueError, lambda: sample([[0], [1]], 1, 3, False, NUM_CLASSES + 1,
                                             inputs=queries(), sampler=sampler), "range_max")
    raises_naming(ValueError, lambda: sample([[0], [1]], 1, NUM_CLASSES + 1, True, NUM_CLASSES,
                                             inputs=queries(), sampler=sampler),
                  "num_sampled", "unique")
    raises_naming(ValueError, lambda: sample([[0], [1]], 2, 3, False, NUM_CLASSES,
                                             inputs=queries(), sampler=sampler),
                  "true_classes", "num_true=2")
    raises_naming(ValueError, lambda: sample([[0], [1]], 1, 3, False, NUM_CLASSES, inputs=None,
                                             sampler=sampler), "inputs")
    raises_naming(ValueError, lambda: sample([[0], [1]], 1, 3, False, NUM_CLASSES,
                                             inputs=queries(), sampler=object()), "sampler")
    raises_naming(ValueError, lambda: tfs.nn.negative_sampling_loss(
        tf.zeros([NUM_CLASSES, DIM]), None, [[0], [1]], queries(),
        sampler.sample(queries(), 2), regularizer=-1.0), "regularizer")


def test_empty_batch_returns_empty_outputs(sampler):
    h = np.zeros((0, DIM), np.float32)
    truth = np.zeros((0, 2), np.int64)
    cands = sampler.sample(h, 3, true_classes=truth)
    assert cands.ids.shape == (0, 3) and cands.true_log_q.shape == (0, 2)
    assert sampler.log_prob(h, np.zeros((0, 4), np.int64)).shape == (0, 4)
    assert sampler.all_log_probs(h).shape == (0, NUM_CLASSES)
    sampled, true_count, sampled_count = tfs.random.adversarial_candidate_sampler(
        truth[:, :1], 1, 3, True, NUM_CLASSES, inputs=h, sampler=sampler)
    assert sampled.shape == (3,) and true_count.shape == (0, 1)
    assert np.all(sampled_count.numpy() > 0)


# --------------------------------------------------------------------------
# Raw ops
# --------------------------------------------------------------------------

def raw_tree(ops):
    x, y = data()
    projected = x[:, :K]
    params, leaf_of_class, class_of_leaf = (t.numpy() for t in ops.tf_sampled_adversarial_tree_fit(
        features=projected, labels=y, num_classes=NUM_CLASSES))
    return dict(params=params, class_of_leaf=class_of_leaf, leaf_of_class=leaf_of_class,
                inputs=queries()[:, :K])


def call_raw(ops, op, tree, **overrides):
    if op == "fit":
        x, y = data()
        args = dict(features=x[:, :K], labels=y, num_classes=NUM_CLASSES)
    elif op == "sample":
        args = dict(tree, true_classes=np.zeros([2, 1], np.int64), counter=np.int64(0),
                    num_sampled=3)
    elif op == "log_prob":
        args = dict(tree, classes=np.zeros([2, 2], np.int64))
    else:
        args = dict(tree, true_classes=np.zeros([2, 1], np.int64), counter=np.int64(0),
                    num_true=1, num_sampled=3, unique=True, range_max=NUM_CLASSES)
    args.update(overrides)
    return getattr(ops, f"tf_sampled_adversarial_tree_{op}")(**args)


AUX_OPS = ["fit", "sample", "log_prob", "candidate_sampler"]


@pytest.mark.parametrize("op", AUX_OPS)
def test_raw_ops_accept_valid_calls(ops, op):
    call_raw(ops, op, raw_tree(ops))


def test_raw_fit_errors(ops):
    x, y = data()
    fit = ops.tf_sampled_adversarial_tree_fit
    bad = y.copy()
    bad[4] = 99
    raises_naming(InvalidArgument, lambda: fit(features=x, labels=bad, num_classes=NUM_CLASSES),
                  "labels", "got 99")
    raises_naming(InvalidArgument, lambda: fit(features=x, labels=y[:-2],
                                               num_classes=NUM_CLASSES), "labels", "60")
    nan = x.copy()
    nan[3, 1] = np.nan
    raises_naming(InvalidArgument, lambda: fit(features=nan, labels=y, num_classes=NUM_CLASSES),
                  "features", "finite")
    raises_naming(InvalidArgument, lambda: fit(features=x[:5], labels=y[:5],
                                               num_classes=NUM_CLASSES),
                  "num_classes", "got 5")
    raises_naming(InvalidArgument, lambda: fit(features=x[:, :0], labels=y,
                                               num_classes=NUM_CLASSES), "features", "columns")
    for attr, value in (("num_classes", 1), ("num_classes", -3), ("num_iterations", 0),
                        ("newton_steps", 0), ("l2", 0.0), ("l2", float("nan"))):
        kwargs = dict(features=x, labels=y, num_classes=NUM_CLASSES)
        kwargs[attr] = value
        raises_naming(InvalidArgument, lambda: fit(**kwargs), attr)


@pytest.mark.parametrize("op", ["sample", "log_prob", "candidate_sampler"])
def test_raw_query_errors(ops, op):
    tree = raw_tree(ops)
    params = tree["params"]
    cases = [
        (dict(params=params[:, :1]), ("params", "shape")),
        (dict(params=params[:1]), ("params", "num_classes >= 2")),
        (dict(class_of_leaf=tree["class_of_leaf"][:-1]), ("class_of_leaf", "shape")),
        (dict(leaf_of_class=tree["leaf_of_class"][:, None]), ("leaf_of_class", "rank")),
        (dict(inputs=queries()), ("inputs", f"{K} columns")),
        (dict(inputs=np.full([2, K], np.inf, np.float32)), ("inputs", "finite")),
        (dict(params=np.full_like(params, np.nan)), ("params", "finite")),
    ]
    if op != "log_prob":
        cases.append((dict(class_of_leaf=np.full(NUM_CLASSES, NUM_CLASSES, np.int64)),
                      ("class_of_leaf", "[0, num_classes)")))
    else:
        cases.append((dict(leaf_of_class=np.full(NUM_CLASSES, -5, np.int64)),
                      ("leaf_of_class", "[0, num_classes)")))
    for overrides, fragments in cases:
        raises_naming(InvalidArgument, lambda: call_raw(ops, op, tree, **overrides), *fragments)


@pytest.mark.parametrize("op", ["sample", "candidate_sampler"])
@pytest.mark.parametrize("batch", [2, 0])
def test_raw_sampling_ops_reject_bad_counters(ops, op, batch):
    tree = dict(raw_tree(ops), inputs=queries(batch)[:, :K])
    assert_rejects_bad_counters(lambda counter: call_raw(
        ops, op, tree, counter=counter, true_classes=np.zeros([batch, 1], np.int64)))


def test_load_rejects_a_bad_stream_position(sampler, tmp_path):
    path = str(tmp_path / "aux.npz")
    sampler.save(path)
    with np.load(path) as data:
        arrays = dict(data)
    for key in ("stream_counter", "stream_offset"):
        with open(path, "wb") as f:
            np.savez(f, **dict(arrays, **{key: np.int64(-1)}))
        raises_naming(ValueError, lambda: AdversarialSampler.load(path), key, "got -1")


def test_raw_candidate_sampler_attrs(ops):
    tree = raw_tree(ops)
    raises_naming(InvalidArgument, lambda: call_raw(ops, "candidate_sampler", tree,
                                                    range_max=NUM_CLASSES + 1), "range_max")
    raises_naming(InvalidArgument, lambda: call_raw(ops, "candidate_sampler", tree, num_true=2),
                  "num_true=2")
    raises_naming(InvalidArgument, lambda: call_raw(ops, "candidate_sampler", tree,
                                                    num_sampled=NUM_CLASSES + 1),
                  "num_sampled", "unique")
    raises_naming(InvalidArgument, lambda: call_raw(ops, "sample", tree, num_sampled=0),
                  "num_sampled", "0")
    raises_naming(InvalidArgument, lambda: call_raw(
        ops, "sample", tree, true_classes=np.zeros([3, 1], np.int64)), "true_classes", "rows")


# --------------------------------------------------------------------------
# In a subprocess: huge sizes (child_scripts/crash_adversarial.py), and a random
# fuzz (child_scripts/fuzz_adversarial.py)
# --------------------------------------------------------------------------

def test_no_crash():
    """All cases in one interpreter (one TensorFlow import); CASE lines say which died."""
    run_crash_cases(crash_adversarial)


FUZZ_SEED, FUZZ_CALLS = 2468, 400


def test_fuzz_raw_adversarial_tree_ops_never_kill_the_process():
    run_fuzz(fuzz_adversarial, FUZZ_SEED, FUZZ_CALLS, AUX_OPS)
