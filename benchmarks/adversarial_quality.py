"""Adversarial negative sampling against uniform / frequency NS and full softmax (issue 4).

The setting of Bamler & Mandt (2020): a linear softmax model (class
embeddings W [C, d] and biases b) on FIXED input features, with the
auxiliary tree fitted once, before training, on the same features
(`tfs.samplers.AdversarialSampler.fit`). The data come from a known model: C
classes (200k by default) at the leaves of a binary hierarchy whose offsets
shrink with depth (class centre = sum of its ancestors' offsets; a class's
place in the hierarchy is random, independent of its frequency), Zipf-like
class frequencies (`tfs.datasets.synthetic.zipf_classes`), x = centre +
Gaussian noise. With a shared isotropic noise the true posterior is itself a
linear softmax, so the "teacher" (W* = centres / sigma^2, b* = -|centre|^2 /
(2 sigma^2) + log prior) is the best any method can reach; it is evaluated
as the ceiling.

Methods (the same linear model, optimizer, batches and seed):
  adversarial   tfs.nn.negative_sampling_loss with per-example negatives
                from the fitted AdversarialSampler; prediction score
                xi + log p_n(y|x) (`AdversarialSampler.all_log_probs`)
  uniform       the same loss with per-example uniform negatives
                (`tfs.samplers.Uniform`); score xi + log(1/C), a constant
  unigram       the same loss with per-example negatives from the training
                class frequencies plus one (`tfs.samplers.Unigram`: a class
                never seen in training keeps a non-zero p_n, so no
                validation example gets an infinite loss); score
                xi + log p_n(y), a per-class constant
  full          full softmax cross-entropy (B x C x d per step)
The correction log p_n is the one of ALGORITHMS.md: trained by negative
sampling, xi_y(x) + log p_n(y|x) = log p(y|x) + const(x).

Each method trains for --time_budget_s seconds of process CPU time (all of the
process's threads; on a shared machine it moves far less with other
processes' load than wall-clock, which is recorded too), evaluated at
geometrically spaced points of that clock (--first_eval_s, x --eval_growth)
on a fixed validation subset: top-1 / top-5 accuracy and full-softmax
cross-entropy of the (corrected) scores, computed over all C classes in
chunks of rows. Evaluation time is not counted. It then prints each
method's time to reach accuracy targets set by uniform NS (fractions of
its best top-1, --target_fractions) and uniform's final validation CE, and
the ratio uniform / adversarial, with the tree's fit (PCA + tree, timed on
both clocks) not counted and counted.

Run from the repository root (defaults: 15 minutes on 2 shared cores, measured):
  python -m benchmarks.adversarial_quality
  python -m benchmarks.adversarial_quality --num_classes=20000 --num_train=60000 \\
      --time_budget_s=20 --methods=adversarial,uniform
"""
import argparse
import csv
import json
import math
import os
import sys
import time

import numpy as np
import tensorflow as tf

import tf_sampled as tfs
from tf_sampled.datasets.synthetic import zipf_classes

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "examples"))
from compare_samplers import batches  # noqa: E402  pylint: disable=wrong-import-position

METHODS = ("adversarial", "uniform", "unigram", "full")
# Logits held at once during evaluation: rows x C floats (64 x 200k = 51 MB).
_EVAL_LOGITS = 1 << 24


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--methods", default=",".join(METHODS), help=f"from {', '.join(METHODS)}")
    add("--num_classes", type=int, default=200_000, help="C")
    add("--num_train", type=int, default=500_000, help="N training examples (>= C: the fit)")
    add("--num_val", type=int, default=1_000, help="validation examples evaluated")
    add("--dim", type=int, default=64, help="input features d")
    add("--zipf_exponent", type=float, default=0.8, help="class frequencies ~ rank^-exponent")
    add("--top_scale", type=float, default=1.0,
        help="standard deviation of the first level's offsets")
    add("--decay", type=float, default=0.85, help="offsets shrink by this per level")
    add("--noise", type=float, default=0.5, help="standard deviation of x around its centre")
    add("--projection_dim", type=int, default=16, help="the auxiliary tree's PCA dims k")
    add("--num_sampled", type=int, default=16, help="negatives per example S")
    add("--batch_size", type=int, default=256)
    add("--learning_rate", type=float, default=2.0,
        help="SparseAdagrad; of 0.1, 0.5, 2, 8 the best for uniform NS (top-1 at 30 s)")
    add("--time_budget_s", type=float, default=180.0,
        help="training time per method and seed on --clock")
    add("--steps", type=int, default=0, help="also stop after this many steps (0: no limit)")
    add("--clock", choices=("cpu", "wall"), default="cpu",
        help="the clock of budgets, evaluation points and the reported times")
    add("--first_eval_s", type=float, default=0.25, help="first evaluation (clock seconds)")
    add("--eval_growth", type=float, default=2.0, help="each next evaluation this much later")
    add("--target_fractions", default="0.5,0.8,0.95",
        help="accuracy targets: these fractions of uniform NS's best top-1")
    add("--data_seed", type=int, default=0, help="the task (hierarchy, classes, noise)")
    add("--seeds", default="0", help="comma-separated training seeds (batches, draws)")
    add("--output_dir", default="/tmp/tf_sampled_adversarial_quality",
        help="where curves.csv and summary.json go")
    args = parser.parse_args(argv)
    unknown = set(args.methods.split(",")) - set(METHODS)
    if unknown:
        parser.error(f"--methods: unknown {sorted(unknown)}; choose from {METHODS}")
    if args.num_train < args.num_classes:
        parser.error("--num_train must be >= --num_classes (the auxiliary tree's fit)")
    return args


# ----------------------------------------------------------------------------
# The task
# ----------------------------------------------------------------------------

def log_zipf_prior(num_classes, exponent):
    """log P(class) of `zipf_classes` (the power law's mass on [k + 1, k + 2))."""
    k = np.arange(num_classes, dtype=np.float64)
    if abs(exponent - 1.0) < 1e-9:
        return np.log(np.log((k + 2) / (k + 1)) / np.log(num_classes + 1.0))
    a = 1.0 - exponent
    return np.log(((k + 2)**a - (k + 1)**a) / ((num_classes + 1.0)**a - 1.0))


def hierarchical_task(num_classes, num_train, num_val, dim, zipf_exponent, top_scale, decay,
                      noise, seed):
    """Fixed features from a known hierarchical model (see the module docstring).

    Returns:
      dict: x_train [N, dim] / x_val float32, y_train [N] / y_val int64, and
      the teacher (W [C, dim], b [C] float32): the true posterior, a linear
      softmax. Features are rescaled to unit variance per dimension (the
      teacher with them), so one learning rate suits any --top_scale/--noise.
    """
    rng = np.random.default_rng(seed)
    depth = max(1, math.ceil(math.log2(num_classes)))
    leaf = rng.permutation(num_classes)  # place in the hierarchy, not by frequency
    centres = np.zeros((num_classes, dim), np.float32)
    for level in range(depth):
        offsets = rng.standard_normal((2**(level + 1), dim), dtype=np.float32)
        centres += top_scale * decay**level * offsets[leaf >> (depth - level - 1)]
    scale = math.sqrt(sum((top_scale * decay**level)**2 for level in range(depth)) + noise**2)
    centres /= scale
    sigma = noise / scale

    def draw(n):
        y = zipf_classes(rng, n, num_classes, zipf_exponent)
        x = centres[y]
        x += sigma * rng.standard_normal(x.shape, dtype=np.float32)
        return x, y
    x_train, y_train = draw(num_train)
    x_val, y_val = draw(num_val)
    teacher_b = (-0.5 * np.square(centres).sum(1) / sigma**2
                 + log_zipf_prior(num_classes, zipf_exponent)).astype(np.float32)
    return dict(x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val,
                teacher=(centres / sigma**2, teacher_b))


# ----------------------------------------------------------------------------
# Evaluation and time to target
# ----------------------------------------------------------------------------

def make_evaluate(weights, biases, x_val, y_val, correction=None):
    """() -> (val CE, top-1, top-5) over all classes of W x + b (+ correction(x)).

    Row chunks of full [rows, C] scores: the correction log p_n(y|x) of the
    adversarial sampler depends on both x and y, so it cannot fold into the
    class-chunked `tfs.layers.full_softmax_stats` (which takes W and b only).
    """
    num_classes, dim = weights.shape
    rows = max(1, _EVAL_LOGITS // int(num_classes))

    @tf.function(input_signature=[tf.TensorSpec([None, dim], tf.float32),
                                  tf.TensorSpec([None], tf.int64)])
    def stats(x, y):
        scores = tf.matmul(x, weights, transpose_b=True) + biases
        if correction is not None:
            scores += correction(x)
        true = tf.gather(scores, y, batch_dims=1)
        ce = tf.reduce_logsumexp(scores, axis=1) - true
        # Ties count against the true class (minus itself): an untrained
        # model's equal scores must not count as correct.
        rank = tf.reduce_sum(tf.cast(scores >= true[:, None], tf.int32), axis=1) - 1
        return (tf.reduce_sum(ce), tf.reduce_sum(tf.cast(rank < 1, tf.float32)),
                tf.reduce_sum(tf.cast(rank < 5, tf.float32)))

    def evaluate():
        sums = [[float(t) for t in stats(x_val[i:i + rows], y_val[i:i + rows])]
                for i in range(0, len(y_val), rows)]
        return np.sum(sums, axis=0) / len(y_val)
    return evaluate


def time_to_reach(records, key, target, higher_is_better=True):
    """(lower, estimate, upper) clock time from which `key` stays at `target` or better.

    Sustained, not first: the adversarial scores start at the tree's own
    accuracy (step 0) and dip while the model's first steps cancel log p_n
    on the negatives it drew, so a first crossing at step 0 would credit the
    fit alone. upper: the first evaluation of the final run at or past the
    target; lower: the evaluation before it; estimate: linear interpolation
    between the two (all 0 when every evaluation is past it). None when the
    last evaluation misses it.
    """
    def ok(v):
        return v >= target if higher_is_better else v <= target
    if not records or not ok(records[-1][key]):
        return None
    misses = [i for i, r in enumerate(records) if not ok(r[key])]
    if not misses:
        return 0.0, 0.0, 0.0
    before, after = records[misses[-1]], records[misses[-1] + 1]
    frac = (target - before[key]) / (after[key] - before[key])
    t0, t1 = before["time_s"], after["time_s"]
    return t0, t0 + frac * (t1 - t0), t1


# ----------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------

def smoothed_counts(labels, num_classes):
    """Training class counts plus one: the frequency model (unigram NS's p_n).

    The one keeps a class never seen in training at a non-zero p_n, so no
    validation example of such a class gets an infinite corrected loss.
    """
    return np.bincount(labels, minlength=num_classes) + 1.0


def now():
    """[process CPU time (all threads), wall-clock] in seconds, read together."""
    return np.array([time.process_time(), time.perf_counter()])


def make_method(method, data, num_classes, args, aux_sampler, seed):
    """(train_step(x, y) -> loss, correction(x) -> [B, C] or None) of one method."""
    dim = data["x_train"].shape[1]
    # Zeros: the problem is convex, so no initialisation favours a method.
    weights = tf.Variable(tf.zeros([num_classes, dim]), name="class_embeddings")
    biases = tf.Variable(tf.zeros([num_classes]), name="class_biases")
    variables = [weights, biases]
    # Adagrad as in the paper; SparseAdagrad updates only the touched rows of a
    # sampled step (Keras' Adagrad would update all C rows every step).
    optimizer = tfs.optimizers.SparseAdagrad(args.learning_rate)
    optimizer.build(variables)
    if method == "adversarial":
        sampler = aux_sampler
        correction = sampler.all_log_probs
    elif method == "uniform":
        sampler, correction = tfs.samplers.Uniform(num_classes), None  # a constant
    elif method == "unigram":
        counts = smoothed_counts(data["y_train"], num_classes)
        sampler = tfs.samplers.Unigram(counts)
        log_p = tf.constant(np.log(counts / counts.sum()), tf.float32)
        correction = lambda x: log_p[None, :]  # noqa: E731
    else:
        sampler, correction = None, None

    @tf.function(input_signature=[tf.TensorSpec([None, dim], tf.float32),
                                  tf.TensorSpec([None], tf.int64)])
    def train_step(x, y):
        with tf.GradientTape() as tape:
            if sampler is None:
                logits = tf.matmul(x, weights, transpose_b=True) + biases
                losses = tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)
            else:
                true = y[:, None]
                # Per-example negatives; the sampler's ops have no gradient.
                candidates = sampler.sample(x, args.num_sampled, true_classes=true,
                                            seed=seed)
                losses = tfs.nn.negative_sampling_loss(weights, biases, true, x, candidates)
            loss = tf.reduce_mean(losses)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss
    return train_step, make_evaluate(weights, biases, data["x_val"], data["y_val"], correction)


def train_one(method, data, num_classes, args, aux_sampler, seed):
    """Trains one method; returns its evaluation records (dicts)."""
    train_step, evaluate = make_method(method, data, num_classes, args, aux_sampler, seed)
    train_step.get_concrete_function()  # trace before timing
    clock_index = 0 if args.clock == "cpu" else 1
    spent = np.zeros(2)  # training CPU s, wall s
    next_eval, step, records, loss_sum = args.first_eval_s, 0, [], 0.0
    data_iter = batches(data["x_train"], data["y_train"], args.batch_size, seed)
    tag = f"[{method:>11s} seed {seed}]"

    def record():
        eval_start = time.perf_counter()
        val_ce, top1, top5 = evaluate()
        records.append(dict(method=method, seed=seed, step=step, time_s=spent[clock_index],
                            cpu_s=spent[0], wall_s=spent[1],
                            train_loss=loss_sum / max(step, 1), val_ce=val_ce, top1=top1,
                            top5=top5))
        print(f"{tag} step {step:6d}  val CE {val_ce:7.3f}  top-1 {top1:6.1%}  top-5 "
              f"{top5:6.1%}  cpu {spent[0]:7.1f} s  wall {spent[1]:7.1f} s  "
              f"({1e3 * spent[clock_index] / max(step, 1):.1f} ms/step {args.clock}; eval "
              f"{time.perf_counter() - eval_start:.1f} s wall)", flush=True)
    # At step 0 the adversarial scores are the tree's log p_n alone: its own accuracy.
    record()

    def done():
        # On the CPU clock, twice the budget in wall-clock also ends training:
        # a guard for the run's total time on a heavily loaded machine.
        return (spent[clock_index] >= args.time_budget_s or spent[1] >= 2 * args.time_budget_s
                or (args.steps and step >= args.steps))
    while not done():
        x, y = next(data_iter)
        start = now()
        loss_sum += float(train_step(x, y))
        spent += now() - start
        step += 1
        if spent[clock_index] >= next_eval or done():
            while next_eval <= spent[clock_index]:
                next_eval *= args.eval_growth
            record()
    return records


def fit_sampler(data, num_classes, projection_dim):
    """(AdversarialSampler fitted on the training features, (cpu s, wall s))."""
    start = now()
    sampler = tfs.samplers.AdversarialSampler.fit(data["x_train"], data["y_train"],
                                                  num_classes, projection_dim=projection_dim)
    return sampler, now() - start


def summarize(records, methods, seeds, fractions, baseline="uniform"):
    """Time-to-target rows and the uniform / adversarial ratios (means over seeds).

    Returns (targets [(name, key, value, higher_is_better)], rows {method: {target
    name: (lower, estimate, upper) mean over seeds, or None}}).
    """
    runs = {(m, s): [r for r in records if r["method"] == m and r["seed"] == s]
            for m in methods for s in seeds}
    base = [runs[(baseline, s)] for s in seeds if runs.get((baseline, s))]
    if not base:
        return [], {}
    best_top1 = np.mean([max(r["top1"] for r in rs) for rs in base])
    final_ce = np.mean([rs[-1]["val_ce"] for rs in base])
    targets = [(f"top-1 {f * best_top1:.1%}", "top1", f * best_top1, True) for f in fractions]
    targets.append((f"val CE {final_ce:.3f}", "val_ce", final_ce, False))
    rows = {}
    for m in methods:
        rows[m] = {}
        for name, key, value, higher in targets:
            hits = [time_to_reach(runs[(m, s)], key, value, higher) for s in seeds]
            rows[m][name] = (None if any(h is None for h in hits)
                             else tuple(np.mean(hits, axis=0)))
    return targets, rows


def print_report(records, methods, seeds, args, fit_time, teacher):
    clock = "CPU" if args.clock == "cpu" else "wall-clock"
    fit_s = fit_time[0 if args.clock == "cpu" else 1]
    print(f"\n## Final (mean over seeds {seeds}; validation {args.num_val} examples; "
          f"teacher: val CE {teacher[0]:.3f}, top-1 {teacher[1]:.1%}, top-5 "
          f"{teacher[2]:.1%})\n")
    print("| method | steps | ms/step CPU | ms/step wall | val CE | top-1 | top-5 | best top-1 |")
    print("|---|---|---|---|---|---|---|---|")
    for m in methods:
        finals = [[r for r in records if r["method"] == m and r["seed"] == s] for s in seeds]
        last = [f[-1] for f in finals if f]
        if not last:
            continue
        mean = lambda k: np.mean([r[k] for r in last])  # noqa: E731
        best = np.mean([max(r["top1"] for r in f) for f in finals])
        print(f"| {m} | {mean('step'):.0f} | {1e3 * mean('cpu_s') / mean('step'):.1f} | "
              f"{1e3 * mean('wall_s') / mean('step'):.1f} | {mean('val_ce'):.3f} | "
              f"{mean('top1'):.1%} | {mean('top5'):.1%} | {best:.1%} |")
    fractions = [float(f) for f in args.target_fractions.split(",")]
    targets, rows = summarize(records, methods, seeds, fractions)
    if not targets:
        return {}
    print(f"\n## Time to target ({clock} s of training; estimate by linear interpolation "
          f"between evaluations, [bounds] the evaluations around it; targets from uniform "
          f"NS; the adversarial tree's fit, {fit_s:.1f} s, not included)\n")
    print("| method | " + " | ".join(t[0] for t in targets) + " |")
    print("|---|" + "---|" * len(targets))
    for m in methods:
        cells = ["not reached" if rows[m][t[0]] is None else
                 f"{rows[m][t[0]][1]:.1f} [{rows[m][t[0]][0]:.1f}, {rows[m][t[0]][2]:.1f}]"
                 for t in targets]
        print(f"| {m} | " + " | ".join(cells) + " |")
    ratios = {}
    if "adversarial" in rows and "uniform" in rows:
        print("\n## uniform NS time / adversarial time to the same target\n")
        print("| target | ratio, fit not counted [bounds] | ratio, fit counted |")
        print("|---|---|---|")
        for name, *_ in targets:
            u, a = rows["uniform"][name], rows["adversarial"][name]
            if u is None or a is None:
                print(f"| {name} | n/a | n/a |")
                continue
            # Bounds: uniform's earliest over adversarial's latest, and back
            # (infinite where adversarial is there from step 0: the tree alone).
            div = lambda p, q: p / q if q > 0 else math.inf  # noqa: E731
            lo, est, hi = div(u[0], a[2]), div(u[1], a[1]), div(u[2], a[0])
            with_fit = u[1] / (a[1] + fit_s)
            ratios[name] = dict(estimate=est, lower=lo, upper=hi, with_fit=with_fit)
            print(f"| {name} | {est:.2f} [{lo:.2f}, {hi:.2f}] | {with_fit:.2f} |")
    return dict(targets=[t[:3] for t in targets],
                time_to_target={m: {k: v for k, v in r.items()} for m, r in rows.items()},
                ratios=ratios)


def main(argv=None):
    args = parse_args(argv)
    methods = args.methods.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"adversarial quality: C {args.num_classes:,}, N {args.num_train:,}, d {args.dim}, "
          f"S {args.num_sampled}, batch {args.batch_size}, SparseAdagrad "
          f"{args.learning_rate}, budget {args.time_budget_s:g} s {args.clock} per method; "
          f"nproc {os.cpu_count()}, load {os.getloadavg()[0]:.2f}, TF {tf.__version__}",
          flush=True)
    start = now()
    data = hierarchical_task(args.num_classes, args.num_train, args.num_val, args.dim,
                             args.zipf_exponent, args.top_scale, args.decay, args.noise,
                             args.data_seed)
    print(f"data generated in {(now() - start)[1]:.1f} s wall", flush=True)
    teacher = make_evaluate(*(tf.constant(t) for t in data["teacher"]), data["x_val"],
                            data["y_val"])()
    print(f"teacher (the true posterior): val CE {teacher[0]:.3f}, top-1 {teacher[1]:.1%}, "
          f"top-5 {teacher[2]:.1%}", flush=True)
    aux_sampler, fit_time = None, np.zeros(2)
    if "adversarial" in methods:
        aux_sampler, fit_time = fit_sampler(data, args.num_classes, args.projection_dim)
        tree_ll = aux_sampler.log_prob(data["x_val"], data["y_val"][:, None]).numpy().mean()
        counts = smoothed_counts(data["y_train"], args.num_classes)
        freq_ll = np.log(counts / counts.sum())[data["y_val"]].mean()
        print(f"auxiliary tree: fit (PCA + tree) {fit_time[0]:.1f} s CPU, {fit_time[1]:.1f} s "
              f"wall; validation log p_n(y|x) {tree_ll:.2f} nats (class frequencies "
              f"{freq_ll:.2f}, uniform {-math.log(args.num_classes):.2f})", flush=True)
    records = []
    for m in methods:
        for seed in seeds:
            records += train_one(m, data, args.num_classes, args, aux_sampler, seed)
    summary = print_report(records, methods, seeds, args, fit_time, teacher)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "curves.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    with open(os.path.join(args.output_dir, "summary.json"), "w") as f:
        json.dump(dict(args=vars(args), fit_cpu_s=fit_time[0], fit_wall_s=fit_time[1],
                       teacher=dict(val_ce=teacher[0], top1=teacher[1], top5=teacher[2]),
                       **summary), f, indent=1, default=float)
    print(f"\nWrote curves.csv and summary.json to {args.output_dir}")


if __name__ == "__main__":
    main()
