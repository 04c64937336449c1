#!/usr/bin/env bash
# Installs what tf_sampled needs on a fresh Debian machine and builds the op
# library into the source tree (editable install). Idempotent; used by
# tools/run.sh before every command.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"

if [[ "${WITH_BAZEL:-0}" == 1 ]] && ! command -v bazel >/dev/null 2>&1; then
  SUDO=""; [[ "$(id -u)" != 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq bazel-bootstrap >/dev/null
fi

# TensorFlow's minor version is pinned: the op library's C++ ABI follows it.
"$PYTHON" -m pip install -q --disable-pip-version-check \
  "tensorflow-cpu==2.21.*" "keras>=3.15" numpy scipy pytest absl-py matplotlib "setuptools>=64" wheel
# --no-build-isolation: compile against the TensorFlow just installed instead
# of downloading another copy into an isolated build environment.
"$PYTHON" -m pip install -q --disable-pip-version-check --no-build-isolation -e .
