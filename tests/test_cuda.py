"""The CUDA core (custom_ops/cuda) through its TensorFlow-free harness.

Here (CI: nvcc, no GPU) the core and the harness compile with nvcc, the
harness's own statistics run on the C++ core, and the GPU checks skip. On a
machine with a GPU the same tests run the GPU checks of tools/cuda_harness.py.
No TensorFlow is needed.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from tools import cuda_harness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def harness():
    """Compiles the harness once per session (one arch: nvcc is slow)."""
    if cuda_harness.find_nvcc() is None:
        pytest.skip("nvcc not found: the CUDA sources cannot be compiled here")
    return cuda_harness.Harness(cuda_harness.build())


@pytest.fixture(scope="session")
def gpu(harness):
    if not harness.gpu_available():
        pytest.skip("no CUDA device (or driver) on this machine")
    return harness


def test_nvcc_compiles_core_and_harness(harness):
    for name in ("tsc_gpu_build", "tsc_gpu_sample", "tsc_gpu_log_prob", "tsc_gpu_apply_updates",
                 "tsc_gpu_update_deltas", "tsc_gpu_bench", "tsc_cpu_bench"):
        assert hasattr(harness.lib, name)


def test_gpu_calls_fail_cleanly_without_a_device(harness):
    if harness.gpu_available():
        pytest.skip("a CUDA device is present")
    code, message, _ = harness.gpu_build(cuda_harness.Problem("positive_random"))
    assert code == 2 and message


@pytest.mark.parametrize("config", cuda_harness.PROBLEMS[:4], ids=lambda c: c["kind"])
def test_harness_statistics_on_the_cpp_core(harness, config):
    """The harness's exact q and chi-square accept the C++ core's draws."""
    cuda_harness.check_cpu_reference(harness, cuda_harness.Problem(**config))


def test_chi_square_rejects_a_wrong_distribution():
    rng = np.random.default_rng(0)
    q = rng.dirichlet(np.ones(50))
    counts = np.bincount(rng.choice(50, 40000, p=q), minlength=50)
    assert cuda_harness.chi_square_p(counts, q * 40000)[0] > 1e-3
    tilted = q * (1 + 0.2 * (np.arange(50) % 2))
    assert cuda_harness.chi_square_p(counts, tilted / tilted.sum() * 40000)[0] < 1e-6


def test_cli_builds_and_skips_without_a_device(harness):
    if harness.gpu_available():
        pytest.skip("a CUDA device is present: the GPU tests below run instead")
    out = subprocess.run([sys.executable, "-m", "tools.cuda_harness"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "GPU checks skipped" in out


@pytest.mark.parametrize("check", ["build", "log_prob", "sample", "updates", "malformed"])
def test_gpu_matches_cpp_core(gpu, check):
    failures = cuda_harness.run_checks(gpu, only=[check], log=lambda *_: None)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("requested", [False, True])
def test_setup_compiles_cuda_only_on_request(monkeypatch, requested):
    """The default setup.py build has no .cu or *_gpu.cc source (and needs no
    CUDA); TF_SAMPLED_CUDA=1 adds both."""
    import runpy  # pylint: disable=import-outside-toplevel

    import setuptools  # pylint: disable=import-outside-toplevel

    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: None)
    if requested:
        monkeypatch.setenv("TF_SAMPLED_CUDA", "1")
    else:
        monkeypatch.delenv("TF_SAMPLED_CUDA", raising=False)
    names = runpy.run_path(os.path.join(ROOT, "setup.py"))
    gpu_sources = [s for s in names["SOURCES"] + names["CUDA_SOURCES"]
                   if s.endswith((".cu", "_gpu.cc"))]
    assert bool(gpu_sources) == requested
