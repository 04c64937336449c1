#!/usr/bin/env bash
# The README's two commands. Each sets the machine up first (tools/setup_env.sh).
#
#   bash tools/run.sh compare [flags]   train every sampler on WordNet, print the
#                                       table, write CSV + plot (the main job)
#   bash tools/run.sh test [pytest args] build with setup.py and Bazel, run all tests
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
command="${1:-}"; shift || true
case "$command" in
  compare)
    bash tools/setup_env.sh
    exec "$PYTHON" examples/compare_samplers.py "$@"
    ;;
  test)
    WITH_BAZEL=1 bash tools/setup_env.sh
    tools/bazel_build.sh >/dev/null
    TF_SAMPLED_REQUIRE_BAZEL=1 exec "$PYTHON" -m pytest tests "$@"
    ;;
  *)
    echo "usage: bash tools/run.sh {compare|test} [args...]" >&2
    exit 2
    ;;
esac
