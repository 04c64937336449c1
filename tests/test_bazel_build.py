"""Checks the Bazel-built op library (tools/bazel_build.sh) against the Python API.

The library is loaded in a subprocess: loading it in this process would clash
with the setup.py-built copy ("Op type already registered"). The package's
loader honours TF_SAMPLED_OPS_LIBRARY, so the subprocess gets the Bazel
library through it.

Without a Bazel build (bazel-bin/custom_ops/_tf_sampled_ops.so missing) the
test is skipped, unless TF_SAMPLED_REQUIRE_BAZEL=1 (as in CI), then it fails.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BAZEL_LIBRARY = os.path.join(REPO_ROOT, "bazel-bin", "custom_ops", "_tf_sampled_ops.so")

SCRIPT = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf, tf_sampled as tfs
    lib = tfs.load_ops()   # must come from TF_SAMPLED_OPS_LIBRARY
    W = tf.Variable(np.random.RandomState(0).normal(size=(500, 8)).astype("float32"))
    s = tfs.samplers.KernelSampler(W, feature_map=tfs.features.PositiveRandom(num_features=16, seed=0), leaf_size=8)
    c = s.sample(tf.random.normal([4, 8], seed=1), 32, true_classes=tf.zeros([4, 1], tf.int64), seed=3)
    assert c.ids.shape == (4, 32) and np.all(np.isfinite(c.log_q.numpy()))
    print("BAZEL_OK", tfs.ops_library_path())
    """
)


def _require_bazel():
    return os.environ.get("TF_SAMPLED_REQUIRE_BAZEL", "") == "1"


def _package_parent_dir():
    """Directory the subprocess should import tf_sampled from: the same copy
    this process would import (installed or this checkout)."""
    spec = importlib.util.find_spec("tf_sampled")
    if spec is not None and spec.origin:
        # .../<parent>/tf_sampled/__init__.py -> .../<parent>
        return os.path.dirname(os.path.dirname(os.path.abspath(spec.origin)))
    return REPO_ROOT


def test_bazel_built_library_samples(tmp_path):
    if not os.path.isfile(BAZEL_LIBRARY):
        msg = (
            f"Bazel-built op library not found at {BAZEL_LIBRARY}; "
            "build it with tools/bazel_build.sh"
        )
        if _require_bazel():
            pytest.fail(msg + " (TF_SAMPLED_REQUIRE_BAZEL=1)")
        pytest.skip(msg)

    env = dict(os.environ)
    env["TF_SAMPLED_OPS_LIBRARY"] = BAZEL_LIBRARY
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Import the same tf_sampled this process sees (this checkout if it is not
    # installed). Run from an empty directory so the cwd does not shadow it.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [_package_parent_dir(), env.get("PYTHONPATH", "")] if p
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=str(tmp_path),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=600,
    )
    details = f"exit code {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    assert proc.returncode == 0, details

    ok_lines = [line for line in proc.stdout.splitlines() if line.startswith("BAZEL_OK")]
    assert ok_lines, details
    loaded = ok_lines[-1][len("BAZEL_OK"):].strip()
    assert loaded, details
    assert os.path.realpath(loaded) == os.path.realpath(BAZEL_LIBRARY), (
        f"loaded {loaded!r}, expected the Bazel build {BAZEL_LIBRARY!r}\n" + details
    )
