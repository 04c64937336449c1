"""Kernel feature maps for the kernel-tree sampler.

A feature map phi turns the kernel K(x, y) = phi(x) . phi(y) into sums that a
tree can hold: a node stores the sum of phi(y_i) over its classes, so a query
scores a whole subtree with one dot product. The ops compute phi in C++ (the
tree build never materialises [num_classes, F]); the `reference_*` methods
here are plain-TensorFlow implementations of the same maps, used as test
oracles.

All maps act on augmented vectors: x = [h, 1] and y = [w, b] when the sampler
has biases (so x . y is the logit), else x = h and y = w. Maps of exp(tau x.y)
(`PositiveRandom`, `GaussianMoments`) take the bias out exactly instead: a
class enters the tree as exp(tau b) phi(w), and the map sees h and w only.
"""
import math

import keras
import numpy as np
import tensorflow as tf

from tf_sampled import _seeding


class FeatureMap:
    """Base class: configuration, projections and the reference maps."""

    #: Name of the map in the ops' `feature_map` attribute.
    op_name = None
    #: Whether a bias column enters as the class weight exp(tau b).
    weights_by_bias = False

    def feature_dim(self, dim, has_bias):
        """Width of the vectors the map sees, for augmented rows of width dim."""
        return dim - 1 if (has_bias and self.weights_by_bias) else dim

    def reference_features(self, v, omega, has_bias=False, query=False):
        """phi in float64 of augmented rows v [n, dim] (or queries): [n, F].

        Class rows are exactly scaled; a bias column is a weight for maps that
        weight by it. Queries drop that column (it holds the constant 1).
        """
        v = tf.convert_to_tensor(v, tf.float64)
        if not (has_bias and self.weights_by_bias):
            return self._features(v, omega)
        if query:
            return self._features(v[:, :-1], omega)
        return self._features(v[:, :-1], omega) * tf.exp(
            self.temperature * v[:, -1:])

    def num_features(self, dim):
        """Number of features F for augmented inputs of width `dim`."""
        raise NotImplementedError

    def projections(self, dim):
        """Random projections omega as a float32 array [num_omega, dim]."""
        return np.zeros([0, dim], np.float32)

    def op_attrs(self):
        """The ops' feature attributes for this map."""
        return {"feature_map": self.op_name, "alpha": 1.0, "temperature": 1.0}

    def _features(self, x, omega):
        """phi(x) in float64, exactly scaled. x: [n, feature_dim]; returns [n, F]."""
        raise NotImplementedError

    def reference_log_kernel(self, x, y):
        """log of the exact kernel, [n, dim] x [m, dim] -> [n, m], float64."""
        raise NotImplementedError

    def reference_node_log_mass(self, x, node_sums, omega, has_bias=False):
        """log of the tree's node masses for augmented queries x [n, dim]: [n, nodes].

        node_sums: [nodes, F] sums of `reference_features` over each node's
        classes. Masses that are not positive give -inf (the op clamps them).
        """
        masses = tf.matmul(self.reference_features(x, omega, has_bias, query=True),
                           tf.cast(node_sums, tf.float64), transpose_b=True)
        return tf.where(masses > 0, tf.math.log(tf.where(masses > 0, masses, 1.0)),
                        tf.constant(-np.inf, tf.float64))

    def get_config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _positive(name, value):
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _count(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@keras.saving.register_keras_serializable(package="tf_sampled")
class Quadratic(FeatureMap):
    """K(x, y) = alpha (x . y)^2 + 1 with its exact features (Blanc & Rendle).

    F = dim (dim + 1) / 2 + 1 (the packed upper triangle of x x^T), so this map
    suits small dims only. The kernel is symmetric in the sign of the logit: it
    over-samples very negative logits under a plain softmax.

    Args:
      alpha: scale of the squared logit (the paper uses 100).
    """

    op_name = "quadratic"

    def __init__(self, alpha=100.0):
        self.alpha = _positive("alpha", alpha)

    def num_features(self, dim):
        return dim * (dim + 1) // 2 + 1

    def op_attrs(self):
        return {"feature_map": self.op_name, "alpha": self.alpha, "temperature": 1.0}

    def _features(self, x, omega=None):
        dim = x.shape[-1]
        rows, cols = np.triu_indices(dim)
        scale = np.where(rows == cols, 1.0, math.sqrt(2.0)) * math.sqrt(self.alpha)
        pairs = tf.gather(x, rows, axis=1) * tf.gather(x, cols, axis=1) * scale
        return tf.concat([pairs, tf.ones_like(x[:, :1])], axis=1)

    def reference_log_kernel(self, x, y):
        dots = tf.matmul(tf.cast(x, tf.float64), tf.cast(y, tf.float64), transpose_b=True)
        return tf.math.log1p(self.alpha * dots * dots)

    def get_config(self):
        return {"alpha": self.alpha}


@keras.saving.register_keras_serializable(package="tf_sampled")
class RandomFourier(FeatureMap):
    """Random Fourier features of the Gaussian kernel on the unit sphere (RF-softmax).

    phi(u) = D^-1/2 [cos(sqrt(nu) w_j . u^), sin(sqrt(nu) w_j . u^)] with
    u^ = u / |u| and w_j ~ N(0, I), so E[phi(x) . phi(y)] = exp(nu (cos(x, y) - 1)):
    the softmax of temperature nu over normalised vectors (Rawat et al. 2019).
    Estimates can be negative; the tree clamps them.

    Args:
      num_features: number of frequencies D (the map has F = 2 D features).
      temperature: nu. Larger is closer to a sharp softmax but needs more features.
      seed: seed of the projections (None: drawn from Python's `random`, which
        `keras.utils.set_random_seed` seeds; recorded in the config).
    """

    op_name = "random_fourier"

    def __init__(self, num_features=128, temperature=1.0, seed=None):
        self.num_frequencies = _count("num_features", num_features)
        self.temperature = _positive("temperature", temperature)
        self.seed = _seeding.seed_or_draw(seed)

    def num_features(self, dim):
        return 2 * self.num_frequencies

    def projections(self, dim):
        rng = np.random.default_rng(self.seed)
        return rng.standard_normal((self.num_frequencies, dim)).astype(np.float32)

    def op_attrs(self):
        return {"feature_map": self.op_name, "alpha": 1.0, "temperature": self.temperature}

    def _features(self, x, omega):
        norms = tf.norm(x, axis=1, keepdims=True)
        unit = x / tf.where(norms > 0, norms, tf.ones_like(norms))
        angles = math.sqrt(self.temperature) * tf.matmul(
            unit, tf.cast(omega, tf.float64), transpose_b=True)
        return tf.concat([tf.cos(angles), tf.sin(angles)], 1) / math.sqrt(self.num_frequencies)

    def reference_log_kernel(self, x, y):
        x = tf.cast(x, tf.float64)
        y = tf.cast(y, tf.float64)
        norms = tf.norm(x, axis=1)[:, None] * tf.norm(y, axis=1)[None, :]
        dots = tf.matmul(x, y, transpose_b=True)
        cosine = tf.where(norms > 0, dots / tf.where(norms > 0, norms, 1.0), 0.0)
        return self.temperature * (cosine - 1.0)

    def get_config(self):
        return {"num_features": self.num_frequencies, "temperature": self.temperature,
                "seed": self.seed}


@keras.saving.register_keras_serializable(package="tf_sampled")
class PositiveRandom(FeatureMap):
    """Positive random features of exp(tau x . y) (Performer's FAVOR+).

    phi(u) = m^-1/2 exp(sqrt(tau) w_j . u - tau |u|^2 / 2), w_j ~ N(0, I),
    optionally orthogonal in blocks of `dim` rows. E[phi(x) . phi(y)] =
    exp(tau x . y) exactly and every estimate is positive, so tree masses need
    no clamping. With biases, x . y is the logit h . w + b: the proposal
    targets the model's softmax at tau = 1.

    Args:
      num_features: m, the number of features.
      temperature: tau.
      orthogonal: draw the projections orthogonal within blocks (lower variance).
      seed: seed of the projections (None: drawn from Python's `random`, which
        `keras.utils.set_random_seed` seeds; recorded in the config).
    """

    op_name = "positive_random"
    weights_by_bias = True

    def __init__(self, num_features=128, temperature=1.0, orthogonal=True, seed=None):
        self.num_random = _count("num_features", num_features)
        self.temperature = _positive("temperature", temperature)
        self.orthogonal = bool(orthogonal)
        self.seed = _seeding.seed_or_draw(seed)

    def num_features(self, dim):
        return self.num_random

    def projections(self, dim):
        rng = np.random.default_rng(self.seed)
        if not self.orthogonal:
            return rng.standard_normal((self.num_random, dim)).astype(np.float32)
        blocks = []
        for _ in range(-(-self.num_random // dim)):
            q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
            q *= np.sign(np.diag(r))  # makes q Haar-distributed
            # Rows of an orthogonal matrix have unit norm; Gaussian rows have
            # chi-distributed norms, which keeps each row's marginal N(0, I).
            norms = np.linalg.norm(rng.standard_normal((dim, dim)), axis=1)
            blocks.append(q.T * norms[:, None])
        return np.concatenate(blocks)[: self.num_random].astype(np.float32)

    def op_attrs(self):
        return {"feature_map": self.op_name, "alpha": 1.0, "temperature": self.temperature}

    def _features(self, x, omega):
        logs = (math.sqrt(self.temperature) * tf.matmul(x, tf.cast(omega, tf.float64),
                                                        transpose_b=True)
                - 0.5 * self.temperature * tf.reduce_sum(x * x, 1, keepdims=True)
                - 0.5 * math.log(self.num_random))
        return tf.exp(logs)

    def reference_log_kernel(self, x, y):
        return self.temperature * tf.matmul(
            tf.cast(x, tf.float64), tf.cast(y, tf.float64), transpose_b=True)

    def get_config(self):
        return {"num_features": self.num_random, "temperature": self.temperature,
                "orthogonal": self.orthogonal, "seed": self.seed}


@keras.saving.register_keras_serializable(package="tf_sampled")
class GaussianMoments(FeatureMap):
    """Node summaries by the first two moments of the class rows (log-normal estimate).

    A node stores [n, sum w, sum w*w] and scores a query by
    log n + tau h.mu + tau^2/2 sum_k h_k^2 var_k, the exact log of
    sum_i exp(tau h.w_i) if the node's rows were Gaussian with diagonal
    covariance. With biases the sums are weighted by exp(tau b_i) (n becomes
    sum_i exp(tau b_i)), so the bias is exact. It is not a kernel factorisation, so it has no unbiasedness
    guarantee, but it stays additive in the rows (incremental updates work
    the same way), costs about 4 * dim per node, and does not degrade with
    large |x| and |y| as random features do (whose variance grows like
    exp(|x + y|^2)). Inside a leaf the sampler uses exp(tau x.y) exactly.

    Args:
      temperature: tau (1.0 targets the model's softmax).
    """

    op_name = "gaussian_moments"
    weights_by_bias = True

    def __init__(self, temperature=1.0):
        self.temperature = _positive("temperature", temperature)

    def num_features(self, dim):
        return 2 * dim + 1

    def op_attrs(self):
        return {"feature_map": self.op_name, "alpha": 1.0, "temperature": self.temperature}

    def _features(self, x, omega=None):
        return tf.concat([tf.ones_like(x[:, :1]), x, x * x], 1)

    def reference_node_log_mass(self, x, node_sums, omega=None, has_bias=False):
        x = tf.convert_to_tensor(x, tf.float64)
        if has_bias:
            x = x[:, :-1]
        sums = tf.cast(node_sums, tf.float64)
        dim = x.shape[1]
        count = sums[:, 0]
        safe = tf.where(count > 0, count, 1.0)[:, None]
        mean = sums[:, 1:dim + 1] / safe
        var = tf.maximum(sums[:, dim + 1:] / safe - mean * mean, 0.0)
        a = self.temperature * x
        score = (tf.math.log(safe[:, 0])[None, :] + tf.matmul(a, mean, transpose_b=True)
                 + tf.matmul(0.5 * a * a, var, transpose_b=True))
        return tf.where((count > 0)[None, :], score, tf.constant(-np.inf, tf.float64))

    def reference_log_kernel(self, x, y):
        return self.temperature * tf.matmul(
            tf.cast(x, tf.float64), tf.cast(y, tf.float64), transpose_b=True)

    def get_config(self):
        return {"temperature": self.temperature}


_BY_NAME = {"quadratic": Quadratic, "random_fourier": RandomFourier,
            "positive_random": PositiveRandom, "gaussian_moments": GaussianMoments}


def get(identifier):
    """A feature map from an instance, a name or a config dict."""
    if isinstance(identifier, FeatureMap):
        return identifier
    if isinstance(identifier, str) and identifier in _BY_NAME:
        return _BY_NAME[identifier]()
    by_class = {cls.__name__: cls for cls in _BY_NAME.values()}
    if isinstance(identifier, dict) and identifier.get("class_name") in by_class:
        return by_class[identifier["class_name"]].from_config(identifier.get("config", {}))
    raise ValueError(
        f"Unknown feature map {identifier!r}; expected a FeatureMap, one of "
        f"{sorted(_BY_NAME)}, or a config dict")
