"""benchmarks/adversarial_quality.py: its task, its time-to-target rule, a tiny run."""
import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import adversarial_quality as aq  # noqa: E402  pylint: disable=wrong-import-position


def test_task_teacher_is_the_true_posterior():
    data = aq.hierarchical_task(num_classes=300, num_train=3000, num_val=2000, dim=16,
                                zipf_exponent=0.8, top_scale=1.0, decay=0.85, noise=0.5,
                                seed=0)
    assert data["x_train"].shape == (3000, 16) and data["x_train"].dtype == np.float32
    assert data["y_val"].min() >= 0 and data["y_val"].max() < 300
    # Unit variance per feature (over classes drawn by frequency and noise).
    np.testing.assert_allclose(data["x_train"].var(), 1.0, rtol=0.3)
    prior = np.exp(aq.log_zipf_prior(300, 0.8))
    np.testing.assert_allclose(prior.sum(), 1.0, rtol=1e-9)
    teacher = aq.make_evaluate(*(tf.constant(t) for t in data["teacher"]), data["x_val"],
                               data["y_val"])()
    zeros = aq.make_evaluate(tf.zeros([300, 16]), tf.zeros([300]), data["x_val"],
                             data["y_val"])()
    # The posterior beats chance by far; all-equal scores count as wrong (ties
    # go against the true class) and give CE log C.
    assert teacher[1] > 0.5 and teacher[0] < 2.0, teacher
    assert zeros[1] == 0.0 and zeros[2] == 0.0
    np.testing.assert_allclose(zeros[0], np.log(300), rtol=1e-5)


def _records(times, values):
    return [dict(time_s=t, top1=v) for t, v in zip(times, values)]


def test_time_to_reach_is_sustained_and_interpolated():
    recs = _records([0, 1, 2, 4], [0.3, 0.1, 0.2, 0.4])
    # First crossing at t=0 (the tree alone) does not count: it dips after.
    assert aq.time_to_reach(recs, "top1", 0.25) == pytest.approx((2, 2 + 2 * 0.25, 4))
    assert aq.time_to_reach(recs, "top1", 0.05) == (0.0, 0.0, 0.0)
    assert aq.time_to_reach(recs, "top1", 0.5) is None
    ce = [dict(time_s=t, val_ce=v) for t, v in zip([0, 1, 2], [9.0, 7.0, 5.0])]
    assert aq.time_to_reach(ce, "val_ce", 6.0, higher_is_better=False) == \
        pytest.approx((1, 1.5, 2))


def test_tiny_run_writes_curves_and_ratios(tmp_path, capsys):
    aq.main(["--num_classes=256", "--num_train=2048", "--num_val=128", "--dim=8",
             "--projection_dim=4", "--num_sampled=4", "--batch_size=32", "--steps=6",
             "--time_budget_s=30", "--first_eval_s=0.001", "--eval_growth=1e9",
             f"--output_dir={tmp_path}"])
    out = capsys.readouterr().out
    assert "| method | steps |" in out and "uniform NS time / adversarial time" in out
    with open(os.path.join(tmp_path, "summary.json")) as f:
        summary = json.load(f)
    assert set(summary["time_to_target"]) == set(aq.METHODS)
    with open(os.path.join(tmp_path, "curves.csv")) as f:
        lines = f.read().splitlines()
    # Per method: step 0, the first evaluation, the last step.
    assert len(lines) == 1 + 3 * len(aq.METHODS)
