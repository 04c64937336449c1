"""SampledSoftmaxModel.fit under MirroredStrategy over two logical CPU devices."""
import os
import subprocess
import sys

import pytest

# Two logical CPU devices and a MirroredStrategy over them (scripts run in a
# fresh interpreter: devices are configured before TensorFlow starts).
PRELUDE = """
import sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import tf_sampled as tfs
from layer_models import build, task

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
"""

SCRIPT = PRELUDE + """
C = 300
x, y = task(C, n=1024)
with strategy.scope():
    model = build(C, sampler="kernel", sampler_options={"leaf_size": 16}, num_sampled=8,
                  seed=3)
    model.compile(tfs.optimizers.LazyAdam(0.02))
before = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
model.fit(x, y, epochs=3, batch_size=128, verbose=0)
after = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
head = model.sampled_softmax
copies = {}
for variable in [head.sampler.nodes, head.sampler.rows, head.embeddings.value, head.bias.value]:
    values = [v.numpy() for v in strategy.experimental_local_results(variable)]
    assert len(values) == 2, len(values)
    copies[variable.name] = values
    print(variable.name, "identical", all(np.array_equal(values[0], v) for v in values))
table = np.concatenate([copies["head/embeddings:0"][0], copies["head/bias:0"][0][:, None]], 1)
print("rows follow the table", np.allclose(copies["head/kernel_sampler/rows:0"][0], table))
rebuilt = head.sampler._build(tf.constant(table)).numpy()
print("tree follows the table",
      np.allclose(copies["head/kernel_sampler/nodes:0"][0], rebuilt, rtol=1e-5))
print("loss", before, after)
"""


def run_mirrored(script):
    """stdout of PRELUDE + script in a fresh interpreter; fails on a non-zero exit."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([os.path.dirname(tests_dir), tests_dir]))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_mirrored_fit_keeps_sampler_state_identical_across_replicas():
    out = run_mirrored(SCRIPT)
    assert out.count("identical True") == 4, out
    assert "rows follow the table True" in out and "tree follows the table True" in out, out
    before, after = map(float, out.split("loss")[-1].split())
    assert after < before - 1.0, out
