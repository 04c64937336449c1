"""Running test code in child processes: a crash fails one test, with its reason.

Scripts run in a fresh interpreter (faulthandler on, quiet TensorFlow logs,
tests/ on the path for raw_ops); a process that dies is reported with its
exit (signal name) and the stderr lines that say why.
"""
import os
import signal
import subprocess
import sys
import textwrap

import pytest


def start_python(script, *args):
    """Starts `script` in a fresh interpreter (faulthandler on, quiet TF logs)."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))  # for raw_ops
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-X", "faulthandler", "-c", script, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


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


def run_crash_cases_in_one_process(prelude, cases):
    """Runs every case of `cases` (name -> script body) after `prelude` in one
    interpreter (one TensorFlow import); fails naming the case that died or
    did not print its CLEAN line."""
    script = prelude + "".join(f"print('CASE {case}', flush=True)\n" + textwrap.dedent(body)
                               for case, body in sorted(cases.items()))
    code, stdout, stderr = finish(start_python(script), timeout=300)
    if code != 0 or stdout.count("CLEAN") != len(cases):
        started = [line for line in stdout.splitlines() if line.startswith("CASE ")]
        pytest.fail(f"{started[-1] if started else 'prelude'}: {describe_exit(code)}\n"
                    f"stdout:\n{stdout[-2000:]}\nstderr:\n{stderr_summary(stderr)}",
                    pytrace=False)


def run_fuzz(script, seed, num_calls, op_names):
    """Runs a fuzz script in a subprocess; fails on a crash, a bad output, or an
    op that was never exercised other than through its error paths."""
    code, stdout, stderr = finish(start_python(script, str(seed), str(num_calls)), timeout=300)
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
