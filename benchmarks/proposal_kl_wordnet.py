"""KL(softmax || proposal) of the kernel sampler's configurations on a trained model.

Trains the WordNet model of examples/sampler_objectives.py with full softmax for 1,200
steps, then, for 256 validation queries, compares every proposal's exact
`log_prob` over all 20,206 classes with the model's softmax. Cheaper and far
less noisy than a training run per configuration; prints one table.

    python -m benchmarks.proposal_kl_wordnet
"""
import keras
import numpy as np
import tensorflow as tf

import tf_sampled as tfs

CONFIGS = [  # (leaf size, name, feature map)
    (32, "PositiveRandom(128)", lambda: tfs.features.PositiveRandom(128, seed=0)),
    (32, "GaussianMoments", tfs.features.GaussianMoments),
    (128, "PositiveRandom(128)", lambda: tfs.features.PositiveRandom(128, seed=0)),
    (128, "PositiveRandom(512)", lambda: tfs.features.PositiveRandom(512, seed=0)),
    (128, "GaussianMoments", tfs.features.GaussianMoments),
    (512, "PositiveRandom(128)", lambda: tfs.features.PositiveRandom(128, seed=0)),
    (512, "GaussianMoments", tfs.features.GaussianMoments),
]


def train_full_softmax(data, steps=1200, seed=0):
    tf.random.set_seed(seed)
    embed = keras.layers.Embedding(data.vocab_size, 64, mask_zero=True)
    dense = keras.layers.Dense(128, activation="tanh")
    W = tf.Variable(tf.random.normal([data.num_classes, 128]) * 0.05)
    b = tf.Variable(tf.zeros([data.num_classes]))
    optimizer = keras.optimizers.Adam(2e-3)

    def encode(x):
        mask = tf.cast(x > 0, tf.float32)[..., None]
        return dense(tf.reduce_sum(embed(x) * mask, 1) / tf.maximum(tf.reduce_sum(mask, 1), 1.0))

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = tf.matmul(encode(x), W, transpose_b=True) + b
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        variables = embed.trainable_variables + dense.trainable_variables + [W, b]
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    rng = np.random.RandomState(seed)
    for _ in range(steps):
        batch = rng.randint(0, len(data.y_train), 256)
        step(data.x_train[batch], data.y_train[batch])
    return encode, W, b


def main():
    data = tfs.datasets.load_wordnet()
    encode, W, b = train_full_softmax(data)
    queries = np.random.RandomState(1).randint(0, len(data.y_val), 256)
    h = encode(data.x_val[queries])
    logits = (tf.matmul(h, W, transpose_b=True) + b).numpy().astype(np.float64)
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    p = np.exp(log_p)
    all_ids = np.tile(np.arange(data.num_classes), (len(queries), 1))

    def kl(log_q):
        return float(np.mean(np.sum(p * (log_p - log_q), 1)))

    print("| proposal | leaf size | KL(softmax || q) |")
    print("|---|---|---|")
    log_uniform = tfs.samplers.LogUniform(data.num_classes)
    print(f"| log-uniform | - | {kl(log_uniform.log_prob(None, all_ids).numpy()):.3f} |")
    for leaf_size, name, make in CONFIGS:
        sampler = tfs.samplers.KernelSampler(W, biases=b, feature_map=make(), leaf_size=leaf_size)
        log_q = sampler.log_prob(h, all_ids).numpy().astype(np.float64)
        print(f"| {name} | {leaf_size} | {kl(log_q):.3f} |", flush=True)


if __name__ == "__main__":
    main()
