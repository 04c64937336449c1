#!/usr/bin/env bash
# Builds the tf_sampled custom-op library with Bazel, fully offline, and prints
# the absolute path of the resulting shared library on stdout (Bazel's own
# output goes to stderr). Exits non-zero if the build fails.
#
#   tools/bazel_build.sh [extra bazel build options...]
#
# Load the result with:
#   TF_SAMPLED_OPS_LIBRARY="$(tools/bazel_build.sh)" python -c 'import tf_sampled as tfs; tfs.load_ops()'
#
# Environment:
#   BAZEL            Bazel binary (default: bazel; Debian's bazel-bootstrap, Bazel 4.2.3)
#   PYTHON_BIN_PATH  Python with TensorFlow installed, whose headers and
#                    libtensorflow_framework.so.2 are used (default: python3 on PATH)
#
# Needs no network: @rules_cc and @rules_java are vendored under third_party/,
# @platforms comes from the bazel-bootstrap package and TensorFlow from the
# pip install (third_party/tensorflow/tf_configure.bzl).
set -euo pipefail

TARGET="//custom_ops:_tf_sampled_ops.so"
OUTPUT_REL="custom_ops/_tf_sampled_ops.so"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ -n "${PYTHON_BIN_PATH:-}" ]]; then
  # Bazel runs the repository rule in another directory: make a relative path
  # absolute (without resolving symlinks, which would step out of a virtualenv).
  if [[ "$PYTHON_BIN_PATH" == */* && "$PYTHON_BIN_PATH" != /* ]]; then
    PYTHON_BIN_PATH="$(cd "$(dirname "$PYTHON_BIN_PATH")" && pwd)/$(basename "$PYTHON_BIN_PATH")"
    export PYTHON_BIN_PATH
  fi
  echo "bazel_build.sh: using PYTHON_BIN_PATH=$PYTHON_BIN_PATH" >&2
fi

cd "$ROOT"

BAZEL="${BAZEL:-bazel}"
if ! command -v "$BAZEL" >/dev/null 2>&1; then
  echo "bazel_build.sh: '$BAZEL' not found; install Bazel 4.2.3 (apt-get install bazel-bootstrap) or set BAZEL" >&2
  exit 127
fi

# Everything Bazel prints goes to stderr so that stdout is just the path.
"$BAZEL" build "$@" -- "$TARGET" >&2

BIN_DIR="$("$BAZEL" info "$@" bazel-bin)"
LIB="$BIN_DIR/$OUTPUT_REL"
if [[ ! -f "$LIB" ]]; then
  echo "bazel_build.sh: build succeeded but $LIB does not exist" >&2
  exit 1
fi
# Prefer the stable workspace path when the convenience symlink points at it.
if [[ -e "$ROOT/bazel-bin/$OUTPUT_REL" && "$ROOT/bazel-bin/$OUTPUT_REL" -ef "$LIB" ]]; then
  LIB="$ROOT/bazel-bin/$OUTPUT_REL"
fi
echo "$LIB"
