"""Summary table, CSV files and plot of examples/compare_samplers.py's evaluations."""

import csv
import math
import os

import matplotlib
import numpy as np

matplotlib.use("Agg")  # write files, no display needed
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

BASELINE = "log_uniform"


def _first_reach(rows, target):
    """(train time, step) of the first evaluation at or below `target`, else None."""
    for r in rows:
        if r["val_ce"] <= target:
            return r["train_time_s"], r["step"]
    return None


def summarize(records, objectives, baseline=BASELINE):
    """One row per objective: final metrics and time to reach the baseline, mean over seeds.

    Args:
      records: evaluation dicts (objective, seed, step, train_time_s, val_ce,
        top1, top5) in the order they were taken.

    Returns:
      (summary rows, target): target is the baseline's final validation CE
      (mean over seeds), None when the baseline did not run. A row's time to
      the target is the mean over seeds, NaN unless every seed reached it.
    """
    runs = {}  # (objective, seed) -> its evaluations
    for r in records:
        runs.setdefault((r["objective"], r["seed"]), []).append(r)
    finals = {key: rows[-1] for key, rows in runs.items()}
    base_finals = [f["val_ce"] for (obj, _), f in finals.items() if obj == baseline]
    target = float(np.mean(base_finals)) if base_finals else None
    summary = []
    for obj in objectives:
        keys = [k for k in runs if k[0] == obj]
        last = [finals[k] for k in keys]
        mean = lambda name: float(np.mean([f[name] for f in last]))  # pylint: disable=cell-var-from-loop
        reach = [_first_reach(runs[k], target) for k in keys] if target is not None else [None]
        reached = all(r is not None for r in reach)
        summary.append(dict(
            objective=obj, steps=mean("step"), val_ce=mean("val_ce"),
            perplexity=math.exp(mean("val_ce")), top1=mean("top1"), top5=mean("top5"),
            ms_per_step=1e3 * float(np.mean([f["train_time_s"] / f["step"] for f in last])),
            train_time_s=mean("train_time_s"),
            time_to_baseline_s=float(np.mean([r[0] for r in reach])) if reached else math.nan,
            steps_to_baseline=float(np.mean([r[1] for r in reach])) if reached else -1))
    return summary, target


def format_table(summary, target, language_model=False):
    """The results as a Markdown table (perplexity column for language models)."""
    ppl_head, ppl_rule = ("| perplexity ", "|------------") if language_model else ("", "")
    reach_head = f"time to {BASELINE}'s CE" + (f" {target:.3f}" if target is not None else "")
    lines = [f"| {'objective':<23} | steps | val CE {ppl_head}| top-1 | top-5 | ms/step "
             f"| {reach_head:>28} |",
             f"|{'-' * 25}|-------|--------{ppl_rule}|-------|-------|---------|{'-' * 30}|"]
    for s in summary:
        if target is None:
            reach = "n/a"
        elif s["steps_to_baseline"] < 0:
            reach = "not reached"
        else:
            reach = f"{s['time_to_baseline_s']:.1f} s (step {s['steps_to_baseline']:.0f})"
        ppl = f"| {s['perplexity']:10.1f} " if language_model else ""
        lines.append(f"| {s['objective']:<23} | {s['steps']:5.0f} | {s['val_ce']:6.3f} {ppl}"
                     f"| {s['top1']:5.1%} | {s['top5']:5.1%} | {s['ms_per_step']:7.1f} "
                     f"| {reach:>28} |")
    return "\n".join(lines)


def write_outputs(records, summary, output_dir, title):
    """Writes curves.csv (every evaluation), summary.csv and val_ce.png to output_dir."""
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
            label = obj if seed == seeds[0] else None
            for ax, key in ((ax_t, "train_time_s"), (ax_s, "step")):
                ax.plot([r[key] for r in rows], [r["val_ce"] for r in rows], marker=".",
                        color=color, label=label)
    ax_t.set_xscale("log")  # objectives' step times differ by orders of magnitude
    ax_t.set_xlabel("training wall-clock (s, log scale)")
    ax_s.set_xlabel("step")
    ax_t.set_ylabel("validation cross-entropy (full softmax, nats)")
    for ax in (ax_t, ax_s):
        ax.grid(alpha=0.3)
    ax_s.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, "val_ce.png"), dpi=120)
    plt.close(fig)
