"""Speed of the CUDA core (issue 8), without TensorFlow: run it on a GPU machine.

    python -m benchmarks.bench_cuda                      # every figure of the issue
    python -m benchmarks.bench_cuda --classes 1000000 --skip-cpu --skip-dense

Figures (positive random features, F = 128, d = 128, B = 4096, S = 64,
leaf_size 128, no biases):
  1. per-example draws/s: the CUDA core vs the C++ core on all cores of the same
     machine, at C = 1M and 10M (target: >= 20x);
  2. at C = 1M, the GPU's time for sampling + the sampled-softmax step (sampled
     logits, log-sum-exp and gradients, PyTorch or CuPy) against the same GPU's
     dense full-softmax step (all logits, log-sum-exp and their gradient through
     cuBLAS) (target: <= 1/10);
  3. tree build and touched-row update times (in place with atomics, and the
     update op's sorted (node_ids, deltas) form) at C = 10M.
The table and the C++ core's data come from one hash of the element index, so
both sides sample the same tree. Prints a Markdown table; --json writes the
raw numbers.
"""
import argparse
import ctypes
import json
import os
import sys
import time

from tools import cuda_harness

KIND = cuda_harness.KINDS["positive_random"]


def gpu_times(lib, classes, args):
    """[build, sample, apply_update, update_deltas, log_prob] in ms."""
    out = (ctypes.c_double * 5)()
    error = ctypes.create_string_buffer(1024)
    code = lib.tsc_gpu_bench(KIND, ctypes.c_int64(classes), ctypes.c_int64(args.dim),
                             ctypes.c_int64(args.batch), ctypes.c_int64(args.num_sampled),
                             ctypes.c_int64(args.leaf_size), ctypes.c_int64(args.features),
                             ctypes.c_double(args.temperature), ctypes.c_int64(args.touched),
                             args.reps, out, error, 1024)
    if code:
        raise RuntimeError(f"GPU benchmark failed ({code}): {error.value.decode()}")
    return dict(zip(["build_ms", "sample_ms", "apply_update_ms", "update_deltas_ms",
                     "log_prob_ms"], list(out)))


def cpu_times(lib, classes, args):
    out = (ctypes.c_double * 2)()
    code = lib.tsc_cpu_bench(KIND, ctypes.c_int64(classes), ctypes.c_int64(args.dim),
                             ctypes.c_int64(args.batch), ctypes.c_int64(args.num_sampled),
                             ctypes.c_int64(args.leaf_size), ctypes.c_int64(args.features),
                             ctypes.c_double(args.temperature), os.cpu_count(),
                             max(1, args.reps // 5), out)
    if code:
        raise RuntimeError("C++ core benchmark failed (a non-finite row)")
    return {"cpu_build_s": out[0], "cpu_sample_s": out[1], "cpu_threads": os.cpu_count()}


def softmax_steps(classes, args):
    """(dense_ms, sampled_logits_ms) with PyTorch (else CuPy) on this GPU."""
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError:
        torch = None
    if torch is None or not torch.cuda.is_available():
        return _softmax_steps_cupy(classes, args)
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    weights = (torch.randn(classes, args.dim, device=dev, generator=gen) / args.dim ** 0.5
               ).requires_grad_()
    inputs = torch.randn(args.batch, args.dim, device=dev, generator=gen).requires_grad_()
    labels = torch.randint(0, classes, (args.batch,), device=dev, generator=gen)
    ids = torch.randint(0, classes, (args.batch, args.num_sampled), device=dev, generator=gen)
    log_q = torch.full((args.batch, args.num_sampled), -13.8, device=dev)

    def dense():
        logits = inputs @ weights.t()
        loss = (torch.logsumexp(logits, 1) - logits.gather(1, labels[:, None])[:, 0]).sum()
        loss.backward()

    def sampled():
        rows = weights[torch.cat([labels[:, None], ids], 1)]  # [B, 1 + S, d]
        logits = torch.einsum("bd,bkd->bk", inputs, rows)
        logits = torch.cat([logits[:, :1], logits[:, 1:] - log_q], 1)
        loss = (torch.logsumexp(logits, 1) - logits[:, 0]).sum()
        loss.backward()

    return _time_torch(torch, dense, args.reps), _time_torch(torch, sampled, args.reps)


def _time_torch(torch, fn, reps):
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start) / reps


def _softmax_steps_cupy(classes, args):
    import cupy as cp  # pylint: disable=import-outside-toplevel

    rng = cp.random.default_rng(0)
    weights = (rng.standard_normal((classes, args.dim), dtype=cp.float32) / args.dim ** 0.5)
    inputs = rng.standard_normal((args.batch, args.dim), dtype=cp.float32)
    labels = rng.integers(0, classes, args.batch)
    ids = rng.integers(0, classes, (args.batch, args.num_sampled))

    rows_index = cp.arange(args.batch)

    def softmax_grads(logits, true_column):
        """d loss / d logits of -log softmax(logits)[true_column]."""
        top = logits.max(1, keepdims=True)
        probs = cp.exp(logits - top)
        probs /= probs.sum(1, keepdims=True)
        probs[rows_index, true_column] -= 1
        return probs

    def dense():
        grad = softmax_grads(inputs @ weights.T, labels)
        return grad.T @ inputs, grad @ weights  # dW, dh

    def sampled():
        rows = weights[cp.concatenate([labels[:, None], ids], 1)]
        logits = cp.einsum("bd,bkd->bk", inputs, rows)
        logits[:, 1:] += 13.8  # - log q
        grad = softmax_grads(logits, 0)
        d_rows = grad[:, :, None] * inputs[:, None, :]
        d_weights = cp.zeros_like(weights)
        cp.add.at(d_weights, cp.concatenate([labels[:, None], ids], 1), d_rows)
        return d_weights, cp.einsum("bk,bkd->bd", grad, rows)

    def timed(fn):
        fn()
        cp.cuda.Device().synchronize()
        start = time.perf_counter()
        for _ in range(args.reps):
            fn()
        cp.cuda.Device().synchronize()
        return 1000 * (time.perf_counter() - start) / args.reps

    return timed(dense), timed(sampled)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, nargs="*", default=[1_000_000, 10_000_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--num-sampled", type=int, default=64)
    parser.add_argument("--features", type=int, default=128)
    parser.add_argument("--leaf-size", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--touched", type=int, default=4096 * 65,
                        help="rows updated per step (B x (S + 1) at most)")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--arch", default=cuda_harness.DEFAULT_ARCH)
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--skip-dense", action="store_true")
    parser.add_argument("--json", help="write the raw numbers here")
    args = parser.parse_args(argv)

    harness = cuda_harness.Harness(cuda_harness.build(args.arch))
    if not harness.gpu_available():
        print("no CUDA device: nothing to benchmark", file=sys.stderr)
        return 2
    draws = args.batch * args.num_sampled
    results = []
    for classes in args.classes:
        row = {"classes": classes, **gpu_times(harness.lib, classes, args)}
        row["gpu_draws_per_s"] = draws / (row["sample_ms"] / 1000)
        if not args.skip_cpu:
            row.update(cpu_times(harness.lib, classes, args))
            row["cpu_draws_per_s"] = draws / row["cpu_sample_s"]
            row["speedup"] = row["gpu_draws_per_s"] / row["cpu_draws_per_s"]
        if not args.skip_dense and classes <= 1_000_000:
            row["dense_ms"], row["sampled_logits_ms"] = softmax_steps(classes, args)
            row["sampled_step_ms"] = row["sample_ms"] + row["sampled_logits_ms"]
            row["sampled_over_dense"] = row["sampled_step_ms"] / row["dense_ms"]
        results.append(row)

    print(f"d={args.dim} B={args.batch} S={args.num_sampled} F={args.features} "
          f"leaf={args.leaf_size} touched={args.touched}")
    print("| C | build ms | sample ms | GPU draws/s | C++ draws/s (threads) | speedup "
          "| update ms (atomic / sorted) | sampled step ms | dense ms | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        cpu = (f"{r['cpu_draws_per_s']:.3g} ({r['cpu_threads']})" if "cpu_draws_per_s" in r
               else "-")
        print(f"| {r['classes']:,} | {r['build_ms']:.1f} | {r['sample_ms']:.2f} "
              f"| {r['gpu_draws_per_s']:.3g} | {cpu} | {r.get('speedup', float('nan')):.1f}x "
              f"| {r['apply_update_ms']:.2f} / {r['update_deltas_ms']:.2f} "
              f"| {r.get('sampled_step_ms', float('nan')):.2f} | {r.get('dense_ms', float('nan')):.2f} "
              f"| {r.get('sampled_over_dense', float('nan')):.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
