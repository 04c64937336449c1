"""SampledSoftmaxModel: .keras round trip, checkpoints, SavedModel export for stock TF."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import tf_sampled as tfs
from layer_models import build, task

C = 300
KERNEL = dict(sampler="kernel", sampler_options={"leaf_size": 16}, num_sampled=8, seed=7)


@pytest.fixture(scope="module")
def trained():
    """A kernel-sampler model after one epoch, and its data."""
    x, y = task(C, n=512)
    model = build(C, refresh_every=3, **KERNEL)
    model.compile(tfs.optimizers.LazyAdam(0.02))
    model.fit(x, y, epochs=1, batch_size=128, shuffle=False, verbose=0)
    return model, x, y


def sampler_state(model):
    return [v.numpy() for v in model.sampled_softmax.sampler.variables]


def assert_same_state(a, b):
    for left, right in zip(sampler_state(a), sampler_state(b), strict=True):
        np.testing.assert_array_equal(left, right)
    for left, right in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(left, right)


def test_keras_file_round_trips_config_weights_and_sampler_state(trained, tmp_path):
    model, x, y = trained
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded, tfs.layers.SampledSoftmaxModel)
    assert loaded.sampled_softmax.get_config() == model.sampled_softmax.get_config()
    assert isinstance(loaded.optimizer, tfs.optimizers.LazyAdam)
    assert_same_state(model, loaded)
    np.testing.assert_array_equal(loaded.predict(x[:8], verbose=0), model.predict(x[:8], verbose=0))

    # Both continue with the same samples: the sampler's stream counter is
    # saved with it (tests/test_sample_stream.py checks every sampler kind).
    for continuing in (model, loaded):
        continuing.fit(x, y, epochs=1, batch_size=128, shuffle=False, verbose=0)
    assert_same_state(model, loaded)
    # ... and the state is not trivially equal: a third, differently seeded
    # sampler draws other negatives and ends elsewhere.
    other = keras.models.load_model(tmp_path / "m.keras")
    other.sampled_softmax.seed = 8
    other.fit(x, y, epochs=1, batch_size=128, shuffle=False, verbose=0)
    assert not np.array_equal(other.get_weights()[-4], model.get_weights()[-4])


def test_learned_unigram_counts_are_saved(tmp_path):
    x, y = task(C, n=256)
    model = build(C, sampler="learned_unigram", num_sampled=8)
    model.compile(keras.optimizers.SGD(0.1))
    model.fit(x, y, epochs=1, batch_size=128, verbose=0)
    model.save(tmp_path / "u.keras")
    loaded = keras.models.load_model(tmp_path / "u.keras")
    counts = loaded.sampled_softmax.sampler.counts.numpy()
    np.testing.assert_array_equal(counts, 1 + np.bincount(y, minlength=C))


def test_checkpoint_restores_sampler_state(trained, tmp_path):
    model, x, _ = trained
    path = tf.train.Checkpoint(model=model).save(tmp_path / "ckpt")
    fresh = build(C, refresh_every=3, **dict(KERNEL, seed=None), init_seed=3)
    assert not np.array_equal(sampler_state(fresh)[-1], sampler_state(model)[-1])
    tf.train.Checkpoint(model=fresh).restore(path).assert_existing_objects_matched().expect_partial()
    assert_same_state(model, fresh)
    np.testing.assert_array_equal(fresh.predict(x[:8], verbose=0), model.predict(x[:8], verbose=0))


def saved_model_ops(path):
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    ops = set()
    for meta in proto.meta_graphs:
        ops |= {node.op for node in meta.graph_def.node}
        for function in meta.graph_def.library.function:
            ops |= {node.op for node in function.node_def}
    return ops


SERVE = """
import sys
import numpy as np
import tensorflow as tf
served = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = served(features=tf.constant(np.load(sys.argv[2])))
np.save(sys.argv[3], out["output_0"].numpy())
assert "tf_sampled" not in sys.modules
"""


def run_python(script, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="")
    result = subprocess.run([sys.executable, "-c", script, *map(str, args)], env=env,
                            capture_output=True, text=True, timeout=180, cwd="/")
    return result


@pytest.mark.slow
def test_export_serves_in_a_process_without_tf_sampled(trained, tmp_path):
    model, x, _ = trained
    model.export(tmp_path / "served", verbose=False)
    ops = saved_model_ops(tmp_path / "served")
    assert "MatMul" in ops and not [op for op in ops if op.startswith("TfSampled")]
    np.save(tmp_path / "x.npy", x[:16])
    result = run_python(SERVE, tmp_path / "served", tmp_path / "x.npy", tmp_path / "y.npy")
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), model.predict(x[:16], verbose=0),
                               rtol=1e-5, atol=1e-5)
    cli = subprocess.run(
        ["saved_model_cli", "run", "--dir", str(tmp_path / "served"), "--tag_set", "serve",
         "--signature_def", "serving_default", "--inputs", f"features={tmp_path / 'x.npy'}",
         "--outdir", str(tmp_path / "cli")],
        capture_output=True, text=True, timeout=180,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert cli.returncode == 0, cli.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "cli" / "output_0.npy"),
                                  np.load(tmp_path / "y.npy"))


LOAD_TRAINING_GRAPH = """
import sys
import tensorflow as tf
if sys.argv[2] == "load_ops":
    import tf_sampled as tfs
    tfs.load_ops()
try:
    module = tf.saved_model.load(sys.argv[1])
    print("ids", module.sample(tf.ones([2, 4])).shape)
except Exception as error:  # pylint: disable=broad-except
    print("ERROR", error)
"""


class SamplingModule(tf.Module):
    """A graph that contains the sampling op (what a saved training step holds)."""

    def __init__(self):
        super().__init__()
        self.table = tf.Variable(tf.random.stateless_normal([50, 4], [0, 1]))
        self.sampler = tfs.samplers.KernelSampler(self.table, leaf_size=8)

    @tf.function(input_signature=[tf.TensorSpec([None, 4])])
    def sample(self, h):
        return self.sampler.sample(h, 3, seed=1).ids


@pytest.mark.slow
def test_saved_graph_with_our_ops_loads_after_load_ops(tmp_path):
    module = SamplingModule()
    with pytest.raises(ValueError, match="TfSampled"):
        tf.saved_model.save(module, str(tmp_path / "refused"),
                            options=tf.saved_model.SaveOptions(namespace_whitelist=["Other"]))
    tf.saved_model.save(module, str(tmp_path / "graph"),
                        options=tf.saved_model.SaveOptions(namespace_whitelist=["TfSampled"]))
    without = run_python(LOAD_TRAINING_GRAPH, tmp_path / "graph", "plain").stdout
    assert "Op type not registered 'TfSampled>KernelTreeSample'" in without
    with_ops = run_python(LOAD_TRAINING_GRAPH.replace("import sys", "import sys\nsys.path.insert(0, %r)" % os.getcwd()),
                          tmp_path / "graph", "load_ops").stdout
    assert "ids (2, 3)" in with_ops, with_ops
