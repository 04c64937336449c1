#!/usr/bin/env bash
# Sets tf_sampled up on a fresh Debian machine: a project virtual environment
# at .venv/ (created once, with `$PYTHON -m venv`, default python3), the Python
# packages installed into it, and the op library built into the source tree
# (editable install). Used by tools/run.sh before every command; activate the
# environment with `source .venv/bin/activate` to use it by hand.
#
# Idempotent and quick when nothing changed: the pip installs run only when the
# requirement list changed, and the op library (about 3 minutes of g++) is
# rebuilt only when custom_ops/, setup.py or the installed TensorFlow changed.
# Both are recorded in stamp files inside .venv/; `rm -rf .venv` starts afresh.
#
# Environment:
#   PYTHON      interpreter that creates .venv (default python3; Python 3.9+).
#               A different interpreter (or version) than the one .venv was
#               made from recreates .venv.
#   WITH_BAZEL  1: the test setup (Bazel, dict-gcide, test-only packages).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip install -q --disable-pip-version-check)

SUDO=""; [[ "$(id -u)" != 0 ]] && SUDO="sudo"
apt_install() {
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# The base interpreter: the one behind $PYTHON even when $PYTHON is itself a
# virtual environment's (e.g. with .venv activated).
if [[ "$PYTHON" == python3 ]] && ! command -v python3 >/dev/null 2>&1; then
  echo "setup_env.sh: apt-get install python3 python3-venv" >&2
  apt_install python3 python3-venv
fi
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "setup_env.sh: '$PYTHON' not found; set PYTHON to a Python 3.9+" >&2
  exit 127
fi
read -r BASE_VERSION BASE_EXE < <("$PYTHON" -c '
import os, sys
exe = os.path.realpath(sys.executable)
if exe.startswith(os.path.realpath(sys.prefix) + os.sep):  # a venv with copies
    exe = os.path.realpath(os.path.join(sys.base_prefix, "bin", "python%d.%d" % sys.version_info[:2]))
print("%d.%d.%d" % sys.version_info[:3], exe)') || true
if [[ -z "${BASE_EXE:-}" ]] || ! "$BASE_EXE" -c 'import sys; assert sys.version_info >= (3, 9)' 2>/dev/null; then
  echo "setup_env.sh: '$PYTHON' (${BASE_VERSION:-?}) is not a usable Python 3.9+; set PYTHON" >&2
  exit 1
fi

# System packages: a C++ compiler for the op library; for the test setup
# (WITH_BAZEL=1) Debian's Bazel and dict-gcide (the GCIDE loader's tests read
# the real dictionary: GPL-2+, installed, never bundled).
APT_PACKAGES=()
command -v "${CXX:-g++}" >/dev/null 2>&1 || APT_PACKAGES+=(g++)
if [[ "${WITH_BAZEL:-0}" == 1 ]]; then
  command -v bazel >/dev/null 2>&1 || APT_PACKAGES+=(bazel-bootstrap)
  [[ -e /usr/share/dictd/gcide.dict.dz ]] || APT_PACKAGES+=(dict-gcide)
fi
# Debian's python3 ships `venv` without ensurepip, which python3.X-venv adds
# (a pyenv or python.org build has it).
VENV_ID="$BASE_EXE $BASE_VERSION"
if [[ ! -f "$VENV/.base_python" || "$(cat "$VENV/.base_python")" != "$VENV_ID" ]] \
    && ! "$BASE_EXE" -c 'import ensurepip' >/dev/null 2>&1; then
  if [[ "$BASE_EXE" == /usr/bin/* ]]; then
    APT_PACKAGES+=("python${BASE_VERSION%.*}-venv")
  else
    echo "setup_env.sh: $BASE_EXE has no ensurepip, so it cannot create .venv; set PYTHON to a Python 3.9+ that can (python3 -m venv)" >&2
    exit 1
  fi
fi
if (( ${#APT_PACKAGES[@]} )); then
  echo "setup_env.sh: apt-get install ${APT_PACKAGES[*]}" >&2
  apt_install "${APT_PACKAGES[@]}"
fi

# The virtual environment, (re)made when missing, broken, or from another
# interpreter than $PYTHON's.
if [[ ! -x "$VPY" || ! -f "$VENV/.base_python" || "$(cat "$VENV/.base_python")" != "$VENV_ID" ]] \
    || ! "$VPY" -c '' >/dev/null 2>&1; then
  echo "setup_env.sh: creating $VENV (Python $BASE_VERSION, $BASE_EXE)" >&2
  rm -rf "$VENV"
  "$BASE_EXE" -m venv "$VENV"
  echo "$VENV_ID" > "$VENV/.base_python"
fi

# Python packages. TensorFlow's minor version is pinned: the op library's C++
# ABI follows it. The test setup adds the lm1b / movielens loaders' tfds (mock
# data, offline; 4.9.10 works with TensorFlow 2.21), pytest-xdist (each test
# file runs in a worker process, so a test that crashes its process fails
# alone) and the docs toolchain (tests/test_docs.py builds the docs).
REQUIREMENTS=("tensorflow-cpu==2.21.*" "keras>=3.15" numpy scipy pytest absl-py matplotlib
              "setuptools>=64" wheel)
TEST_REQUIREMENTS=("tensorflow-datasets==4.9.10" "pytest-xdist>=3.5" mkdocs "mkdocstrings[python]")
hash_lines() { printf '%s\n' "$@" | sha256sum | cut -d' ' -f1; }
BASE_HASH="$(hash_lines "${REQUIREMENTS[@]}")"
FULL_HASH="$(hash_lines "${REQUIREMENTS[@]}" "${TEST_REQUIREMENTS[@]}")"
if [[ "${WITH_BAZEL:-0}" == 1 ]]; then
  WANTED=("${REQUIREMENTS[@]}" "${TEST_REQUIREMENTS[@]}"); WANTED_HASH="$FULL_HASH"
else
  WANTED=("${REQUIREMENTS[@]}"); WANTED_HASH="$BASE_HASH"
fi
INSTALLED_HASH="$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)"
# The test set includes the base set: after `test`, `compare` installs nothing.
if [[ "$INSTALLED_HASH" != "$WANTED_HASH" && "$INSTALLED_HASH" != "$FULL_HASH" ]]; then
  echo "setup_env.sh: pip install into .venv: ${WANTED[*]}" >&2
  "${PIP[@]}" "${WANTED[@]}"
  echo "$WANTED_HASH" > "$VENV/.requirements.sha256"
fi

# The op library: rebuilt when a file under custom_ops/, setup.py, the
# installed TensorFlow or the build switches changed, or the library is gone.
TF_VERSION="$("$VPY" -c '
import importlib.metadata as m
for name in ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly", "tf-nightly-cpu"):
    try:
        print(name, m.version(name))
    except m.PackageNotFoundError:
        pass')"
BUILD_HASH="$( {
  find custom_ops setup.py -type f ! -name '*.so' ! -name '*.o' ! -name '*.pyc' -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum
  echo "$TF_VERSION"
  echo "TF_SAMPLED_CUDA=${TF_SAMPLED_CUDA:-} TF_SAMPLED_CUDA_ARCHS=${TF_SAMPLED_CUDA_ARCHS:-} CXX=${CXX:-}"
} | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$VENV/.op_library.sha256" 2>/dev/null || true)" != "$BUILD_HASH" ]] \
    || ! compgen -G "tf_sampled/_tf_sampled_ops*.so" >/dev/null; then
  echo "setup_env.sh: building the op library (pip install -e ., g++, about 3 minutes)" >&2
  rm -f "$VENV/.op_library.sha256"
  # --no-build-isolation: compile against the TensorFlow just installed
  # instead of downloading another copy into an isolated build environment.
  "${PIP[@]}" --no-build-isolation -e .
  echo "$BUILD_HASH" > "$VENV/.op_library.sha256"
fi
