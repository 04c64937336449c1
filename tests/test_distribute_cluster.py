"""tfs.distribute.Trainer on local clusters: processes on localhost with TF_CONFIG.

Each cluster runs tests/distribute_worker.py in every worker
(`tfs.distribute.run_local_cluster`: a worker that dies or hangs fails the
test with its stderr tail; every process is killed at the time limit). The
reference is one process training the same model on the same global batches
with MirroredStrategy over two logical CPUs: the same two replicas, so the
same per-replica sample streams.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import tf_sampled as tfs

TESTS = os.path.dirname(os.path.abspath(__file__))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
           PYTHONPATH=os.pathsep.join([TESTS, os.path.dirname(TESTS)]))
WORKER = [sys.executable, "-X", "faulthandler", os.path.join(TESTS, "distribute_worker.py")]
STEPS = 6
TIMEOUT_S = 240


def run_cluster(options, num_workers=2, **kwargs):
    """Worker results of one cluster run; fails naming the worker that failed."""
    results = tfs.distribute.run_local_cluster(
        WORKER + [json.dumps(options)], num_workers, timeout_s=TIMEOUT_S, env=ENV, **kwargs)
    if not all(r.ok for r in results):
        pytest.fail(f"cluster run {options} failed:\n{tfs.distribute.describe_failure(results)}",
                    pytrace=False)
    return results


def load(out, worker=0):
    with open(os.path.join(out, f"history_{worker}.json"), encoding="utf-8") as f:
        history = json.load(f)
    return dict(np.load(os.path.join(out, f"state_{worker}.npz"))), history


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(state, history) of one process with two replicas, uninterrupted."""
    out = str(tmp_path_factory.mktemp("reference"))
    try:
        result = subprocess.run(
            WORKER + [json.dumps({"strategy": "mirrored2", "steps": STEPS, "out": out})],
            env=ENV, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"the reference process hung: {error}", pytrace=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return load(out)


def assert_same_state(state, expected, what):
    for key, value in expected.items():
        if key.startswith("next_draw") or key not in state:
            continue
        np.testing.assert_allclose(state[key], value, rtol=1e-6, atol=1e-7,
                                   err_msg=f"{what}: {key}")


@pytest.mark.slow  # a 2-process cluster and a reference process, about 30 s on 2 cores
def test_two_workers_train_like_one_process(tmp_path, reference):
    run_cluster({"steps": STEPS, "out": str(tmp_path)})
    (state0, history0), (state1, _) = load(tmp_path, 0), load(tmp_path, 1)
    ref_state, ref_history = reference

    # The same weights, sampler state and losses as one process on the same global batches.
    assert_same_state(state0, ref_state, "worker 0 vs one process")
    np.testing.assert_allclose([r["loss"] for r in history0["train"]],
                               [r["loss"] for r in ref_history["train"]], rtol=1e-6)
    assert history0["eval"] == pytest.approx(ref_history["eval"], rel=1e-6)

    # Identical copies on both workers: table, tree, row snapshot, stream.
    assert sorted(state0) == sorted(state1)
    for key in state0:
        if not key.startswith("next_draw"):
            np.testing.assert_array_equal(state0[key], state1[key], err_msg=key)
    assert state0["sampler/head/kernel_sampler/sample_stream/counter:0/replica0"] > 0

    # Distinct negatives per replica (stream position counter x 2 + replica id),
    # the same ones as the one-process replicas.
    assert not np.array_equal(state0["next_draw/replica0"], state1["next_draw/replica0"])
    np.testing.assert_array_equal(state0["next_draw/replica0"], ref_state["next_draw/replica0"])
    np.testing.assert_array_equal(state1["next_draw/replica0"], ref_state["next_draw/replica1"])

    # The class table's gradient is all-gathered as rows + ids, never reduced
    # as a dense [num_classes, dim] tensor.
    collectives = history0["collectives"]
    table = 200 * 16
    sizes = [int(np.prod([d or 1 for d in c["shape"]])) for c in collectives]
    assert max(sizes) < table, collectives
    assert {"op": "CollectiveGatherV2", "dtype": "float32", "shape": [None, 16]} in collectives
    dense = [c for c in collectives if c["op"] == "CollectiveReduceV2" and c["dtype"] == "float32"]
    assert dense and all(c["shape"] != [200, 16] for c in dense), collectives

    # The check notices a replica that drifted.
    assert "replicas [1] hold a different" in ref_history["drift"]
    assert "kernel_sampler/nodes" in ref_history["drift"]


@pytest.mark.slow  # two 2-process clusters in a row, about 45 s on 2 cores
def test_stalled_worker_fails_the_cluster_and_a_restart_resumes_identically(tmp_path,
                                                                            reference):
    checkpoints = str(tmp_path / "checkpoints")
    # Worker 1 stalls after step 4 (whose end fit checkpoints): worker 0's next
    # collective times out, a ClusterError instead of a hang.
    start = time.monotonic()
    crashed = tfs.distribute.run_local_cluster(
        WORKER + [json.dumps({"steps": STEPS, "out": str(tmp_path / "crashed"),
                              "checkpoint_dir": checkpoints, "die_at_step": 4, "stall": 300,
                              "collective_timeout_s": 5})],
        2, timeout_s=TIMEOUT_S, env=ENV, grace_s=3)
    elapsed = time.monotonic() - start
    assert crashed[0].returncode == 1, tfs.distribute.describe_failure(crashed)
    assert "ClusterError: worker:0 of a 2-worker cluster, training step 5: a collective " \
           "operation waited longer than collective_timeout_s=5 s" in crashed[0].stderr, \
        crashed[0].stderr[-3000:]
    assert f"the last checkpoint in {checkpoints} resumes the run" in crashed[0].stderr
    assert "stalling" in crashed[1].stdout
    assert elapsed < TIMEOUT_S / 2, elapsed  # the stalled worker was killed after grace_s
    # Only the chief writes to the shared directory.
    assert sorted(os.listdir(checkpoints)) == ["checkpoint", "ckpt-4.data-00000-of-00001",
                                               "ckpt-4.index"]

    # Every worker restarts: steps 5-6 draw the negatives of the uninterrupted
    # run (the same losses, table, tree, stream position and next draw).
    run_cluster({"steps": STEPS, "out": str(tmp_path / "restarted"),
                 "checkpoint_dir": checkpoints})
    ref_state, ref_history = reference
    for worker in (0, 1):
        state, history = load(tmp_path / "restarted", worker)
        assert history["restored_from"] == os.path.join(checkpoints, "ckpt-4")
        assert [r["step"] for r in history["train"]] == [5, 6]
        np.testing.assert_allclose([r["loss"] for r in history["train"]],
                                   [r["loss"] for r in ref_history["train"][4:]], rtol=1e-6)
        assert_same_state(state, ref_state, f"restarted worker {worker} vs uninterrupted")
        np.testing.assert_array_equal(state["next_draw/replica0"],
                                      ref_state[f"next_draw/replica{worker}"])
