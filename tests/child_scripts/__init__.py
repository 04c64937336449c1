"""Programs that tests run in a child process (tests/child_process.py), so
that a crash in native code fails one test instead of the run.

`python -m child_scripts.crash MODULE [CASE...]` runs the crash cases of
crash_kernel, crash_lsh or crash_adversarial; `python -m child_scripts.fuzz
MODULE SEED NUM_CALLS` runs the random malformed calls of fuzz_kernel,
fuzz_lsh or fuzz_adversarial.
"""
