"""Random malformed calls to every raw op of one family.

    python -m child_scripts.fuzz MODULE SEED NUM_CALLS

MODULE (child_scripts.fuzz_kernel, fuzz_lsh, fuzz_adversarial) holds the
family's argument generators, a class `Fuzz(rng, lib)` (a raw_ops.FuzzArgs)
with:
  OPS: (name, raw op) pairs, called in turn; the method `call_<name>(s, p)`
    gives the keyword arguments of one call on the table `s`, each malformed
    with a probability p picked per call from PROBABILITIES;
  setup(): a small valid table, a dict with its class count under "c";
  DESCRIBE_VALUES: whether CALL lines show the values of small arrays;
  check_output(name, out, s) (optional): what is wrong with the output of a
    call the op accepted, or None.

Prints each call before making it (the last CALL line before a crash is a
reproducer), a BAD OUTPUT line for each accepted call with a wrong output
(ids of the sampling ops outside [0, C), or what check_output says) and a
FUZZ SUMMARY line at the end; exits 1 if there was a bad output.
"""
import importlib
import sys

import numpy as np
import tensorflow as tf

import tf_sampled as tfs
from raw_ops import RawOps

SAMPLING_OPS = ("sample", "candidate_sampler")


def describe(kwargs, values=False):
    """A call's arguments: arrays by dtype and shape (with `values`, also the
    values of small ones, or that a larger float array is not finite)."""
    parts = []
    for key, value in kwargs.items():
        if isinstance(value, np.ndarray):
            text = f"{value.dtype.name}{list(value.shape)}"
            if values and value.size and value.size <= 8:
                text += "=" + np.array2string(value.ravel(), separator=",", precision=3)
            elif (values and value.size and value.dtype.kind == "f"
                  and not np.all(np.isfinite(value))):
                text += "(non-finite)"
            parts.append(f"{key}={text}")
        else:
            parts.append(f"{key}={value!r}")
    return ", ".join(parts)


def bad_output(fuzz, name, out, s):
    """What is wrong with the output of an accepted call, or None."""
    # (An empty output may have a shape NumPy cannot hold: [0, 2**62].)
    if name in SAMPLING_OPS and out[0].shape.num_elements():
        ids = out[0].numpy()  # what it accepted must be in range
        if ids.min() < 0 or ids.max() >= s["c"]:
            return f"{name} returned ids outside [0, {s['c']})"
    check = getattr(fuzz, "check_output", None)
    return check(name, out, s) if check else None


def run(fuzz, num_calls):
    """Makes num_calls calls; returns the exit code."""
    counts = {name: [0, 0] for name, _ in fuzz.OPS}
    bad_outputs = []
    for i in range(num_calls):
        s = fuzz.setup()
        name, op = fuzz.OPS[i % len(fuzz.OPS)]
        kwargs = getattr(fuzz, f"call_{name}")(s, p=fuzz.pick(fuzz.PROBABILITIES))
        print(f"CALL {i} {name}(C={s['c']}: {describe(kwargs, fuzz.DESCRIBE_VALUES)})",
              flush=True)
        try:
            out = getattr(fuzz.lib, op)(**kwargs)
        except (tf.errors.OpError, ValueError, TypeError):
            counts[name][1] += 1
            continue
        counts[name][0] += 1
        problem = bad_output(fuzz, name, out, s)
        if problem:
            bad_outputs.append(f"call {i}: {problem}")

    for line in bad_outputs:
        print("BAD OUTPUT", line)
    ok = sum(v[0] for v in counts.values())
    print(f"FUZZ SUMMARY calls={num_calls} ok={ok} errors={num_calls - ok} "
          f"bad_outputs={len(bad_outputs)} "
          + " ".join(f"{k}:ok={v[0]},err={v[1]}" for k, v in counts.items()), flush=True)
    return 1 if bad_outputs else 0


def main(module, seed, num_calls):
    family = importlib.import_module(module)
    fuzz = family.Fuzz(np.random.default_rng(int(seed)), RawOps(tfs.load_ops()))
    return run(fuzz, int(num_calls))


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
