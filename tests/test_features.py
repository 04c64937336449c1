"""Feature maps: the C++ maps (through tree node sums) against the TF references."""
import numpy as np
import pytest
import tensorflow as tf

import tf_sampled as tfs

MAPS = [
    tfs.features.Quadratic(alpha=3.0),
    tfs.features.RandomFourier(num_features=32, temperature=2.0, seed=1),
    tfs.features.PositiveRandom(num_features=32, temperature=0.5, seed=2),
    tfs.features.PositiveRandom(num_features=20, orthogonal=False, seed=3),
    tfs.features.GaussianMoments(temperature=0.5),
]


@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("fmap", MAPS, ids=repr)
def test_tree_node_sums_match_reference_features(fmap, has_bias):
    rows = np.random.RandomState(0).normal(size=(103, 6)).astype(np.float32)
    feature_dim = fmap.feature_dim(6, has_bias)
    omega = fmap.projections(feature_dim)
    lib = tfs.load_ops()
    nodes = lib.tf_sampled_kernel_tree_build(rows=rows, omega=omega, leaf_size=10,
                                             has_bias=has_bias, **fmap.op_attrs()).numpy()
    phi = fmap.reference_features(rows, omega, has_bias).numpy()
    assert phi.shape[1] == fmap.num_features(feature_dim) == nodes.shape[1]
    num_leaves = 11
    assert nodes.shape[0] == 2 * num_leaves
    for leaf in range(num_leaves):
        np.testing.assert_allclose(nodes[num_leaves + leaf], phi[leaf * 10:(leaf + 1) * 10].sum(0),
                                   rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nodes[1], phi.sum(0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fmap", MAPS[1:4], ids=repr)
def test_random_features_estimate_their_exact_kernel(fmap):
    """Averaged over many projections, phi(x).phi(y) is the exact kernel."""
    rng = np.random.RandomState(5)
    x = rng.normal(size=(1, 4)) * 0.5
    y = rng.normal(size=(1, 4)) * 0.5
    estimates = []
    for seed in range(200):
        f = type(fmap).from_config(dict(fmap.get_config(), seed=seed))
        omega = f.projections(4)
        estimates.append(float(tf.reduce_sum(f.reference_features(x, omega)
                                             * f.reference_features(y, omega))))
    exact = float(np.exp(fmap.reference_log_kernel(x, y).numpy()[0, 0]))
    # Mean of 200 estimates: the tolerance is 4 standard errors.
    tolerance = 4 * np.std(estimates) / np.sqrt(len(estimates))
    assert abs(np.mean(estimates) - exact) < tolerance


def test_orthogonal_projections_are_orthogonal_within_blocks():
    omega = tfs.features.PositiveRandom(num_features=10, seed=0).projections(8)
    block = omega[:8] / np.linalg.norm(omega[:8], axis=1, keepdims=True)
    np.testing.assert_allclose(block @ block.T, np.eye(8), atol=1e-5)
    assert omega.shape == (10, 8)


@pytest.mark.parametrize("fmap", MAPS, ids=repr)
def test_config_round_trip(fmap):
    restored = type(fmap).from_config(fmap.get_config())
    np.testing.assert_array_equal(restored.projections(5), fmap.projections(5))
    assert restored.get_config() == fmap.get_config()
    import keras
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(fmap))
    assert again.get_config() == fmap.get_config()


def test_seedless_maps_record_their_seed():
    fmap = tfs.features.PositiveRandom(num_features=8)
    again = tfs.features.PositiveRandom.from_config(fmap.get_config())
    np.testing.assert_array_equal(fmap.projections(3), again.projections(3))


@pytest.mark.parametrize("kwargs", [dict(num_features=0), dict(num_features=-3),
                                    dict(temperature=0.0), dict(temperature=float("nan")),
                                    dict(seed=-1)])
def test_bad_config_is_a_value_error(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        tfs.features.PositiveRandom(**kwargs)
