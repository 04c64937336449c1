"""Speed of the adversarial auxiliary-model sampler: fitting and sampling.

1. Fit time on synthetic data (N examples, C classes, dim 64, projection 16):
   class centres N(0, 1), x = centre + N(0, 1) noise, Zipf-like class
   frequencies. Reports the PCA + projection time (NumPy) and the tree fit
   (the C++ op) separately, and the fit's cost per example and tree level,
   fit / (N ceil(log2 C)), which is flat when the fit scales like N log C.
2. Sampling cost per example vs C (random trees with k = 16, dim 64, so C up
   to 10M needs no fit; cost does not depend on the parameter values beyond
   how many nodes the draws of one row share), B = 256, S = 64, timed side by
   side in interleaved rounds: per-example sample (with log p_n of the true
   class), log_prob of one class per row, the batch-shared
   adversarial_candidate_sampler (unique), and TensorFlow's
   log_uniform_candidate_sampler as the reference.

Run from the repository root:
  python -m benchmarks.bench_adversarial                       # full: 1M x 200k fit
  python -m benchmarks.bench_adversarial --fit_sizes=250000x50000 --classes=10000,100000
"""
import argparse
import math
import time
import types

import numpy as np
import tensorflow as tf

import tf_sampled as tfs
from benchmarks.timing import bench

DIM, K = 64, 16


def synthetic(n, num_classes, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_classes, DIM), dtype=np.float32)
    freq = 1.0 / np.arange(1, num_classes + 1) ** 0.8
    labels = rng.choice(num_classes, size=n, p=freq / freq.sum())
    features = centres[labels]
    features += rng.standard_normal((n, DIM), dtype=np.float32)
    return features, labels


def fit_row(n, num_classes):
    features, labels = synthetic(n, num_classes)
    t0 = time.perf_counter()
    mean, projection = tfs.samplers.adversarial._pca(features, K)
    projected = ((features - mean) @ projection).astype(np.float32)
    t_pca = time.perf_counter() - t0
    t0 = time.perf_counter()
    params, _, _ = tfs.load_ops().tf_sampled_adversarial_tree_fit(
        features=projected, labels=labels.astype(np.int64), num_classes=num_classes)
    t_fit = time.perf_counter() - t0
    assert np.isfinite(params.numpy()).all()
    levels = math.ceil(math.log2(num_classes))
    return dict(n=n, c=num_classes, pca_s=t_pca, fit_s=t_fit,
                us_per_example_level=1e6 * t_fit / (n * levels))


def random_sampler(num_classes, seed=0):
    rng = np.random.default_rng(seed)
    leaf_of_class = rng.permutation(num_classes)
    params = rng.standard_normal((num_classes, K + 1), dtype=np.float32)
    params /= np.sqrt(K)  # logits of standard deviation about 1 on whitened inputs
    return tfs.samplers.AdversarialSampler(
        np.zeros(DIM), rng.standard_normal((DIM, K)) / np.sqrt(DIM), params, leaf_of_class,
        np.argsort(leaf_of_class))


def sampling_row(num_classes, args):
    sampler = random_sampler(num_classes)
    rng = np.random.default_rng(1)
    h = tf.constant(rng.standard_normal((args.batch, DIM), dtype=np.float32))
    labels = tf.constant(rng.integers(0, num_classes, size=(args.batch, 1)))
    s = args.num_sampled
    fns = {
        "per_example": tf.function(lambda: sampler.sample(h, s, true_classes=labels).ids),
        "log_prob": tf.function(lambda: sampler.log_prob(h, labels)),
        "shared": tf.function(lambda: tfs.random.adversarial_candidate_sampler(
            labels, 1, s, True, num_classes, inputs=h, sampler=sampler)[0]),
        "log_uniform": tf.function(lambda: tf.random.log_uniform_candidate_sampler(
            labels, 1, s, True, num_classes)[0]),
    }
    ms, _ = bench(fns, types.SimpleNamespace(min_reps=5, reps=50, budget_s=3.0),
                  log=lambda *a: None)
    return dict(c=num_classes, **ms)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit_sizes", default="62500x12500,250000x50000,1000000x200000",
                        help="comma-separated NxC")
    parser.add_argument("--classes", default="10000,100000,1000000,10000000")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--num_sampled", type=int, default=64)
    args = parser.parse_args(argv)

    print(f"## Fit (dim {DIM}, projection {K}, 2 rounds x 2 Newton steps per node)\n")
    print("| N | C | PCA + projection (s) | tree fit (s) | fit us / (example x level) |")
    print("|---|---|---|---|---|")
    for size in args.fit_sizes.split(","):
        n, c = (int(v) for v in size.split("x"))
        row = fit_row(n, c)
        print(f"| {n:,} | {c:,} | {row['pca_s']:.1f} | {row['fit_s']:.1f} | "
              f"{row['us_per_example_level']:.2f} |", flush=True)

    print(f"\n## Sampling (B = {args.batch}, S = {args.num_sampled}, k = {K}), "
          "ms per call, medians of interleaved rounds\n")
    print("| C | per-example sample | us/example | us/example/log2 C | log_prob (1 class) | "
          "shared (unique) | TF log-uniform (unique) |")
    print("|---|---|---|---|---|---|---|")
    for c in (int(v) for v in args.classes.split(",")):
        row = sampling_row(c, args)
        per_example = 1e3 * row["per_example"] / args.batch
        print(f"| {c:,} | {row['per_example']:.2f} | {per_example:.1f} | "
              f"{per_example / math.log2(c):.2f} | {row['log_prob']:.3f} | "
              f"{row['shared']:.2f} | {row['log_uniform']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
