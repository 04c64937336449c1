"""Malformed input to the auxiliary-tree ops and AdversarialSampler: clear
errors, never a crash.

Every bad argument gives ValueError (Python) or InvalidArgumentError (op)
whose message names the argument (and the bad value where the op reports
it). Huge sizes and a random fuzz over every raw AdversarialTree op run in a
subprocess (helpers from child_process).
"""
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import tf_sampled as tfs
from child_process import run_crash_cases_in_one_process, run_fuzz
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
# In a subprocess: huge sizes, and a random fuzz
# --------------------------------------------------------------------------

_PRELUDE = textwrap.dedent("""
    import numpy as np, tensorflow as tf, tf_sampled as tfs
    from raw_ops import clean
    ops = tfs.load_ops()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 2)).astype(np.float32)
    y = rng.integers(0, 5, 20)
    p, l, c = ops.tf_sampled_adversarial_tree_fit(features=x, labels=y, num_classes=5)
    tree = dict(params=p, class_of_leaf=c, leaf_of_class=l, inputs=x[:2])
""")

CRASH_CASES = {
    "sample_num_sampled_overflow": """
        clean(lambda: ops.tf_sampled_adversarial_tree_sample(true_classes=[[0], [1]], counter=0,
              num_sampled=2**62, **tree), "num_sampled", "overflow")
    """,
    "candidate_sampler_huge_num_sampled": """
        clean(lambda: ops.tf_sampled_adversarial_tree_candidate_sampler(true_classes=[[0], [1]],
              counter=0, num_true=1, num_sampled=2**50, unique=False, range_max=5, **tree),
              "num_sampled", "OOM", "allocat")
    """,
    "fit_num_classes_huge": """
        clean(lambda: ops.tf_sampled_adversarial_tree_fit(features=x, labels=y, num_classes=2**62),
              "num_classes")
    """,
}


def test_no_crash():
    """All cases in one interpreter (one TensorFlow import); CASE lines say which died."""
    run_crash_cases_in_one_process(_PRELUDE, CRASH_CASES)


FUZZ_SCRIPT = textwrap.dedent('''
    """Random malformed calls to every raw AdversarialTree op: argv = seed, calls."""
    import sys

    import numpy as np
    import tensorflow as tf

    import tf_sampled as tfs
    from raw_ops import HUGE_COUNTS, FuzzArgs, RawOps, fuzz_counter

    SEED, NUM_CALLS = int(sys.argv[1]), int(sys.argv[2])
    lib = RawOps(tfs.load_ops())
    rng = np.random.default_rng(SEED)
    HUGE = list(HUGE_COUNTS)
    fuzz = FuzzArgs(rng, bad_ints=[-1, 2**31 - 1, -(2**31), 7, 10**6, 2**62])
    pick, chance, mangle, maybe = fuzz.pick, fuzz.chance, fuzz.mangle, fuzz.maybe
    ids, count_attr, seeds = fuzz.ids, fuzz.count_attr, fuzz.seeds


    def setup():
        c, k = int(rng.integers(2, 12)), int(rng.integers(1, 4))
        n = c + int(rng.integers(0, 20))
        x = rng.standard_normal((n, k)).astype(np.float32)
        y = rng.integers(0, c, n).astype(np.int64)
        params, leaf_of_class, class_of_leaf = (t.numpy() for t in lib.tf_sampled_adversarial_tree_fit(
            features=x, labels=y, num_classes=c))
        return dict(c=c, k=k, x=x, y=y, params=params, leaf_of_class=leaf_of_class,
                    class_of_leaf=class_of_leaf,
                    inputs=rng.standard_normal((int(rng.integers(0, 4)), k)).astype(np.float32))


    def tree(s, p):
        return dict(params=maybe(p, s["params"]), class_of_leaf=maybe(p, s["class_of_leaf"]),
                    leaf_of_class=maybe(p, s["leaf_of_class"]), inputs=maybe(p, s["inputs"]))


    def call_fit(s, p):
        return dict(features=maybe(p, s["x"]), labels=maybe(p, s["y"]),
                    num_classes=pick([0, 1, -1, s["c"] + 1, len(s["y"]) + 1] + HUGE)
                    if chance(p) else s["c"],
                    num_iterations=pick([0, -1, 1, 3]) if chance(p) else 2,
                    newton_steps=pick([0, -2, 1, 4]) if chance(p) else 2,
                    l2=pick([0.0, -1.0, float("nan"), float("inf"), 1e-30]) if chance(p)
                    else 0.1)


    def call_sample(s, p):
        b = len(s["inputs"])
        return dict(true_classes=ids([b, int(rng.integers(0, 3))], s["c"], p),
                    counter=fuzz_counter(rng, p), num_sampled=count_attr(p), **tree(s, p),
                    **seeds())


    def call_log_prob(s, p):
        b = len(s["inputs"])
        return dict(classes=ids([b, int(rng.integers(0, 3))], s["c"], p), **tree(s, p))


    def call_candidate_sampler(s, p):
        b = len(s["inputs"])
        num_true = int(rng.integers(1, 3))
        unique = bool(chance(0.5))
        num_sampled = count_attr(p)
        if unique and num_sampled < 2**31:
            num_sampled = min(num_sampled, s["c"]) if chance(0.8) else s["c"] + 1
        return dict(true_classes=ids([b, num_true], s["c"], p), counter=fuzz_counter(rng, p),
                    num_true=count_attr(p) if chance(p) else num_true, num_sampled=num_sampled,
                    unique=unique, range_max=pick([s["c"], s["c"] + 1, 0, 2**62])
                    if chance(p) else s["c"], **tree(s, p), **seeds())


    def describe(kwargs):
        parts = []
        for key, value in kwargs.items():
            if isinstance(value, np.ndarray):
                parts.append(f"{key}={value.dtype.name}{list(value.shape)}")
            else:
                parts.append(f"{key}={value!r}")
        return ", ".join(parts)


    OPS = [("fit", call_fit), ("sample", call_sample), ("log_prob", call_log_prob),
           ("candidate_sampler", call_candidate_sampler)]
    counts = {name: [0, 0] for name, _ in OPS}
    bad_outputs = []
    for i in range(NUM_CALLS):
        s = setup()
        name, make = OPS[i % len(OPS)]
        kwargs = make(s, p=pick([0.05, 0.15, 0.3]))
        print(f"CALL {i} {name}(C={s['c']}: {describe(kwargs)})", flush=True)
        try:
            out = getattr(lib, f"tf_sampled_adversarial_tree_{name}")(**kwargs)
        except (tf.errors.OpError, ValueError, TypeError):
            counts[name][1] += 1
            continue
        counts[name][0] += 1
        if name in ("sample", "candidate_sampler") and out[0].shape.num_elements():
            got = out[0].numpy()
            if got.min() < 0 or got.max() >= s["c"]:
                bad_outputs.append(f"call {i}: {name} returned ids outside [0, {s['c']})")
    for line in bad_outputs:
        print("BAD OUTPUT", line)
    print("FUZZ SUMMARY " + " ".join(f"{k}:ok={v[0]},err={v[1]}" for k, v in counts.items()),
          flush=True)
    sys.exit(1 if bad_outputs else 0)
''')

FUZZ_SEED, FUZZ_CALLS = 2468, 400


def test_fuzz_raw_adversarial_tree_ops_never_kill_the_process():
    run_fuzz(FUZZ_SCRIPT, FUZZ_SEED, FUZZ_CALLS, AUX_OPS)
