"""Summary table, CSV files and plot of examples/compare_samplers.py's evaluations."""

import csv
import math
import os

import matplotlib
import numpy as np

matplotlib.use("Agg")  # write files, no display needed
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

def mean_curve(runs):
    """(train time [n], step [n], val CE [n]) averaged over seeds.

    runs: one list of evaluation dicts per seed, in time order. The seeds'
    curves are interpolated linearly at the union of their evaluation times,
    from the latest first evaluation on; a seed that stopped earlier holds
    its final value.
    """
    curves = [np.array([[r["train_time_s"], r["step"], r["val_ce"]] for r in rows])
              for rows in runs]
    times = np.unique(np.concatenate([c[:, 0] for c in curves]))
    times = times[times >= max(c[0, 0] for c in curves)]
    steps, ces = (np.mean([np.interp(times, c[:, 0], c[:, k]) for c in curves], axis=0)
                  for k in (1, 2))
    return times, steps, ces


def time_to_reach(curve, target):
    """(time, step) at which a mean curve first reaches `target`, else None.

    Linear between the evaluations around the crossing: evaluations are
    seconds apart, and a crossing read at the later one would favour the
    objective that evaluates more often.
    """
    times, steps, ces = curve
    below = np.nonzero(ces <= target)[0]
    if not below.size:
        return None
    i = int(below[0])
    if i == 0:
        return float(times[0]), float(steps[0])
    frac = (ces[i - 1] - target) / (ces[i - 1] - ces[i])
    return (float(times[i - 1] + frac * (times[i] - times[i - 1])),
            float(steps[i - 1] + frac * (steps[i] - steps[i - 1])))


def summarize(records, objectives, builtins):
    """One row per objective: final metrics and time to the target, mean over seeds.

    Args:
      records: evaluation dicts (objective, seed, step, train_time_s, val_ce,
        top1, top5) in the order they were taken.
      objectives: the objectives' labels, in table order.
      builtins: the labels among them that are TensorFlow's own samplers.

    Returns:
      (summary rows, target, best): best is the built-in objective with the
      lowest final validation CE (mean over seeds), target that CE; both
      None when no built-in ran. A row's time to the target is read on its
      seed-mean curve (NaN if that never reaches it), and `vs_best` divides
      it by the best built-in's own time to its final CE.
    """
    runs = {}  # objective -> seed -> its evaluations
    for r in records:
        runs.setdefault(r["objective"], {}).setdefault(r["seed"], []).append(r)
    finals = {obj: [rows[-1] for rows in by_seed.values()] for obj, by_seed in runs.items()}
    final_ce = {obj: float(np.mean([f["val_ce"] for f in last]))
                for obj, last in finals.items()}
    best = min(builtins, key=final_ce.__getitem__) if builtins else None
    target = final_ce[best] if best else None
    reach = {obj: time_to_reach(mean_curve(list(runs[obj].values())), target)
             if target is not None else None for obj in objectives}
    best_time = reach[best][0] if best and reach[best] else math.nan
    summary = []
    for obj in objectives:
        last = finals[obj]
        mean = lambda name: float(np.mean([f[name] for f in last]))  # pylint: disable=cell-var-from-loop
        time_s, steps = reach[obj] or (math.nan, math.nan)
        summary.append(dict(
            objective=obj, steps=mean("step"), val_ce=final_ce[obj],
            perplexity=math.exp(final_ce[obj]), top1=mean("top1"), top5=mean("top5"),
            ms_per_step=1e3 * float(np.mean([f["train_time_s"] / f["step"] for f in last])),
            train_time_s=mean("train_time_s"), time_to_target_s=time_s,
            steps_to_target=steps, vs_best=time_s / best_time))
    return summary, target, best


def format_table(summary, target, best, language_model=False):
    """The results as a Markdown table (perplexity column for language models)."""
    ppl_head, ppl_rule = ("| perplexity ", "|------------") if language_model else ("", "")
    reach_head = "time to target" if target is None else f"time to {target:.3f}"
    width = max([23] + [len(s["objective"]) for s in summary])
    lines = [f"| {'objective':<{width}} | steps | val CE {ppl_head}| top-1 | top-5 | ms/step "
             f"| {reach_head:>24} | x best built-in |",
             f"|{'-' * (width + 2)}|-------|--------{ppl_rule}|-------|-------|---------|{'-' * 26}"
             f"|-----------------|"]
    for s in summary:
        if target is None:
            reach, ratio = "n/a", "n/a"
        elif math.isnan(s["time_to_target_s"]):
            reach, ratio = "not reached", "-"
        else:
            reach = f"{s['time_to_target_s']:.1f} s (step {s['steps_to_target']:.0f})"
            ratio = f"{s['vs_best']:.2f}"
        ppl = f"| {s['perplexity']:10.1f} " if language_model else ""
        lines.append(f"| {s['objective']:<{width}} | {s['steps']:5.0f} | {s['val_ce']:6.3f} {ppl}"
                     f"| {s['top1']:5.1%} | {s['top5']:5.1%} | {s['ms_per_step']:7.1f} "
                     f"| {reach:>24} | {ratio:>15} |")
    if best is not None:
        lines.append(f"\nTarget: {target:.3f}, the final validation CE of the best built-in "
                     f"configuration, {best} (mean over seeds).")
    else:
        lines.append("\nNo built-in objective ran (uniform, log_uniform, unigram): no target.")
    return "\n".join(lines)


def write_outputs(records, summary, output_dir, target, best, title):
    """Writes curves.csv (every evaluation), summary.csv and val_ce.png to output_dir.

    The plot shows every seed's validation CE against wall-clock and steps,
    the best built-in configuration in bold and the target it sets dashed.
    """
    os.makedirs(output_dir, exist_ok=True)
    for name, rows in (("curves.csv", records), ("summary.csv", summary)):
        with open(os.path.join(output_dir, name), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    fig, (ax_t, ax_s) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    colors = {s["objective"]: f"C{i % 10}" for i, s in enumerate(summary)}
    for obj, color in colors.items():
        seeds = sorted({r["seed"] for r in records if r["objective"] == obj})
        for seed in seeds:  # one curve per seed, one legend entry per objective
            rows = [r for r in records if r["objective"] == obj and r["seed"] == seed]
            label = (f"{obj} (best built-in)" if obj == best else obj) \
                if seed == seeds[0] else None
            for ax, key in ((ax_t, "train_time_s"), (ax_s, "step")):
                ax.plot([r[key] for r in rows], [r["val_ce"] for r in rows], marker=".",
                        color=color, label=label, linewidth=2.5 if obj == best else 1.2)
    for ax in (ax_t, ax_s):
        if target is not None:
            ax.axhline(target, color="black", linestyle="--", linewidth=1,
                       label="target" if ax is ax_s else None)
        ax.grid(alpha=0.3)
    ends = list({(r["objective"], r["seed"]): r["train_time_s"] for r in records}.values())
    # Equal budgets end together: a linear axis. Equal steps end orders of
    # magnitude apart (full softmax against a sampled step): a log axis.
    log_time = max(ends) > 10 * min(ends)
    if log_time:
        ax_t.set_xscale("log")
    ax_t.set_xlabel("training wall-clock (s" + (", log scale)" if log_time else ")"))
    ax_s.set_xlabel("step")
    ax_t.set_ylabel("validation cross-entropy (full softmax, nats)")
    ax_s.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, "val_ce.png"), dpi=120)
    plt.close(fig)
