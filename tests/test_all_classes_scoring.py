"""Scoring every class never aborts the process, with oneDNN on and off.

A MatMul + bias add that TensorFlow's oneDNN rewrite fuses into an inner
product aborts the process (`dnnl::error`, an uncatchable C++ exception)
when its weight has no rows; the adversarial tree's last level had none
whenever C is a power of two, so `predict` of such a model killed it. Which
kernels oneDNN picks depends on the CPU and on TF_ENABLE_ONEDNN_OPTS, read at
TensorFlow's import: each (setting, class count) runs every all-classes path
(`tests/scoring_cases.py`: eager, tf.function, predict, evaluate, exported
SavedModel, for every sampler and loss; AdversarialSampler's correct_logits
and chunked subtrees) in a child process, against NumPy oracles.
"""
import pytest

from child_process import describe_exit, finish, start_module, stderr_summary

CLASS_COUNTS = (1, 2, 3, 4, 255, 256, 257, 1024)


@pytest.mark.slow
@pytest.mark.parametrize("num_classes", CLASS_COUNTS)
@pytest.mark.parametrize("onednn", ["0", "1"])
def test_every_all_classes_path(onednn, num_classes, tmp_path, monkeypatch):
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", onednn)
    code, out, err = finish(start_module("scoring_cases", str(num_classes), str(tmp_path)),
                            timeout=300)
    started = [line[5:] for line in out.splitlines() if line.startswith("CASE ")]
    assert code == 0 and out.rstrip().endswith("DONE"), (
        f"TF_ENABLE_ONEDNN_OPTS={onednn}, C={num_classes}: {describe_exit(code)} in case "
        f"{started[-1] if started else '(before the first case)'}\n{stderr_summary(err)}")
