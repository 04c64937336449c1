"""A test that kills its process fails alone, and the run still ends with its summary.

The suite runs in pytest-xdist worker processes (the options are pytest's
addopts in pyproject.toml, used by `bash tools/run.sh test` and CI alike): a
worker that dies (a segfault or abort in native code) is reported as its
current test's failure and replaced, and the other tests still run. This runs
pytest with those options on a file holding one aborting and one passing test.

Crash cases and fuzz calls run in child processes of their own
(child_process, child_scripts): a child that dies fails its test, naming the
case or the last call.
"""
import importlib
import os
import re
import subprocess
import sys
import textwrap

import pytest

from child_process import check_crash_cases, run_crash_cases, run_fuzz, start_crash_cases

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


# A crash-case module (child_scripts.crash) with a case that kills its process.
CRASH_CASES = textwrap.dedent(
    """
    import os


    def setup():
        return None


    def case_aborts(env):
        os.abort()


    def case_passes(env):
        print("CLEAN ok")


    def case_silent(env):
        pass
    """
)

# A fuzz family (child_scripts.fuzz) whose second op kills its process.
FUZZ = textwrap.dedent(
    """
    import os
    from types import SimpleNamespace


    class Fuzz:
        OPS = [("fine", "fine"), ("dies", "dies")]
        PROBABILITIES = [0.5]
        DESCRIBE_VALUES = False

        def __init__(self, rng, lib):
            self.lib = SimpleNamespace(fine=lambda **kwargs: None,
                                       dies=lambda **kwargs: os.abort())

        def pick(self, seq):
            return seq[0]

        def setup(self):
            return {"c": 1}

        def call_fine(self, s, p):
            return {}

        def call_dies(self, s, p):
            return {"x": 1}
    """
)


def _import_child_module(tmp_path, monkeypatch, name, source):
    """Writes a module to tmp_path, importable here and in child processes."""
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path),
                                                      os.environ.get("PYTHONPATH", "")]))
    return importlib.import_module(name)


def test_crash_runner_names_the_case_that_died(tmp_path, monkeypatch):
    module = _import_child_module(tmp_path, monkeypatch, "crash_dies", CRASH_CASES)
    failed = pytest.fail.Exception
    # Each case in its own interpreter (test_bad_input.py): only the dying one fails.
    check_crash_cases(start_crash_cases(module, "passes"), ["passes"])
    with pytest.raises(failed, match=r"^CASE aborts: killed by SIGABRT\n"):
        check_crash_cases(start_crash_cases(module, "aborts"), ["aborts"])
    with pytest.raises(failed, match=r"^CASE silent: no CLEAN line\n"):
        check_crash_cases(start_crash_cases(module, "silent"), ["silent"])
    # All in one interpreter: the failure names the case that died.
    with pytest.raises(failed, match=r"^CASE aborts: killed by SIGABRT\n"):
        run_crash_cases(module)


def test_fuzz_runner_names_the_call_that_died(tmp_path, monkeypatch):
    module = _import_child_module(tmp_path, monkeypatch, "fuzz_dies", FUZZ)
    died = r"killed by SIGABRT after 2 calls; last call:\nCALL 1 dies\(C=1: x=1\)"
    with pytest.raises(pytest.fail.Exception, match=died):
        run_fuzz(module, 0, 4, ["fine"])
