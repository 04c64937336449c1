#!/usr/bin/env bash
# The README's two commands. Each first sets up (or reuses) the project's
# virtual environment .venv/ with tools/setup_env.sh, which installs and
# rebuilds only what changed, then runs in it.
#
#   bash tools/run.sh compare [flags]    train every sampler on WordNet, print the
#                                        table, write CSV + plot (the main job)
#   bash tools/run.sh test [pytest args] build with setup.py and Bazel, run all tests
#                                        (in pytest-xdist workers: pyproject.toml)
#
# PYTHON picks the interpreter that creates .venv (default python3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
command="${1:-}"; shift || true
case "$command" in
  compare) bash tools/setup_env.sh ;;
  test) WITH_BAZEL=1 bash tools/setup_env.sh ;;
esac
# As `source .venv/bin/activate`: the venv's python, pip, pytest and mkdocs
# come first on PATH for everything below, Bazel's TensorFlow included.
export VIRTUAL_ENV="$ROOT/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
VPY="$VIRTUAL_ENV/bin/python"
case "$command" in
  compare)
    exec "$VPY" examples/compare_samplers.py "$@"
    ;;
  test)
    PYTHON_BIN_PATH="$VPY" tools/bazel_build.sh >/dev/null
    TF_SAMPLED_REQUIRE_BAZEL=1 exec "$VPY" -m pytest tests "$@"
    ;;
  *)
    echo "usage: bash tools/run.sh {compare|test} [args...]" >&2
    exit 2
    ;;
esac
