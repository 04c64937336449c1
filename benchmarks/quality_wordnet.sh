#!/usr/bin/env bash
# Quality on real data: the per-example KernelSampler in its default
# configuration (and the GaussianMoments summary) against full softmax and
# TensorFlow's log-uniform sampler on the bundled WordNet task
# (95k examples, 20,206 classes; batch 256, Adam 2e-3, 1,200 steps), at S = 16
# and 64, three seeds each. Prints one table per S (mean over seeds) and writes
# curves/plots under $OUT (default /tmp/tf_sampled_quality). About 40 minutes
# on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/tf_sampled_quality}"
for S in 16 64; do
  python3 examples/compare_samplers.py \
    --objectives=full,log_uniform,kernel,kernel_moments \
    --num_sampled="$S" --seeds=0,1,2 --steps=1200 --time_budget_s=0 \
    --eval_every=100 --eval_every_s=30 --output_dir="$OUT/s$S" "$@"
done
