"""Runs crash cases: inputs that once killed the interpreter.

    python -m child_scripts.crash MODULE [CASE...]

MODULE (child_scripts.crash_kernel, crash_lsh, crash_adversarial) has a
`setup()` that returns the objects its cases share, and a function
`case_<name>(env)` per case, which makes its call through raw_ops.clean (a
CLEAN line when the op returns or raises a clean error). Runs setup once,
then the named cases (all of them, by name, if none is named), printing
`CASE <name>` before each: the parent (child_process.check_crash_cases) names
the case that died or printed no CLEAN line.
"""
import importlib
import sys

PREFIX = "case_"


def cases(module):
    """{name: case function} of a crash-case module (or its name), by name."""
    if isinstance(module, str):
        module = importlib.import_module(module)
    return {name[len(PREFIX):]: getattr(module, name)
            for name in sorted(dir(module)) if name.startswith(PREFIX)}


def main(module, *names):
    available = cases(module)
    chosen = {name: available[name] for name in names} if names else available
    env = importlib.import_module(module).setup()
    for name, case in chosen.items():
        print(f"CASE {name}", flush=True)
        case(env)


if __name__ == "__main__":
    main(*sys.argv[1:])
