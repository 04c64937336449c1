#!/usr/bin/env bash
# The project's one nvcc command line. setup.py (TF_SAMPLED_CUDA=1), Bazel
# (--config=cuda, cuda/BUILD) and the TensorFlow-free harness
# (tools/cuda_harness.py) all compile the CUDA core through it, so the three
# builds cannot drift apart:
#
#   bash custom_ops/cuda/nvcc.sh -c x.cu -o x.o          # an object
#   bash custom_ops/cuda/nvcc.sh -shared a.cu b.cc -o l.so
#
# Environment:
#   NVCC                    the compiler (default: nvcc on PATH, then
#                           $CUDA_HOME/bin/nvcc, then /usr/local/cuda/bin/nvcc)
#   TF_SAMPLED_CUDA_ARCHS   GPU archs, comma-separated (default 80,90): real
#                           code for each, plus PTX of the last for newer GPUs
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
NVCC="${NVCC:-$(command -v nvcc || true)}"
for candidate in "${CUDA_HOME:-}/bin/nvcc" /usr/local/cuda/bin/nvcc; do
  [[ -n "$NVCC" ]] && break
  [[ -x "$candidate" ]] && NVCC="$candidate"
done
if [[ -z "$NVCC" ]]; then
  echo "nvcc.sh: nvcc not found (NVCC, PATH, \$CUDA_HOME/bin, /usr/local/cuda/bin)" >&2
  exit 127
fi
ARCHS="${TF_SAMPLED_CUDA_ARCHS:-80,90}"
GENCODE=()
for arch in ${ARCHS//,/ }; do
  GENCODE+=("-gencode=arch=compute_${arch},code=sm_${arch}")
done
LAST="${ARCHS##*,}"
GENCODE+=("-gencode=arch=compute_${LAST},code=compute_${LAST}")
# As the host build: the same C++ ABI as TensorFlow, math without errno
# (sqrt loops vectorize), position-independent code for the shared library.
exec "$NVCC" -std=c++17 -O3 -Xcompiler -fPIC,-fno-math-errno -D_GLIBCXX_USE_CXX11_ABI=1 \
  -DGOOGLE_CUDA=1 -I"$ROOT" "${GENCODE[@]}" "$@"
