"""tfs.samplers.get: one way to name a sampler, shared by the layer and the main job."""
import numpy as np
import pytest
import tensorflow as tf

import tf_sampled as tfs
from tf_sampled.layers import sampler_spec
from error_assertions import raises_naming

NUM_CLASSES, DIM = 50, 6


def table():
    return tf.Variable(np.random.RandomState(0).normal(size=(NUM_CLASSES, DIM)).astype(np.float32))


def test_every_name_builds_its_sampler_with_its_options():
    W, b = table(), tf.Variable(tf.zeros([NUM_CLASSES]))
    kernel = tfs.samplers.get("kernel", W, biases=b, leaf_size=7,
                              feature_map=tfs.features.Quadratic(alpha=2.0))
    assert isinstance(kernel, tfs.samplers.KernelSampler)
    assert kernel.leaf_size == 7 and kernel.biases is b
    assert isinstance(kernel.feature_map, tfs.features.Quadratic)
    lsh = tfs.samplers.get("lsh", W, num_tables=3, num_hashes=4, query="label", seed=5)
    assert isinstance(lsh, tfs.samplers.LSHSampler)
    assert (lsh.num_tables, lsh.num_hashes, lsh.query) == (3, 4, "label")
    for name, cls in (("uniform", tfs.samplers.Uniform), ("log_uniform", tfs.samplers.LogUniform),
                      ("learned_unigram", tfs.samplers.LearnedUnigram)):
        sampler = tfs.samplers.get(name, num_classes=NUM_CLASSES)
        assert type(sampler) is cls and sampler.num_classes == NUM_CLASSES
        # The table gives num_classes when it is passed instead.
        assert tfs.samplers.get(name, W).num_classes == NUM_CLASSES
    unigram = tfs.samplers.get("unigram", counts=np.arange(NUM_CLASSES) + 1.0, distortion=0.5)
    assert isinstance(unigram, tfs.samplers.Unigram) and unigram.distortion == 0.5


def test_adversarial_is_loaded_from_its_path_and_checked(tmp_path):
    rng = np.random.RandomState(1)
    fitted = tfs.samplers.AdversarialSampler.fit(
        rng.normal(size=(400, DIM)).astype(np.float32), rng.randint(0, NUM_CLASSES, 400),
        num_classes=NUM_CLASSES, projection_dim=4)
    path = str(tmp_path / "aux.npz")
    fitted.save(path)
    loaded = tfs.samplers.get("adversarial", path=path, num_classes=NUM_CLASSES, dim=DIM)
    np.testing.assert_array_equal(loaded.params.numpy(), fitted.params.numpy())
    raises_naming(ValueError, lambda: tfs.samplers.get("adversarial", path=path,
                                                       num_classes=NUM_CLASSES + 1, dim=DIM),
                  path, f"{NUM_CLASSES} classes", f"num_classes={NUM_CLASSES + 1}")
    raises_naming(ValueError, lambda: tfs.samplers.get("adversarial", path=path, dim=DIM + 1),
                  f"dim {DIM}", f"dim {DIM + 1}")


@pytest.mark.parametrize("call, fragments", [
    (lambda: tfs.samplers.get("zipf", num_classes=5), ("Unknown sampler", "'zipf'")),
    (lambda: tfs.samplers.get(3, num_classes=5), ("Unknown sampler", "3")),
    (lambda: tfs.samplers.get("uniform", num_classes=5, leaf_size=2),
     ("'uniform'", "leaf_size")),
    (lambda: tfs.samplers.get("kernel", table(), num_tables=2), ("'kernel'", "num_tables")),
    (lambda: tfs.samplers.get("unigram", num_classes=5), ("'unigram'", "counts")),
    (lambda: tfs.samplers.get("adversarial", num_classes=5), ("'adversarial'", "path")),
    (lambda: tfs.samplers.get("kernel", num_classes=5), ("'kernel'", "embeddings")),
    (lambda: tfs.samplers.get("lsh"), ("'lsh'", "embeddings")),
    (lambda: tfs.samplers.get("uniform"), ("'uniform'", "num_classes", "None")),
    (lambda: tfs.samplers.get("log_uniform", num_classes=2.5), ("num_classes", "2.5")),
    (lambda: tfs.samplers.get("uniform", table(), num_classes=NUM_CLASSES + 1),
     (f"num_classes={NUM_CLASSES + 1}", f"{NUM_CLASSES} rows")),
    (lambda: tfs.samplers.get("unigram", num_classes=4, counts=[1.0, 2.0]),
     ("2 entries", "num_classes=4")),
])
def test_bad_names_and_options_raise_value_errors_naming_them(call, fragments):
    raises_naming(ValueError, call, *fragments)


def test_name_of_rebuilds_the_configured_samplers():
    counts = np.arange(1, NUM_CLASSES + 1, dtype=np.float64)
    for sampler in (tfs.samplers.Uniform(NUM_CLASSES), tfs.samplers.LogUniform(NUM_CLASSES),
                    tfs.samplers.LearnedUnigram(NUM_CLASSES),
                    tfs.samplers.Unigram(counts, distortion=0.75)):
        name, options = tfs.samplers.registry.name_of(sampler)
        rebuilt = tfs.samplers.get(name, num_classes=NUM_CLASSES, **options)
        assert type(rebuilt) is type(sampler)
        np.testing.assert_allclose(rebuilt.log_prob(tf.zeros([1, DIM]), [[0, 7, 49]]),
                                   sampler.log_prob(tf.zeros([1, DIM]), [[0, 7, 49]]),
                                   rtol=0, atol=1e-7)
    assert tfs.samplers.registry.name_of(tfs.samplers.KernelSampler(table())) is None


def test_the_layer_names_samplers_through_the_registry():
    assert sampler_spec.SAMPLER_NAMES is tfs.samplers.registry.NAMES
    layer = tfs.layers.SampledSoftmax(NUM_CLASSES, num_sampled=8, sampler="kernel",
                                      sampler_options={"leaf_size": 5,
                                                       "feature_map": "quadratic"})
    layer.build((None, DIM))
    direct = tfs.samplers.get("kernel", layer.embeddings, biases=layer.bias, leaf_size=5,
                              feature_map="quadratic")
    assert type(layer.sampler) is type(direct) and layer.sampler.leaf_size == direct.leaf_size
    np.testing.assert_array_equal(layer.sampler.nodes.numpy(), direct.nodes.numpy())
