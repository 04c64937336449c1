"""Malformed input to the LSH ops and LSHSampler: clear errors, never a crash.

Every bad argument gives ValueError (Python) or InvalidArgumentError (op)
whose message names the argument (and the bad value where the op reports
it). Cases that could kill the interpreter, and a random fuzz over every raw
LSH op, run in a subprocess (child_process; the cases and the fuzz are the
modules child_scripts/crash_lsh.py and fuzz_lsh.py).
"""
import numpy as np
import pytest
import tensorflow as tf

import tf_sampled as tfs
from child_process import run_crash_cases, run_fuzz
from child_scripts import crash_lsh, fuzz_lsh
from error_assertions import assert_rejects_bad_counters, raises_naming

NUM_CLASSES, DIM = 20, 4
InvalidArgument = tf.errors.InvalidArgumentError


def make_sampler(**kwargs):
    W = tf.Variable(np.random.default_rng(0).standard_normal((NUM_CLASSES, DIM)).astype(np.float32))
    config = dict(num_tables=3, num_hashes=2, bucket_size=4, seed=1)
    config.update(kwargs)
    return tfs.samplers.LSHSampler(W, **config)


def queries(batch=2, seed=1):
    return tf.constant(np.random.default_rng(seed).standard_normal((batch, DIM)), tf.float32)


# --------------------------------------------------------------------------
# LSHSampler (Python API)
# --------------------------------------------------------------------------

@pytest.mark.parametrize("arg, value", [
    ("num_tables", 0), ("num_tables", -1), ("num_tables", 2.5), ("num_tables", True),
    ("num_hashes", 0), ("num_hashes", -3), ("bucket_size", 0), ("bucket_size", -1),
    ("epsilon", 0.0), ("epsilon", -0.1), ("epsilon", 1.5), ("epsilon", float("nan")),
    ("epsilon", "0.1"),
    ("family", "minhash"), ("query", "both"), ("rebuild_every", 0), ("rehash_every", -2),
])
def test_sampler_rejects_bad_arguments(arg, value):
    raises_naming(ValueError, lambda: make_sampler(**{arg: value}), arg, repr(value))


@pytest.mark.parametrize("kwargs, bits", [
    (dict(num_hashes=31), 31),
    (dict(family="dwta", bin_size=8, num_hashes=11), 33),
])
def test_sampler_rejects_num_hashes_too_large_for_the_hash_width(kwargs, bits):
    raises_naming(ValueError, lambda: make_sampler(**kwargs), "num_hashes", "hash width",
                  str(bits))


@pytest.mark.parametrize("bin_size", [1, 3, 6])
def test_dwta_bin_size_must_be_a_power_of_two(bin_size):
    raises_naming(ValueError, lambda: make_sampler(family="dwta", bin_size=bin_size),
                  "bin_size", str(bin_size))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_embeddings_at_build_and_refresh(bad):
    table = np.random.default_rng(0).standard_normal((NUM_CLASSES, DIM)).astype(np.float32)
    table[7, 1] = bad
    raises_naming(InvalidArgument, lambda: tfs.samplers.LSHSampler(tf.Variable(table)),
                  "embeddings", "finite", "row 7")
    sampler = make_sampler()
    saved = [v.numpy().copy() for v in (sampler.buckets, sampler.counts, sampler.codes)]
    sampler.embeddings.scatter_update(tf.IndexedSlices(tf.fill([1, DIM], bad), [11]))
    raises_naming(InvalidArgument, sampler.refresh, "embeddings", "row 11")
    raises_naming(InvalidArgument, lambda: sampler.refresh([3, 11]), "embeddings", "row 11")
    for var, before in zip((sampler.buckets, sampler.counts, sampler.codes), saved):
        np.testing.assert_array_equal(var.numpy(), before)  # state kept


@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_non_finite_queries(bad):
    sampler = make_sampler()
    h = queries().numpy()
    h[1, 2] = bad
    raises_naming(InvalidArgument, lambda: sampler.sample(h, 3), "queries", "finite")
    raises_naming(InvalidArgument, lambda: sampler.log_prob(h, [[0], [1]]), "queries")
    raises_naming(InvalidArgument, lambda: tfs.random.lsh_candidate_sampler(
        [[0], [1]], 1, 3, False, NUM_CLASSES, inputs=h, sampler=sampler), "queries")


@pytest.mark.parametrize("bad_id", [NUM_CLASSES, -1, 2**40])
@pytest.mark.parametrize("query", ["embedding", "label"])
def test_out_of_range_class_ids(bad_id, query):
    sampler = make_sampler(query=query)
    ids = tf.constant([[0], [bad_id]], tf.int64)
    fragments = ("true_classes", f"[0, {NUM_CLASSES})", f"got {bad_id}")
    raises_naming(InvalidArgument, lambda: sampler.sample(queries(), 2, true_classes=ids),
                  *fragments)
    raises_naming(InvalidArgument, lambda: tfs.random.lsh_candidate_sampler(
        ids, 1, 2, True, NUM_CLASSES, inputs=queries(), sampler=sampler), *fragments)
    if query == "embedding":
        raises_naming(InvalidArgument, lambda: sampler.log_prob(queries(), ids), "classes",
                      f"got {bad_id}")
    raises_naming(InvalidArgument, lambda: sampler.refresh([1, bad_id]), "ids", f"got {bad_id}")


def test_python_argument_errors():
    sampler = make_sampler()
    raises_naming(ValueError, lambda: sampler.sample(queries(), 0), "num_sampled", "0")
    raises_naming(ValueError, lambda: sampler.sample(tf.zeros([2, DIM + 1]), 2), "inputs",
                  "shape")
    raises_naming(ValueError, lambda: sampler.sample(tf.zeros([2, DIM], tf.int32), 2),
                  "inputs", "int32")
    raises_naming(ValueError, lambda: sampler.refresh(tf.constant([1.0])), "ids", "float32")
    raises_naming(ValueError, lambda: tfs.random.lsh_candidate_sampler(
        [[0], [1]], 1, 3, False, NUM_CLASSES + 1, inputs=queries(), sampler=sampler),
        "range_max")
    raises_naming(ValueError, lambda: tfs.random.lsh_candidate_sampler(
        [[0], [1]], 1, NUM_CLASSES + 1, True, NUM_CLASSES, inputs=queries(), sampler=sampler),
        "num_sampled", "unique")
    raises_naming(ValueError, lambda: tfs.random.lsh_candidate_sampler(
        [[0], [1]], 2, 3, False, NUM_CLASSES, inputs=queries(), sampler=sampler),
        "true_classes", "num_true=2")
    raises_naming(ValueError, lambda: tfs.random.lsh_candidate_sampler(
        [[0], [1]], 1, 3, False, NUM_CLASSES, inputs=None, sampler=sampler), "inputs")
    raises_naming(ValueError, lambda: tfs.random.lsh_candidate_sampler(
        [[0], [1]], 1, 3, False, NUM_CLASSES, inputs=queries(), sampler=object()), "sampler")
    raises_naming(ValueError, lambda: make_sampler(query="label").log_prob(queries(), [[0], [1]]),
                  "true_classes")


@pytest.mark.parametrize("query", ["embedding", "label"])
def test_empty_batch_returns_empty_outputs(query):
    sampler = make_sampler(query=query)
    h = tf.zeros([0, DIM])
    truth = tf.zeros([0, 2], tf.int64)
    cands = sampler.sample(h, 3, true_classes=truth)
    assert cands.ids.shape == (0, 3) and cands.log_q.shape == (0, 3)
    assert cands.true_log_q.shape == (0, 2)
    assert sampler.log_prob(h, tf.zeros([0, 4], tf.int64), true_classes=truth).shape == (0, 4)
    sampled, true_count, sampled_count = tfs.random.lsh_candidate_sampler(
        truth[:, :1], 1, 3, True, NUM_CLASSES, inputs=h, sampler=sampler)
    assert sampled.shape == (3,) and true_count.shape == (0, 1)
    np.testing.assert_allclose(sampled_count.numpy()[0], 1 - (1 - 1 / NUM_CLASSES)**3,
                               rtol=0.5)  # uniform when there is no query
    sampler.refresh(tf.zeros([0], tf.int64))  # nothing to re-insert


# --------------------------------------------------------------------------
# Raw ops
# --------------------------------------------------------------------------

def raw_state(ops, family="simhash", num_tables=3, num_hashes=2, bin_size=4, bucket_size=4):
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((NUM_CLASSES, DIM)).astype(np.float32)
    rows = num_tables * num_hashes
    params = (rng.standard_normal((rows, DIM)) if family == "simhash"
              else rng.integers(0, DIM, size=(rows, bin_size))).astype(np.float32)
    attrs = dict(family=family, num_tables=num_tables, num_hashes=num_hashes, bin_size=bin_size)
    buckets, counts, codes = (t.numpy() for t in ops.tf_sampled_lsh_build(
        embeddings=emb, hash_params=params, bucket_size=bucket_size, **attrs))
    tables = dict(buckets=buckets, counts=counts, codes=codes, hash_params=params)
    return dict(emb=emb, params=params, attrs=attrs, tables=tables, bucket_size=bucket_size,
                queries=rng.standard_normal((2, DIM)).astype(np.float32))


def call_raw(ops, op, state, **overrides):
    tables, attrs = dict(state["tables"]), dict(state["attrs"])
    if op == "build":
        args = dict(embeddings=state["emb"], hash_params=state["params"],
                    bucket_size=state["bucket_size"], **attrs)
    elif op == "update":
        args = dict(embeddings=state["emb"], ids=np.array([1, 3], np.int64), **tables, **attrs)
    elif op == "sample":
        args = dict(queries=state["queries"], true_classes=np.zeros([2, 1], np.int64),
                    counter=np.int64(0), num_sampled=3, **tables, **attrs)
    elif op == "log_prob":
        args = dict(queries=state["queries"], classes=np.zeros([2, 2], np.int64), **tables,
                    **attrs)
    else:
        args = dict(queries=state["queries"], true_classes=np.zeros([2, 1], np.int64),
                    counter=np.int64(0), num_true=1, num_sampled=3, unique=True,
                    range_max=NUM_CLASSES, **tables, **attrs)
    args.update(overrides)
    return getattr(ops, f"tf_sampled_lsh_{op}")(**args)


LSH_OPS = ["build", "update", "sample", "log_prob", "candidate_sampler"]


@pytest.mark.parametrize("op", LSH_OPS)
def test_raw_ops_accept_valid_calls(ops, op):
    call_raw(ops, op, raw_state(ops))
    call_raw(ops, op, raw_state(ops, family="dwta"), family="dwta")


@pytest.mark.parametrize("op", LSH_OPS)
@pytest.mark.parametrize("attr, value", [("num_tables", 0), ("num_tables", -1),
                                         ("num_hashes", 0), ("num_hashes", -5),
                                         ("num_hashes", 31)])
def test_raw_hash_attrs(ops, op, attr, value):
    state = raw_state(ops)
    fragments = (attr, str(value)) if value < 1 else ("num_hashes", "hash width")
    raises_naming(InvalidArgument, lambda: call_raw(ops, op, state, **{attr: value}), *fragments)


@pytest.mark.parametrize("bin_size", [0, 1, 3, 2**20])
def test_raw_dwta_bin_size(ops, bin_size):
    state = raw_state(ops, family="dwta")
    raises_naming(InvalidArgument, lambda: call_raw(ops, "sample", state, bin_size=bin_size),
                  "bin_size", str(bin_size))


def test_raw_build_limits(ops):
    state = raw_state(ops)
    for size in (0, -1):
        raises_naming(InvalidArgument, lambda: call_raw(ops, "build", state, bucket_size=size),
                      "bucket_size", str(size))
    raises_naming(InvalidArgument, lambda: call_raw(
        ops, "build", state, num_tables=2**20, num_hashes=20,
        hash_params=np.zeros([2**20 * 20, DIM], np.float32)[:1]), "hash_params")
    raises_naming(InvalidArgument, lambda: call_raw(
        ops, "build", state, num_tables=1, num_hashes=30, bucket_size=8,
        hash_params=np.ones([30, DIM], np.float32)), "bucket slots", "bucket_size")
    raises_naming(InvalidArgument, lambda: call_raw(
        ops, "build", state, embeddings=np.zeros([0, DIM], np.float32)), "embeddings", "rows")


@pytest.mark.parametrize("op", LSH_OPS)
def test_raw_bad_hash_params(ops, op):
    state = raw_state(ops)
    params = state["params"]
    raises_naming(InvalidArgument, lambda: call_raw(ops, op, state, hash_params=params[:-1]),
                  "hash_params", "shape")
    nan = params.copy()
    nan[0, 0] = np.nan
    raises_naming(InvalidArgument, lambda: call_raw(ops, op, state, hash_params=nan),
                  "hash_params", "finite")
    dwta = raw_state(ops, family="dwta")
    for bad in (-1.0, float(DIM), 1.5):
        coords = dwta["params"].copy()
        coords[1, 0] = bad
        raises_naming(InvalidArgument, lambda: call_raw(ops, op, dwta, family="dwta",
                                                        hash_params=coords),
                      "hash_params", "coordinate", f"got {bad:g}")


@pytest.mark.parametrize("op", ["update", "sample", "log_prob", "candidate_sampler"])
def test_raw_bad_table_state(ops, op):
    state = raw_state(ops)
    t = state["tables"]
    cases = [
        (dict(buckets=t["buckets"].astype(np.int64)), ("buckets", "int32")),
        (dict(buckets=t["buckets"][:-1]), ("buckets", "shape")),
        (dict(buckets=t["buckets"][:, :0]), ("buckets", "shape")),
        (dict(counts=t["counts"][:-1]), ("counts", "shape")),
        (dict(codes=t["codes"][:, :-1]), ("codes", "shape")),
        (dict(codes=t["codes"][:0]), ("codes", "num_classes")),
        (dict(counts=np.full_like(t["counts"], state["bucket_size"] + 1)), ("counts", "got 5")),
        (dict(counts=np.full_like(t["counts"], -1)), ("counts", "got -1")),
    ]
    for overrides, fragments in cases:
        raises_naming(InvalidArgument, lambda: call_raw(ops, op, state, **overrides), *fragments)


def test_raw_bad_members_and_codes(ops):
    state = raw_state(ops)
    t = state["tables"]
    for member in (-1, NUM_CLASSES, 2**31 - 1):
        buckets = np.full_like(t["buckets"], member)
        raises_naming(InvalidArgument, lambda: call_raw(
            ops, "sample", state, buckets=buckets, counts=np.full_like(t["counts"], 2)),
            "buckets", "class ids")
    codes = t["codes"].copy()
    codes[3, 1] = 1 << 20
    raises_naming(InvalidArgument, lambda: call_raw(ops, "update", state, codes=codes),
                  "codes", str(1 << 20))
    codes[3, 1] = -4  # a code outside the table never indexes: log q still works
    call_raw(ops, "candidate_sampler", state, codes=codes)
    call_raw(ops, "log_prob", state, codes=codes, classes=np.full([2, 2], 3, np.int64))


def test_raw_query_and_id_shapes(ops):
    state = raw_state(ops)
    raises_naming(InvalidArgument, lambda: call_raw(
        ops, "sample", state, true_classes=np.zeros([3, 1], np.int64)), "true_classes", "rows")
    raises_naming(InvalidArgument, lambda: call_raw(
        ops, "update", state, ids=np.zeros([2, 1], np.int64)), "ids", "rank")
    raises_naming(InvalidArgument, lambda: call_raw(
        ops, "candidate_sampler", state, range_max=NUM_CLASSES + 1), "range_max")
    raises_naming(InvalidArgument, lambda: call_raw(
        ops, "candidate_sampler", state, num_true=2), "num_true=2")
    raises_naming(InvalidArgument, lambda: call_raw(
        ops, "candidate_sampler", state, num_sampled=NUM_CLASSES + 1), "num_sampled", "unique")
    for eps in (0.0, -1.0, 1.5, float("nan")):
        raises_naming(InvalidArgument, lambda: call_raw(ops, "sample", state, epsilon=eps),
                      "epsilon")
    raises_naming(InvalidArgument, lambda: call_raw(ops, "sample", state, num_sampled=0),
                  "num_sampled", "0")
    raises_naming(InvalidArgument, lambda: call_raw(ops, "update", state,
                                                    embeddings=state["emb"][:-1]),
                  "embeddings", "rows")


@pytest.mark.parametrize("op", ["sample", "candidate_sampler"])
def test_raw_sampling_ops_reject_bad_counters(ops, op):
    state = raw_state(ops)
    assert_rejects_bad_counters(lambda counter: call_raw(ops, op, state, counter=counter))


# --------------------------------------------------------------------------
# In a subprocess: overflow and huge sizes (child_scripts/crash_lsh.py), and a random
# fuzz (child_scripts/fuzz_lsh.py)
# --------------------------------------------------------------------------

def test_no_crash():
    """All cases in one interpreter (one TensorFlow import); CASE lines say which died."""
    run_crash_cases(crash_lsh)


FUZZ_SEED, FUZZ_CALLS = 4321, 400


def test_fuzz_raw_lsh_ops_never_kill_the_process():
    run_fuzz(fuzz_lsh, FUZZ_SEED, FUZZ_CALLS, LSH_OPS)
