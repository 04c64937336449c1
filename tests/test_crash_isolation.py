"""A test that kills its process fails alone, and the run still ends with its summary.

The suite runs in pytest-xdist worker processes (the options are pytest's
addopts in pyproject.toml, used by `bash tools/run.sh test` and CI alike): a
worker that dies (a segfault or abort in native code) is reported as its
current test's failure and replaced, and the other tests still run. This runs
pytest with those options on a file holding one aborting and one passing test.
"""
import os
import re
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TESTS = textwrap.dedent(
    """
    import os


    def test_aborts():
        os.abort()


    def test_passes():
        pass
    """
)


def test_abort_fails_only_its_test(tmp_path):
    (tmp_path / "test_dies.py").write_text(TESTS)
    # The child is a fresh pytest controller: nothing of this run's xdist
    # worker or extra options leaks into it.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTEST_") or k == "PYTEST_DISABLE_PLUGIN_AUTOLOAD"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", os.path.join(REPO, "pyproject.toml"),
         "--rootdir", str(tmp_path), "-p", "no:cacheprovider", "-rfE", "test_dies.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, f"exit code {proc.returncode}\n{out}"
    assert re.search(r"worker 'gw\d+' crashed while running 'test_dies.py::test_aborts'", out), out
    # Reported once (not re-run on each replacement worker), the other test passed.
    assert len(re.findall(r"^FAILED test_dies.py::test_aborts\b", out, re.M)) == 1, out
    summary = proc.stdout.rstrip().splitlines()[-1]
    assert re.fullmatch(r"=+ 1 failed, 1 passed in [\d.]+s.* =+", summary), out
