"""The op library loads lazily; a missing or broken one gives an error that says how to fix it."""
import os
import subprocess
import sys

import pytest
import tensorflow as tf

import tf_sampled as tfs
from tf_sampled import _ops

SCRIPT = """
import tf_sampled as tfs   # must not fail
try:
    tfs.load_ops()
except tfs.OpLibraryError as error:
    print("ERROR:", error)
"""


def run_with_library(path):
    env = dict(os.environ, TF_SAMPLED_OPS_LIBRARY=str(path), TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_missing_library_imports_and_says_how_to_rebuild(tmp_path):
    out = run_with_library(tmp_path / "missing.so")
    assert "not found" in out and "pip install" in out


def test_broken_library_says_how_to_rebuild(tmp_path):
    broken = tmp_path / "broken.so"
    broken.write_bytes(b"not an ELF file")
    out = run_with_library(broken)
    assert "could not be loaded" in out and "pip install" in out


def test_other_tensorflow_minor_version_is_refused(monkeypatch):
    pytest.importorskip("tf_sampled._build_info")
    monkeypatch.setattr(tf, "__version__", "2.99.0")
    with pytest.raises(tfs.OpLibraryError, match="2.99.0.*rebuild|Rebuild"):
        _ops._check_tensorflow_version()


def test_loaded_library_path_is_reported():
    assert os.path.exists(tfs.ops_library_path())
    assert tfs.load_ops() is tfs.load_ops()
