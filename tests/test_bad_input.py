"""Malformed input to the kernel-tree ops and their Python API.

Every bad argument must give ValueError (caught in Python) or
tf.errors.InvalidArgumentError (caught by the op) whose message names the
argument, and the bad value where the op reports it; never a crash. An empty
batch is not an error for the samplers (empty outputs of the documented
shapes); the fused loss op rejects it (there is no loss to return).

Cases that could kill the interpreter (and a random fuzz over every raw op)
run in a subprocess, so a segfault or abort fails one test instead of the run.
"""
import numpy as np
import pytest
import tensorflow as tf

from child_process import check_crash_cases, run_fuzz, start_crash_cases
from child_scripts import crash_kernel, fuzz_kernel
from child_scripts.crash import cases as crash_cases
from error_assertions import assert_rejects_bad_counters, raises_naming
import tf_sampled as tfs

I64_MAX = 2**63 - 1
NUM_CLASSES, DIM = 5, 3


def _available_feature_maps():
    names = []
    for name in ("quadratic", "random_fourier", "positive_random", "gaussian_moments"):
        try:
            tfs.features.get(name)
        except ValueError:
            continue
        names.append(name)
    return names


FEATURE_MAPS = _available_feature_maps()
# Maps with projections omega (validated by the ops; the others ignore omega).
RANDOM_MAPS = [name for name in FEATURE_MAPS if name in ("random_fourier", "positive_random")]


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

def feature_map(name):
    if name == "quadratic":
        return tfs.features.Quadratic(alpha=1.0)
    if name == "random_fourier":
        return tfs.features.RandomFourier(8, seed=0)
    if name == "positive_random":
        return tfs.features.PositiveRandom(8, seed=0)
    return tfs.features.get(name)


def feature_dim(fmap, dim, with_biases):
    """Width of omega's rows for augmented rows of width `dim`."""
    if hasattr(fmap, "feature_dim"):
        return fmap.feature_dim(dim, with_biases)
    return dim


def make_sampler(fmap="positive_random", leaf_size=2, with_biases=False, seed=0):
    rng = np.random.default_rng(seed)
    embeddings = tf.Variable(rng.standard_normal((NUM_CLASSES, DIM)).astype(np.float32))
    biases = (tf.Variable(rng.standard_normal(NUM_CLASSES).astype(np.float32))
              if with_biases else None)
    return tfs.samplers.KernelSampler(embeddings, feature_map=feature_map(fmap),
                                      leaf_size=leaf_size, biases=biases)


def queries(batch=2, seed=1):
    return tf.constant(np.random.default_rng(seed).standard_normal((batch, DIM)), tf.float32)


def truth(batch=2, num_true=1):
    return tf.zeros([batch, num_true], tf.int64)


def raw_setup(ops, fmap="positive_random", leaf_size=2, with_biases=False, batch=2):
    """Valid raw-op arguments for a small table: override keys to break one."""
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((NUM_CLASSES, DIM)).astype(np.float32)
    biases = (rng.standard_normal(NUM_CLASSES).astype(np.float32) if with_biases
              else np.zeros([0], np.float32))
    width = feature_dim(feature_map(fmap), DIM + with_biases, with_biases)
    omega = (rng.standard_normal((4, width)).astype(np.float32) if fmap in RANDOM_MAPS
             else np.zeros([0, width], np.float32))
    rows = np.concatenate([embeddings, biases[:, None]], 1) if with_biases else embeddings
    attrs = dict(feature_map=fmap, alpha=1.0, temperature=1.0, leaf_size=leaf_size)
    # Build and update read the bias column from `rows`; the query ops from `biases`.
    row_attrs = dict(attrs, has_bias=with_biases)
    nodes = ops.tf_sampled_kernel_tree_build(rows=rows, omega=omega, **row_attrs).numpy()
    tree = dict(nodes=nodes, embeddings=embeddings, biases=biases, omega=omega,
                inputs=rng.standard_normal((batch, DIM)).astype(np.float32))
    return dict(rows=rows, attrs=attrs, row_attrs=row_attrs, tree=tree, batch=batch)


def call_raw(ops, op, setup, **overrides):
    """Calls a raw op on `setup` (see raw_setup) with some arguments replaced."""
    tree, attrs, batch = dict(setup["tree"]), dict(setup["attrs"]), setup["batch"]
    if op == "build":
        args = dict(rows=setup["rows"], omega=tree["omega"], **setup["row_attrs"])
        fn = ops.tf_sampled_kernel_tree_build
    elif op == "update":
        ids = np.array([1, 3], np.int64)
        args = dict(ids=ids, old_rows=setup["rows"][ids], new_rows=setup["rows"][ids] + 1,
                    omega=tree["omega"], num_classes=np.int64(NUM_CLASSES),
                    **setup["row_attrs"])
        fn = ops.tf_sampled_kernel_tree_update
    elif op == "refresh_rows":
        args = dict(nodes=tree["nodes"], rows=setup["rows"], embeddings=tree["embeddings"],
                    biases=tree["biases"], omega=tree["omega"],
                    ids=np.array([1, 3, 1], np.int64), **attrs)
        fn = ops.tf_sampled_kernel_tree_refresh_rows
    # Float attributes as Python floats (as the API passes them): an int (the
    # generated wrapper's default 0 for prior_weight) sends the eager call to
    # TensorFlow's slow fallback path, which reports a bad input dtype as a
    # ValueError instead of the op's InvalidArgument.
    elif op == "sample":
        args = dict(true_classes=np.zeros([batch, 1], np.int64), counter=np.int64(0),
                    num_sampled=3, seed=1, seed2=2, prior_weight=0.0, **tree, **attrs)
        fn = ops.tf_sampled_kernel_tree_sample
    elif op == "log_prob":
        args = dict(classes=np.zeros([batch, 2], np.int64), prior_weight=0.0, **tree, **attrs)
        fn = ops.tf_sampled_kernel_tree_log_prob
    elif op == "candidate_sampler":
        args = dict(true_classes=np.zeros([batch, 1], np.int64), counter=np.int64(0),
                    num_true=1, num_sampled=3, unique=True, range_max=NUM_CLASSES, seed=1,
                    seed2=2, prior_weight=0.0, **tree, **attrs)
        fn = ops.tf_sampled_kernel_tree_candidate_sampler
    else:
        raise AssertionError(op)
    args.update(overrides)
    return fn(**args)


RAW_OPS = ["build", "update", "refresh_rows", "sample", "log_prob", "candidate_sampler"]
LOSS_OPS = ["loss", "resource_loss", "loss_grad"]
SPARSE_APPLY_OPS = ["sparse_sgd", "sparse_lazy_adam", "sparse_adagrad"]
QUERY_OPS = ["sample", "log_prob", "candidate_sampler"]
IDS_ARG = {"sample": "true_classes", "log_prob": "classes",
           "candidate_sampler": "true_classes"}


# --------------------------------------------------------------------------
# KernelSampler and the drop-in candidate sampler (Python API)
# --------------------------------------------------------------------------

@pytest.mark.parametrize("leaf_size", [0, -1, 2.5, True, "2"])
def test_sampler_rejects_bad_leaf_size(leaf_size):
    embeddings = tf.zeros([NUM_CLASSES, DIM])
    raises_naming(ValueError, lambda: tfs.samplers.KernelSampler(embeddings, leaf_size=leaf_size),
                  "leaf_size", repr(leaf_size))


@pytest.mark.parametrize("num_sampled", [0, -1, -(2**40)])
def test_sample_rejects_non_positive_num_sampled(num_sampled):
    sampler = make_sampler()
    raises_naming(ValueError, lambda: sampler.sample(queries(), num_sampled),
                  "num_sampled", num_sampled)
    raises_naming(ValueError, lambda: tfs.random.kernel_candidate_sampler(
        truth(), 1, num_sampled, False, NUM_CLASSES, inputs=queries(), sampler=sampler),
        "num_sampled", num_sampled)


@pytest.mark.parametrize("bad_id", [NUM_CLASSES, NUM_CLASSES + 7, -1, 2**40, -(2**63)])
@pytest.mark.parametrize("method", QUERY_OPS)
def test_out_of_range_class_ids(method, bad_id):
    sampler = make_sampler()
    ids = tf.constant([[0], [bad_id]], tf.int64)
    if method == "sample":
        fn = lambda: sampler.sample(queries(), 2, true_classes=ids)
    elif method == "log_prob":
        fn = lambda: sampler.log_prob(queries(), ids)
    else:
        fn = lambda: tfs.random.kernel_candidate_sampler(
            ids, 1, 2, True, NUM_CLASSES, inputs=queries(), sampler=sampler)
    raises_naming(tf.errors.InvalidArgumentError, fn, IDS_ARG[method],
                  f"[0, {NUM_CLASSES})", f"got {bad_id}")


@pytest.mark.parametrize("shape", [[2, 1, 1], [], [1, 2, 1, 1]])
def test_class_ids_of_wrong_rank(shape):
    sampler = make_sampler()
    ids = tf.zeros(shape, tf.int64)
    raises_naming(ValueError, lambda: sampler.sample(queries(), 2, true_classes=ids),
                  "true_classes", "shape")
    raises_naming(ValueError, lambda: sampler.log_prob(queries(), ids), "classes", "shape")
    raises_naming(ValueError, lambda: tfs.random.kernel_candidate_sampler(
        ids, 1, 2, False, NUM_CLASSES, inputs=queries(), sampler=sampler),
        "true_classes", "shape")


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64, tf.bool, tf.string])
def test_class_ids_of_wrong_dtype(dtype):
    sampler = make_sampler()
    ids = tf.zeros([2, 1], dtype) if dtype != tf.string else tf.constant([["a"], ["b"]])
    raises_naming(ValueError, lambda: sampler.sample(queries(), 2, true_classes=ids),
                  "true_classes", dtype.name)
    raises_naming(ValueError, lambda: sampler.log_prob(queries(), ids), "classes", dtype.name)
    raises_naming(ValueError, lambda: tfs.random.kernel_candidate_sampler(
        ids, 1, 2, False, NUM_CLASSES, inputs=queries(), sampler=sampler),
        "true_classes", dtype.name)


def test_class_ids_with_wrong_batch():
    sampler = make_sampler()
    ids = tf.zeros([3, 1], tf.int64)
    raises_naming(ValueError, lambda: sampler.sample(queries(2), 2, true_classes=ids),
                  "true_classes", "(3, 1)")
    raises_naming(ValueError, lambda: sampler.log_prob(queries(2), ids), "classes", "(3, 1)")


@pytest.mark.parametrize("shape", [[2, DIM + 1], [2, DIM - 1], [2, 0], [DIM], [1, 2, DIM]])
def test_inputs_whose_dim_differs_from_embeddings(shape):
    sampler = make_sampler()
    inputs = tf.zeros(shape)
    expected = str(tuple(shape)) if len(shape) != 1 else f"({shape[0]},)"
    raises_naming(ValueError, lambda: sampler.sample(inputs, 2), "inputs", expected)
    raises_naming(ValueError, lambda: sampler.log_prob(inputs, truth(2)), "inputs", expected)
    raises_naming(ValueError, lambda: tfs.random.kernel_candidate_sampler(
        truth(2), 1, 2, False, NUM_CLASSES, inputs=inputs, sampler=sampler), "inputs", expected)


def test_inputs_of_integer_dtype():
    sampler = make_sampler()
    raises_naming(ValueError, lambda: sampler.sample(tf.zeros([2, DIM], tf.int32), 2),
                  "inputs", "int32")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("method", QUERY_OPS)
@pytest.mark.parametrize("fmap", FEATURE_MAPS)
def test_non_finite_inputs(fmap, method, bad):
    sampler = make_sampler(fmap)
    h = queries().numpy()
    h[1, 2] = bad
    if method == "sample":
        fn = lambda: sampler.sample(h, 2)
    elif method == "log_prob":
        fn = lambda: sampler.log_prob(h, truth())
    else:
        fn = lambda: tfs.random.kernel_candidate_sampler(
            truth(), 1, 2, False, NUM_CLASSES, inputs=h, sampler=sampler)
    raises_naming(tf.errors.InvalidArgumentError, fn, "inputs", str(float(bad)),
                  "flat index 5")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("method", QUERY_OPS)
@pytest.mark.parametrize("fmap", FEATURE_MAPS)
def test_non_finite_embedding_row_read_by_sampling(fmap, method, bad):
    # One leaf holds every class, so every query reads the bad row.
    # FAILS for random_fourier with NaN: its exact in-leaf kernel turns a NaN
    # row norm into cosine 0 (ExactLogKernel), so the row gets a finite log q.
    sampler = make_sampler(fmap, leaf_size=NUM_CLASSES)
    sampler.embeddings[3].assign([bad, 0.0, 0.0])
    if method == "sample":
        fn = lambda: sampler.sample(queries(), 4, seed=1)
    elif method == "log_prob":
        fn = lambda: sampler.log_prob(queries(), [[3], [0]])
    else:
        fn = lambda: tfs.random.kernel_candidate_sampler(
            truth(), 1, 2, False, NUM_CLASSES, inputs=queries(), sampler=sampler)
    raises_naming(tf.errors.InvalidArgumentError, fn, "embeddings", "finite")


@pytest.mark.parametrize("fmap", FEATURE_MAPS)
def test_nan_bias_read_by_sampling(fmap):
    # FAILS for random_fourier (same cause as above).
    sampler = make_sampler(fmap, leaf_size=NUM_CLASSES, with_biases=True)
    sampler.biases[2].assign(np.nan)
    raises_naming(tf.errors.InvalidArgumentError,
                  lambda: sampler.log_prob(queries(), [[2], [0]]), "biases", "finite")


@pytest.mark.parametrize("fmap", FEATURE_MAPS)
def test_empty_batch_returns_empty_outputs(fmap):
    sampler = make_sampler(fmap)
    h = tf.zeros([0, DIM])
    ids, log_q, true_log_q = sampler.sample(h, 4, true_classes=tf.zeros([0, 2], tf.int64))
    assert (ids.shape, log_q.shape, true_log_q.shape) == ((0, 4), (0, 4), (0, 2))
    assert (ids.dtype, log_q.dtype, true_log_q.dtype) == (tf.int64, tf.float32, tf.float32)
    assert sampler.sample(h, 3).true_log_q.shape == (0, 0)

    log_q = sampler.log_prob(h, tf.zeros([0, 3], tf.int64))
    assert log_q.shape == (0, 3) and log_q.dtype == tf.float32

    for unique in (False, True):
        sampled, true_count, sampled_count = tfs.random.kernel_candidate_sampler(
            tf.zeros([0, 2], tf.int64), 2, 3, unique, NUM_CLASSES, inputs=h, sampler=sampler)
        assert (sampled.shape, true_count.shape, sampled_count.shape) == ((3,), (0, 2), (3,))
        assert sampled.dtype == tf.int64 and sampled_count.dtype == tf.float32
        assert np.all((sampled.numpy() >= 0) & (sampled.numpy() < NUM_CLASSES))
        assert np.all(np.isfinite(sampled_count.numpy()))

    labels = tf.zeros([0, 1], tf.int64)
    per_example = sampler.sample(h, 4, true_classes=labels)
    triple = tfs.random.kernel_candidate_sampler(labels, 1, 3, True, NUM_CLASSES,
                                                 inputs=h, sampler=sampler)
    for sampled in (per_example, triple):
        loss = tfs.nn.sampled_softmax_loss(sampler.embeddings, None, labels, h, sampled,
                                           fused=False)
        assert loss.shape == (0,) and loss.dtype == tf.float32
    # The fused op has no loss to return for no examples (tested below).


@pytest.mark.parametrize("range_max", [NUM_CLASSES - 1, NUM_CLASSES + 1, 0, -1])
def test_candidate_sampler_range_max_must_be_the_class_count(range_max):
    sampler = make_sampler()
    raises_naming(ValueError, lambda: tfs.random.kernel_candidate_sampler(
        truth(), 1, 2, False, range_max, inputs=queries(), sampler=sampler),
        "range_max", f"({range_max})", str(NUM_CLASSES))


def test_candidate_sampler_unique_needs_num_sampled_at_most_range_max():
    sampler = make_sampler()
    raises_naming(ValueError, lambda: tfs.random.kernel_candidate_sampler(
        truth(), 1, NUM_CLASSES + 1, True, NUM_CLASSES, inputs=queries(), sampler=sampler),
        "num_sampled", f"({NUM_CLASSES + 1})", "range_max", f"({NUM_CLASSES})")
    # Without unique, more draws than classes is legal (TensorFlow's contract).
    sampled, _, _ = tfs.random.kernel_candidate_sampler(
        truth(), 1, NUM_CLASSES + 1, False, NUM_CLASSES, inputs=queries(), sampler=sampler)
    assert sampled.shape == (NUM_CLASSES + 1,)
    # unique with num_sampled == range_max draws every class once.
    sampled, _, _ = tfs.random.kernel_candidate_sampler(
        truth(), 1, NUM_CLASSES, True, NUM_CLASSES, inputs=queries(), sampler=sampler)
    assert sorted(sampled.numpy().tolist()) == list(range(NUM_CLASSES))


def test_candidate_sampler_num_true_mismatch_and_missing_inputs():
    sampler = make_sampler()
    raises_naming(ValueError, lambda: tfs.random.kernel_candidate_sampler(
        truth(2, 2), 1, 2, False, NUM_CLASSES, inputs=queries(), sampler=sampler),
        "num_true", "(2, 2)")
    raises_naming(ValueError, lambda: tfs.random.kernel_candidate_sampler(
        truth(), 0, 2, False, NUM_CLASSES, inputs=queries(), sampler=sampler), "num_true", "0")
    raises_naming(ValueError, lambda: sampler.candidate_sampler(
        truth(), 1, 2, False, NUM_CLASSES), "inputs")
    raises_naming(ValueError, lambda: tfs.random.kernel_candidate_sampler(
        truth(), 1, 2, False, NUM_CLASSES, inputs=queries(), sampler="kernel"), "sampler")


@pytest.mark.parametrize("bad_id", [NUM_CLASSES, -1, 2**40])
def test_refresh_rejects_out_of_range_ids_and_keeps_state(bad_id):
    sampler = make_sampler()
    nodes, rows = sampler.nodes.numpy(), sampler.rows.numpy()
    raises_naming(tf.errors.InvalidArgumentError, lambda: sampler.refresh([1, bad_id]),
                  "ids", f"[0, {NUM_CLASSES})", f"got {bad_id}")
    np.testing.assert_array_equal(sampler.nodes.numpy(), nodes)
    np.testing.assert_array_equal(sampler.rows.numpy(), rows)
    raises_naming(ValueError, lambda: sampler.refresh([0.5]), "ids", "float32")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("fmap", FEATURE_MAPS)
def test_refresh_ids_with_non_finite_row_keeps_state(fmap, bad):
    sampler = make_sampler(fmap)
    nodes, rows = sampler.nodes.numpy(), sampler.rows.numpy()
    sampler.embeddings[3].assign([0.0, bad, 0.0])
    raises_naming(tf.errors.InvalidArgumentError, lambda: sampler.refresh([0, 3]),
                  "embeddings", "finite", "class 3")
    np.testing.assert_array_equal(sampler.nodes.numpy(), nodes)
    np.testing.assert_array_equal(sampler.rows.numpy(), rows)


@pytest.mark.parametrize("fmap", FEATURE_MAPS)
def test_full_refresh_with_nan_row_keeps_state(fmap):
    # FAILS: KernelSampler.refresh() assigns the `rows` snapshot before the
    # build op runs, so a failed build leaves rows (new, NaN) out of step with
    # nodes (old). The next refresh(ids) then subtracts the wrong features (or,
    # as here, fails forever on the NaN snapshot even after the fix).
    sampler = make_sampler(fmap)
    nodes, rows = sampler.nodes.numpy(), sampler.rows.numpy()
    sampler.embeddings[1].assign([1.0, 2.0, 3.0])  # a legitimate change
    sampler.embeddings[3].assign([np.nan, 0.0, 0.0])
    raises_naming(tf.errors.InvalidArgumentError, sampler.refresh, "rows", "finite")
    np.testing.assert_array_equal(sampler.nodes.numpy(), nodes)
    np.testing.assert_array_equal(sampler.rows.numpy(), rows)
    sampler.embeddings[3].assign([0.5, 0.5, 0.5])
    sampler.refresh([1, 3])  # recovers incrementally


@pytest.mark.parametrize("bad_label", [NUM_CLASSES, -1])
@pytest.mark.parametrize("kind", ["per_example", "per_example_reference", "triple"])
def test_sampled_softmax_loss_rejects_out_of_range_labels(kind, bad_label):
    sampler = make_sampler()
    h = queries()
    sampled = (tfs.random.kernel_candidate_sampler(truth(), 1, 3, False, NUM_CLASSES,
                                                   inputs=h, sampler=sampler)
               if kind == "triple" else sampler.sample(h, 3, true_classes=truth()))
    labels = tf.constant([[0], [bad_label]], tf.int64)
    raises_naming((ValueError, tf.errors.InvalidArgumentError),
                  lambda: tfs.nn.sampled_softmax_loss(sampler.embeddings, None, labels, h,
                                                      sampled, fused=kind == "per_example"),
                  "labels", str(bad_label))


def fused_loss_case(**overrides):
    """A valid fused-loss call on a variable table, with some arguments replaced."""
    rng = np.random.default_rng(0)
    args = dict(
        weights=tf.Variable(rng.standard_normal((NUM_CLASSES, DIM)).astype(np.float32)),
        biases=tf.Variable(rng.standard_normal(NUM_CLASSES).astype(np.float32)),
        labels=tf.constant([[0], [4]], tf.int64), inputs=queries(),
        ids=tf.constant([[1, 2, 3], [0, 0, 4]], tf.int64),
        log_q=tf.fill([2, 3], -1.0), true_log_q=tf.fill([2, 1], -1.0))
    args.update(overrides)
    cands = tfs.samplers.SampledCandidates(args.pop("ids"), args.pop("log_q"),
                                           args.pop("true_log_q"))
    return lambda: tfs.nn.sampled_softmax_loss(
        args["weights"], args["biases"], args["labels"], args["inputs"], cands)


@pytest.mark.parametrize("bad_id", [-1, NUM_CLASSES, I64_MAX])
def test_fused_loss_rejects_out_of_range_candidates(bad_id):
    raises_naming(tf.errors.InvalidArgumentError, fused_loss_case(
        ids=tf.constant([[1, 2, 3], [0, bad_id, 4]], tf.int64)), "sampled", str(bad_id))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("which", ["log_q", "true_log_q"])
def test_fused_loss_rejects_non_finite_log_q(which, bad):
    value = np.full([2, 3 if which == "log_q" else 1], -1.0, np.float32)
    value[1, 0] = bad
    name = "sampled_log_count" if which == "log_q" else "true_log_count"
    raises_naming(tf.errors.InvalidArgumentError,
                  fused_loss_case(**{which: tf.constant(value)}), name, "finite")


def test_fused_loss_rejects_bad_shapes():
    raises_naming(ValueError, fused_loss_case(
        weights=tf.Variable(tf.zeros([NUM_CLASSES, DIM + 1]))), "weights", "inputs")
    raises_naming(ValueError, fused_loss_case(
        ids=tf.constant([1, 2, 3], tf.int64)), "sampled.ids", "(3,)")
    raises_naming(tf.errors.InvalidArgumentError, fused_loss_case(
        ids=tf.zeros([2, 0], tf.int64), log_q=tf.zeros([2, 0])), "sampled", "num_sampled")
    raises_naming(tf.errors.InvalidArgumentError, fused_loss_case(
        log_q=tf.zeros([2, 2])), "sampled_log_count", "[2,3]")
    raises_naming(tf.errors.InvalidArgumentError, fused_loss_case(
        true_log_q=tf.zeros([2, 2])), "true_log_count", "[2,1]")
    raises_naming(tf.errors.InvalidArgumentError, fused_loss_case(
        biases=tf.Variable(tf.zeros([NUM_CLASSES + 1]))), "biases", str(NUM_CLASSES))


def test_fused_loss_rejects_an_empty_batch():
    raises_naming(tf.errors.InvalidArgumentError, fused_loss_case(
        inputs=tf.zeros([0, DIM]), labels=tf.zeros([0, 1], tf.int64),
        ids=tf.zeros([0, 3], tf.int64), log_q=tf.zeros([0, 3]),
        true_log_q=tf.zeros([0, 1])), "inputs", "at least one row")


def test_raw_fused_loss_ops_reject_bad_tables_and_handles(ops):
    rng = np.random.default_rng(0)
    batch = dict(inputs=queries(), labels=truth(), sampled=tf.constant([[1, 2], [3, 4]],
                                                                         tf.int64),
                 sampled_log_count=tf.zeros([2, 2]), true_log_count=tf.zeros([2, 1]))
    emb = rng.standard_normal((NUM_CLASSES, DIM)).astype(np.float32)
    raises_naming(tf.errors.InvalidArgumentError, lambda: ops.tf_sampled_sampled_softmax_loss(
        weights=emb[:, :2], biases=np.zeros([0], np.float32), **batch), "inputs", str(2))
    raises_naming(tf.errors.InvalidArgumentError, lambda: ops.tf_sampled_sampled_softmax_loss(
        weights=np.zeros([0, DIM], np.float32), biases=np.zeros([0], np.float32), **batch),
        "weights", "non-empty")
    raises_naming(tf.errors.InvalidArgumentError,
                  lambda: ops.tf_sampled_resource_sampled_softmax_loss(
                      weights=tf.zeros([2]), biases=emb, **batch), "weights", "rank 2")
    raises_naming(tf.errors.InvalidArgumentError,
                  lambda: ops.tf_sampled_resource_sampled_softmax_loss(
                      weights=emb.astype(np.float64), biases=emb, has_biases=False, **batch),
                  "weights", "float")
    raises_naming(tf.errors.InvalidArgumentError,
                  lambda: ops.tf_sampled_sampled_softmax_loss_grad(
                      loss_grad=tf.ones([2]), logit_grads=tf.ones([2, 3]), inputs=queries(),
                      labels=truth(), sampled=tf.constant([[1, 2], [3, -4]], tf.int64)),
                  "sampled", "-4")
    raises_naming(tf.errors.InvalidArgumentError,
                  lambda: ops.tf_sampled_sampled_softmax_loss_grad(
                      loss_grad=tf.ones([2]), logit_grads=tf.ones([2, 4]), inputs=queries(),
                      labels=truth(), sampled=tf.constant([[1, 2], [3, 4]], tf.int64)),
                  "logit_grads", "[2, 3]")


def test_sampled_softmax_loss_rejects_bad_shapes_and_dtypes():
    sampler = make_sampler()
    h = queries()
    sampled = sampler.sample(h, 3, true_classes=truth())
    w = sampler.embeddings
    raises_naming(ValueError, lambda: tfs.nn.sampled_softmax_loss(
        w, None, tf.zeros([2, 1]), h, sampled), "labels", "float32")
    raises_naming(ValueError, lambda: tfs.nn.sampled_softmax_loss(
        w, None, tf.zeros([2, 1, 1], tf.int64), h, sampled), "labels", "(2, 1, 1)")
    raises_naming(ValueError, lambda: tfs.nn.sampled_softmax_loss(
        w, None, tf.zeros([3, 1], tf.int64), h, sampled), "labels", "(3, 1)")
    raises_naming(ValueError, lambda: tfs.nn.sampled_softmax_loss(
        w, None, truth(), tf.zeros([2, DIM + 1]), sampled), "weights", "inputs")
    raises_naming(ValueError, lambda: tfs.nn.sampled_softmax_loss(
        w, None, truth(), tf.zeros([DIM]), sampled), "inputs")
    raises_naming(ValueError, lambda: tfs.nn.sampled_softmax_loss(
        w, None, truth(), h, (tf.zeros([3], tf.int64), tf.ones([2, 1]))), "sampled")


# --------------------------------------------------------------------------
# Raw ops
# --------------------------------------------------------------------------

@pytest.mark.parametrize("op", RAW_OPS)
def test_raw_attr_validation(ops, op):
    s = raw_setup(ops)
    invalid = tf.errors.InvalidArgumentError
    for leaf_size in (0, -1, -(2**63)):
        raises_naming(invalid, lambda: call_raw(ops, op, s, leaf_size=leaf_size),
                      "leaf_size", leaf_size)
    for value, text in ((0.0, "got 0"), (-1.5, "got -1.5"), (float("nan"), "got nan"),
                        (float("inf"), "got inf")):
        raises_naming(invalid, lambda: call_raw(ops, op, s, temperature=value),
                      "temperature", text)
        raises_naming(invalid, lambda: call_raw(ops, op, s, alpha=value), "alpha", text)
    raises_naming(invalid, lambda: call_raw(ops, op, s, feature_map="bogus"),
                  "feature_map", "bogus")
    if op in ("sample", "candidate_sampler"):
        for num_sampled in (0, -1, -(2**63)):
            raises_naming(invalid, lambda: call_raw(ops, op, s, num_sampled=num_sampled),
                          "num_sampled", num_sampled)
    if op == "candidate_sampler":
        raises_naming(invalid, lambda: call_raw(ops, op, s, num_true=0), "num_true", "0")
        raises_naming(invalid, lambda: call_raw(ops, op, s, range_max=0), "range_max", "0")


def test_raw_build_rejects_bad_rows_and_omega(ops):
    invalid = tf.errors.InvalidArgumentError
    for fmap in FEATURE_MAPS:
        s = raw_setup(ops, fmap)
        rows = s["rows"]
        raises_naming(invalid, lambda: call_raw(ops, "build", s, rows=rows[0]),
                      "rows", "rank 2", "[3]")
        raises_naming(invalid, lambda: call_raw(ops, "build", s, rows=rows[:0]),
                      "rows", "[0,3]")
        raises_naming(invalid, lambda: call_raw(ops, "build", s, rows=rows[:, :0]),
                      "rows", "[5,0]")
        bad = rows.copy()
        bad[4, 1] = np.nan
        raises_naming(invalid, lambda: call_raw(ops, "build", s, rows=bad), "rows", "finite")
        raises_naming(invalid, lambda: call_raw(ops, "build", s, omega=np.zeros([4], np.float32)),
                      "omega", "rank 2")
        if fmap in RANDOM_MAPS:  # the other maps ignore omega
            omega = s["tree"]["omega"]
            raises_naming(invalid, lambda: call_raw(ops, "build", s, omega=omega[:, :2]),
                          "omega", "3 columns", "[4,2]")
            raises_naming(invalid, lambda: call_raw(ops, "build", s, omega=omega[:0]),
                          "omega", "[0,3]")
            bad = omega.copy()
            bad[2, 2] = np.inf
            raises_naming(invalid, lambda: call_raw(ops, "build", s, omega=bad),
                          "omega", "finite", "inf")
        # has_bias needs a bias column next to at least one weight column.
        raises_naming(invalid, lambda: call_raw(ops, "build", s, rows=rows[:, :1], has_bias=True,
                                                omega=np.zeros([4, 1], np.float32)),
                      "bias", "2 columns", "got 1")


def test_raw_update_rejects_bad_ids_rows_and_num_classes(ops):
    invalid = tf.errors.InvalidArgumentError
    s = raw_setup(ops)
    rows = s["rows"]
    for bad_id in (NUM_CLASSES, -1, I64_MAX, -(2**63)):
        ids = np.array([1, bad_id], np.int64)
        raises_naming(invalid, lambda: call_raw(ops, "update", s, ids=ids),
                      "ids", f"[0, {NUM_CLASSES})", f"got {bad_id}")
    raises_naming(invalid, lambda: call_raw(ops, "update", s, ids=np.zeros([2, 1], np.int64)),
                  "ids", "rank 1")
    for num_classes in (0, -1):
        raises_naming(invalid, lambda: call_raw(ops, "update", s,
                                                num_classes=np.int64(num_classes)),
                      "num_classes", f"got {num_classes}")
    raises_naming(invalid, lambda: call_raw(ops, "update", s,
                                            num_classes=np.array([5], np.int64)),
                  "num_classes", "rank 0")
    raises_naming(invalid, lambda: call_raw(ops, "update", s, old_rows=rows[:1]),
                  "old_rows", "new_rows", "[1,3]")
    raises_naming(invalid, lambda: call_raw(ops, "update", s, new_rows=rows[:2, :2]),
                  "old_rows", "new_rows", "[2,2]")
    for which in ("old_rows", "new_rows"):
        bad = rows[[1, 3]].copy()
        bad[1, 0] = np.nan
        raises_naming(invalid, lambda: call_raw(ops, "update", s, **{which: bad}),
                      which, "finite", "class 3")
    raises_naming(invalid, lambda: call_raw(ops, "update", s,
                                            omega=np.zeros([4, 2], np.float32)),
                  "omega", "[4,2]")
    # No ids: an empty update, not an error.
    node_ids, deltas = call_raw(ops, "update", s, ids=np.zeros([0], np.int64),
                                old_rows=rows[:0], new_rows=rows[:0])
    assert node_ids.shape == (0,) and deltas.shape == (0, s["tree"]["nodes"].shape[1])


@pytest.mark.parametrize("with_biases", [False, True])
def test_raw_refresh_rows_rejects_bad_variables_and_keeps_state(ops, with_biases):
    invalid = tf.errors.InvalidArgumentError
    s = raw_setup(ops, with_biases=with_biases)
    tree, rows = s["tree"], s["rows"]
    nodes = tf.Variable(tree["nodes"])
    snapshot = tf.Variable(rows)

    def refresh(**overrides):
        args = dict(nodes=nodes, rows=snapshot)
        args.update(overrides)
        return call_raw(ops, "refresh_rows", s, **args)

    for bad_id in (NUM_CLASSES, -1, I64_MAX, -(2**63)):
        raises_naming(invalid, lambda: refresh(ids=np.array([1, bad_id], np.int64)),
                      "ids", f"[0, {NUM_CLASSES})", f"got {bad_id}")
    bad = tree["embeddings"].copy()
    bad[3, 0] = np.nan
    raises_naming(invalid, lambda: refresh(embeddings=bad), "embeddings", "finite", "class 3")
    raises_naming(invalid, lambda: refresh(rows=rows[:, :2]), "rows", "snapshot",
                  f"[{NUM_CLASSES}, {rows.shape[1]}]", f"[{NUM_CLASSES},2]")
    raises_naming(invalid, lambda: refresh(rows=rows.astype(np.float64)), "rows", "float")
    raises_naming(invalid, lambda: refresh(nodes=tree["nodes"][:-1]), "nodes", "shape")
    raises_naming(invalid, lambda: refresh(nodes=tree["nodes"].astype(np.float32)),
                  "nodes", "double")
    raises_naming(invalid, lambda: refresh(biases=np.zeros([2], np.float32)), "biases", "[2]")
    raises_naming(invalid, lambda: refresh(omega=np.zeros([4, 2], np.float32)), "omega", "[4,2]")
    raises_naming(invalid, lambda: refresh(rows=nodes), "rows", "nodes", "different variables")
    raises_naming(invalid, lambda: refresh(rows=np.zeros([2], np.int64)), "rows")
    raises_naming(invalid, lambda: refresh(nodes=np.zeros([2], np.float32)), "nodes")
    # Nothing above changed the state; no ids is an empty refresh.
    refresh(ids=np.zeros([0], np.int64))
    np.testing.assert_array_equal(nodes.numpy(), tree["nodes"])
    np.testing.assert_array_equal(snapshot.numpy(), rows)



@pytest.mark.parametrize("num_classes,leaf_size", [(I64_MAX, 2), (I64_MAX - 1, 3),
                                                   (2**62, I64_MAX)])
def test_raw_update_rejects_num_classes_that_overflow_the_tree(ops, num_classes, leaf_size):
    # FAILS: ceil(num_classes / leaf_size) is computed as
    # (num_classes + leaf_size - 1) / leaf_size (TreeShape::NumLeaves), which
    # overflows int64 here; the op then returns an empty update for ids [1, 3]
    # (their paths start at a node id <= 0), silently dropping the change.
    s = raw_setup(ops)
    fn = lambda: call_raw(ops, "update", s, num_classes=np.int64(num_classes),
                          leaf_size=leaf_size)
    message = raises_naming(tf.errors.InvalidArgumentError, fn)
    assert "num_classes" in message or "leaf_size" in message, message


@pytest.mark.parametrize("op", QUERY_OPS)
@pytest.mark.parametrize("fmap", FEATURE_MAPS)
def test_raw_query_ops_reject_bad_tables(ops, fmap, op):
    invalid = tf.errors.InvalidArgumentError
    s = raw_setup(ops, fmap)
    tree = s["tree"]
    nodes, emb = tree["nodes"], tree["embeddings"]
    f = nodes.shape[1]
    for shape in ([nodes.shape[0] - 2, f], [nodes.shape[0] + 2, f], [nodes.shape[0], f + 1],
                  [0, f], [nodes.shape[0], 0]):
        raises_naming(invalid, lambda: call_raw(ops, op, s, nodes=np.zeros(shape)),
                      "nodes", f"[{nodes.shape[0]}, {f}]", "[%d,%d]" % tuple(shape))
    raises_naming(invalid, lambda: call_raw(ops, op, s, nodes=nodes[0]), "nodes", "rank 2")
    raises_naming(invalid, lambda: call_raw(ops, op, s, embeddings=emb[:0]),
                  "embeddings", "[0,3]")
    raises_naming(invalid, lambda: call_raw(ops, op, s, embeddings=emb[0]),
                  "embeddings", "rank 2")
    raises_naming(invalid, lambda: call_raw(ops, op, s, biases=np.zeros([3], np.float32)),
                  "biases", f"[{NUM_CLASSES}]", "[3]")
    raises_naming(invalid, lambda: call_raw(ops, op, s, biases=np.zeros([1, 5], np.float32)),
                  "biases", "rank 1")
    for shape in ([2, DIM + 1], [2, DIM - 1], [2, 0]):
        raises_naming(invalid, lambda: call_raw(ops, op, s, inputs=np.zeros(shape, np.float32)),
                      "inputs", f"{DIM} columns", "[%d,%d]" % tuple(shape))
    raises_naming(invalid, lambda: call_raw(ops, op, s, inputs=np.zeros([DIM], np.float32)),
                  "inputs", "rank 2")
    for bad in (np.nan, np.inf, -np.inf):
        inputs = tree["inputs"].copy()
        inputs[1, 1] = bad
        raises_naming(invalid, lambda: call_raw(ops, op, s, inputs=inputs),
                      "inputs", "finite", str(float(bad)), "flat index 4")
        if fmap in RANDOM_MAPS:
            omega = tree["omega"].copy()
            omega[0, 0] = bad
            raises_naming(invalid, lambda: call_raw(ops, op, s, omega=omega), "omega", "finite")
    if fmap in RANDOM_MAPS:
        raises_naming(invalid, lambda: call_raw(ops, op, s, omega=tree["omega"][:, :2]),
                      "omega", "[4,2]")


@pytest.mark.parametrize("op", QUERY_OPS)
def test_raw_query_ops_reject_bad_class_ids(ops, op):
    invalid = tf.errors.InvalidArgumentError
    s = raw_setup(ops)
    name = IDS_ARG[op]
    for bad_id in (NUM_CLASSES, -1, I64_MAX, -(2**63)):
        ids = np.array([[0], [bad_id]], np.int64)
        raises_naming(invalid, lambda: call_raw(ops, op, s, **{name: ids}),
                      name, f"[0, {NUM_CLASSES})", f"got {bad_id}", "flat index 1")
    for shape in ([2], [2, 1, 1], []):
        raises_naming(invalid, lambda: call_raw(ops, op, s, **{name: np.zeros(shape, np.int64)}),
                      name, "rank 2")
    raises_naming(invalid, lambda: call_raw(ops, op, s, **{name: np.zeros([3, 1], np.int64)}),
                  name, "[3,1]")
    # Wrong dtype: the generated wrapper refuses to convert a tensor (its
    # message is TensorFlow's and does not name the input in eager mode).
    # NumPy arrays are cast by TensorFlow's conversion (float ids truncated):
    # only the Python API rejects those.
    for ids in (tf.zeros([2, 1], tf.int32), tf.zeros([2, 1], tf.float32),
                tf.constant([["0"], ["1"]])):
        with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError)):
            call_raw(ops, op, s, **{name: ids})


def test_raw_candidate_sampler_contract(ops):
    invalid = tf.errors.InvalidArgumentError
    s = raw_setup(ops)
    for range_max in (NUM_CLASSES - 1, NUM_CLASSES + 1, 2**62):
        raises_naming(invalid, lambda: call_raw(ops, "candidate_sampler", s,
                                                range_max=range_max, unique=False),
                      "range_max", f"({range_max})", f"({NUM_CLASSES})")
    raises_naming(invalid, lambda: call_raw(ops, "candidate_sampler", s,
                                            num_sampled=NUM_CLASSES + 1, unique=True),
                  "num_sampled", f"({NUM_CLASSES + 1})", "range_max", "unique")
    raises_naming(invalid, lambda: call_raw(ops, "candidate_sampler", s, num_true=2),
                  "true_classes", "[2, 2]", "[2,1]")
    sampled, _, _ = call_raw(ops, "candidate_sampler", s, num_sampled=NUM_CLASSES + 3,
                             unique=False)
    assert sampled.shape == (NUM_CLASSES + 3,)


@pytest.mark.parametrize("op", ["sample", "candidate_sampler"])
@pytest.mark.parametrize("batch", [2, 0])
def test_raw_sampling_ops_reject_bad_counters(ops, op, batch):
    s = raw_setup(ops, batch=batch)
    assert_rejects_bad_counters(lambda counter: call_raw(
        ops, op, s, counter=counter, true_classes=np.zeros([batch, 1], np.int64)))


@pytest.mark.parametrize("fmap", FEATURE_MAPS)
@pytest.mark.parametrize("with_biases", [False, True])
def test_raw_empty_batch(ops, fmap, with_biases):
    s = raw_setup(ops, fmap, with_biases=with_biases, batch=0)
    ids, log_q, true_log_q = call_raw(ops, "sample", s, true_classes=np.zeros([0, 2], np.int64),
                                      num_sampled=4)
    assert (ids.shape, log_q.shape, true_log_q.shape) == ((0, 4), (0, 4), (0, 2))
    assert call_raw(ops, "log_prob", s, classes=np.zeros([0, 3], np.int64)).shape == (0, 3)
    for unique in (False, True):
        sampled, true_count, sampled_count = call_raw(
            ops, "candidate_sampler", s, true_classes=np.zeros([0, 2], np.int64), num_true=2,
            num_sampled=3, unique=unique)
        assert (sampled.shape, true_count.shape, sampled_count.shape) == ((3,), (0, 2), (3,))
        assert np.all((sampled.numpy() >= 0) & (sampled.numpy() < NUM_CLASSES))
    # Zero classes per row is fine too.
    assert call_raw(ops, "log_prob", s, classes=np.zeros([0, 0], np.int64)).shape == (0, 0)
    s = raw_setup(ops, fmap, with_biases=with_biases, batch=2)
    assert call_raw(ops, "log_prob", s, classes=np.zeros([2, 0], np.int64)).shape == (2, 0)


def test_raw_nan_embedding_row_read_by_sampling(ops):
    s = raw_setup(ops, "positive_random", leaf_size=NUM_CLASSES)
    emb = s["tree"]["embeddings"].copy()
    emb[2, 0] = np.nan
    for op in QUERY_OPS:
        raises_naming(tf.errors.InvalidArgumentError,
                      lambda: call_raw(ops, op, s, embeddings=emb), "embeddings", "finite")


# --------------------------------------------------------------------------
# Crash cases (child_scripts/crash_kernel.py), each in its own interpreter
# --------------------------------------------------------------------------

CRASH_CASES = list(crash_cases(crash_kernel))


@pytest.fixture(scope="module")
def crash_runs():
    """All crash cases, started at once (each pays TensorFlow's import)."""
    procs = {case: start_crash_cases(crash_kernel, case) for case in CRASH_CASES}
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("case", CRASH_CASES)
def test_no_crash(crash_runs, case):
    check_crash_cases(crash_runs[case], [case])


# --------------------------------------------------------------------------
# Random malformed calls against every raw op (child_scripts/fuzz_kernel.py)
# --------------------------------------------------------------------------

FUZZ_SEED, FUZZ_CALLS = 1234, 960


def test_fuzz_raw_ops_never_kill_the_process():
    run_fuzz(fuzz_kernel, FUZZ_SEED, FUZZ_CALLS, RAW_OPS + LOSS_OPS + SPARSE_APPLY_OPS)
