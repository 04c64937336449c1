"""Small SampledSoftmax models and a learnable synthetic task for the layer tests."""
import keras
import numpy as np

import tf_sampled as tfs

NUM_FEATURES = 8


def task(num_classes, n=2048, seed=0):
    """x [n, 8] float32, y [n] int64: the class a fixed random projection ranks first."""
    rng = np.random.RandomState(seed)
    x = rng.normal(size=(n, NUM_FEATURES)).astype(np.float32)
    y = np.argmax(x @ rng.normal(size=(NUM_FEATURES, num_classes)), axis=1).astype(np.int64)
    return x, y


def build(num_classes, dim=16, init_seed=0, **layer_args):
    """Input(8) -> Dense(dim, tanh) -> SampledSoftmax(num_classes, **layer_args)."""
    keras.utils.set_random_seed(init_seed)
    inputs = keras.Input([NUM_FEATURES], name="features")
    h = keras.layers.Dense(dim, activation="tanh", name="trunk")(inputs)
    outputs = tfs.layers.SampledSoftmax(num_classes, name="head", **layer_args)(h)
    return tfs.layers.SampledSoftmaxModel(inputs, outputs)


def hidden(model, x):
    """The head's input h for x: [n, dim] float32."""
    return model.get_layer("trunk")(x).numpy()
