"""Running test code in child processes: a crash fails one test, with its reason.

Children run in a fresh interpreter (faulthandler on, quiet TensorFlow logs,
tests/ on the path for raw_ops and child_scripts); a process that dies is
reported with its exit (signal name) and the stderr lines that say why. The
crash cases and the fuzz of the raw ops are the modules of child_scripts.
"""
import os
import signal
import subprocess
import sys

import pytest

from child_scripts.crash import cases as crash_cases

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def _start(*argv):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([TESTS_DIR, os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-X", "faulthandler", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def start_module(module, *args):
    """Starts the module `module` (`python -m`, a dotted name importable from
    tests/) in a fresh interpreter."""
    return _start("-m", module, *args)


def finish(proc, timeout):
    """(returncode, stdout, stderr) of a started process; kills it on timeout."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        stderr += f"\n(killed after {timeout} s)"
    return proc.returncode, stdout, stderr


def describe_exit(code):
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit {code}"


def stderr_summary(stderr, tail=15):
    """The lines that say why a process died, then the end of stderr."""
    lines = [line for line in stderr.splitlines()
             if "oneDNN" not in line and "cpu_feature_guard" not in line]
    why = [line for line in lines if any(key in line for key in (
        "Check failed", "terminate called", "what():", "Fatal Python error", "Error:"))]
    return "\n".join(why[:6] + ["..."] + lines[-tail:])


def start_crash_cases(module, *cases):
    """Starts the crash cases `cases` (names; all if none) of the crash-case
    module `module` (child_scripts.crash) in one fresh interpreter."""
    return start_module("child_scripts.crash", module.__name__, *cases)


def check_crash_cases(proc, cases, timeout=300):
    """Waits for a run of the crash cases `cases` (names; child_scripts.crash
    prints a CASE line before each); fails naming the case that died or
    printed no CLEAN line."""
    code, stdout, stderr = finish(proc, timeout)
    sections = ("\n" + stdout).split("\nCASE ")[1:]  # each: the name, then its output
    clean = {section.split("\n", 1)[0] for section in sections if "CLEAN" in section}
    missing = [case for case in cases if case not in clean]
    if code != 0:
        started = [line for line in stdout.splitlines() if line.startswith("CASE ")]
        where = f"{started[-1] if started else 'setup'}: {describe_exit(code)}"
    elif missing:
        where = f"CASE {missing[0]}: no CLEAN line"
    else:
        return
    pytest.fail(f"{where}\nstdout:\n{stdout[-2000:]}\nstderr:\n{stderr_summary(stderr)}",
                pytrace=False)


def run_crash_cases(module):
    """Every crash case of `module` in one interpreter (one TensorFlow import)."""
    check_crash_cases(start_crash_cases(module), crash_cases(module))



def run_fuzz(module, seed, num_calls, op_names):
    """Runs the fuzz of the child_scripts module `module` (child_scripts.fuzz)
    in a subprocess; fails on a crash, a bad output, or an op that was never
    exercised other than through its error paths."""
    proc = start_module("child_scripts.fuzz", module.__name__, str(seed), str(num_calls))
    code, stdout, stderr = finish(proc, timeout=300)
    calls = [line for line in stdout.splitlines() if line.startswith("CALL ")]
    summary = [line for line in stdout.splitlines() if line.startswith("FUZZ SUMMARY")]
    if code != 0 or not summary:
        pytest.fail(f"fuzz (seed {seed}) {describe_exit(code)} after {len(calls)} calls; "
                    f"last call:\n{calls[-1] if calls else '(none)'}\n"
                    f"stdout tail:\n{stdout[-1500:]}\nstderr:\n{stderr_summary(stderr)}",
                    pytrace=False)
    assert len(calls) == num_calls
    for name in op_names:
        ok = int(summary[0].split(f"{name}:ok=")[1].split(",")[0])
        assert ok > 0, summary[0]
