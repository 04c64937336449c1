#!/usr/bin/env bash
# Installs what tf_sampled needs on a fresh Debian machine and builds the op
# library into the source tree (editable install). Idempotent; used by
# tools/run.sh before every command.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"

# The test setup (WITH_BAZEL=1) also installs Debian's dict-gcide: the GCIDE
# loader's tests read the real dictionary (GPL-2+, installed, never bundled).
APT_PACKAGES=()
if [[ "${WITH_BAZEL:-0}" == 1 ]]; then
  command -v bazel >/dev/null 2>&1 || APT_PACKAGES+=(bazel-bootstrap)
  [[ -e /usr/share/dictd/gcide.dict.dz ]] || APT_PACKAGES+=(dict-gcide)
fi
if (( ${#APT_PACKAGES[@]} )); then
  SUDO=""; [[ "$(id -u)" != 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${APT_PACKAGES[@]}" >/dev/null
fi

# TensorFlow's minor version is pinned: the op library's C++ ABI follows it.
"$PYTHON" -m pip install -q --disable-pip-version-check \
  "tensorflow-cpu==2.21.*" "keras>=3.15" numpy scipy pytest absl-py matplotlib "setuptools>=64" wheel
if [[ "${WITH_BAZEL:-0}" == 1 ]]; then
  # The lm1b / movielens loaders' tests (tfds mock data, offline); 4.9.10 works
  # with TensorFlow 2.21.
  "$PYTHON" -m pip install -q --disable-pip-version-check "tensorflow-datasets==4.9.10"
fi
# --no-build-isolation: compile against the TensorFlow just installed instead
# of downloading another copy into an isolated build environment.
"$PYTHON" -m pip install -q --disable-pip-version-check --no-build-isolation -e .
