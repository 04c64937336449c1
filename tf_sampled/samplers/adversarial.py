"""The adversarial auxiliary-model sampler (Bamler & Mandt, ICLR 2020)."""
import numpy as np
import tensorflow as tf

from tf_sampled import _ops
from tf_sampled.samplers import base

_SAVE_FORMAT = 1
# The `SampleStream` variables a saved file holds (as stream_counter, ...).
_STREAM_STATE = ("counter", "offset")
# Rows of features centred and projected per chunk while fitting (bounds the
# float64 temporaries at chunk * dim * 8 bytes).
_FIT_CHUNK = 1 << 16


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _pca(features, projection_dim):
    """(mean [d], projection [d, k]) whitening the top-k principal components."""
    n, dim = features.shape
    mean = features.mean(axis=0, dtype=np.float64)
    cov = np.zeros((dim, dim))
    for start in range(0, n, _FIT_CHUNK):
        centred = features[start:start + _FIT_CHUNK].astype(np.float64) - mean
        cov += centred.T @ centred
    cov /= n
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    top = np.argsort(eigenvalues)[::-1][:projection_dim]
    # Unit variance per component keeps the node regressions well conditioned
    # and the ridge on the same scale in every direction; the floor keeps a
    # flat direction from blowing up.
    scale = np.sqrt(np.maximum(eigenvalues[top], 1e-6 * max(eigenvalues.max(), 1e-30)))
    return mean.astype(np.float32), (eigenvectors[:, top] / scale).astype(np.float32)


class AdversarialSampler(base.Sampler):
    """Negatives from a fitted auxiliary model p_n(y | x) (Bamler & Mandt 2020).

    The model is a balanced binary tree over the classes (one class per
    leaf; a heap over exactly num_classes leaves, so no padding) whose
    internal node v goes right with probability sigma(w_v . x~ + b_v), where
    x~ = (x - mean) @ projection is the input whitened onto its top k
    principal components. It is fitted once to the training data (`fit`),
    greedily top-down, then frozen: it mimics the data distribution, so
    negatives drawn from it are "adversarial" (hard) for the model being
    trained. Sampling and log p_n cost O(k log C) per draw; log p_n is exact.

    Train with `tf_sampled.nn.negative_sampling_loss` and predict with
    `correct_logits` (score = xi + log p_n(y|x), the paper's theorem), or use
    the sampler with `tf_sampled.nn.sampled_softmax_loss` (log q corrected)
    like any other. The Keras layer does either: `SampledSoftmax(...,
    sampler="adversarial", loss="negative_sampling")` adds log p_n at
    inference and in its evaluation.

    State (non-trainable variables, checkpointed with the sampler):
      mean: [dim] input mean; projection: [dim, k] whitened PCA basis.
      params: [num_classes, k + 1] node regressions (row v = [w_v, b_v] for
        internal node v = 1..num_classes-1, children 2v and 2v + 1; row 0
        unused); leaf_of_class, class_of_leaf: [num_classes] int64 inverse
        permutations (leaf slot s is heap node num_classes + s).
      stream: the `SampleStream` of its draws (counter, offset), as every
        sampler's.

    Args:
      mean: [dim] input mean of a fitted model (from `fit`, or arrays saved
        by `save`), as the four arrays below.
      projection: [dim, k] whitened PCA basis.
      params: [num_classes, k + 1] node regressions.
      leaf_of_class: [num_classes] int64 leaf slot of each class.
      class_of_leaf: [num_classes] int64 class of each leaf slot.
      name: module name.
    """

    def __init__(self, mean, projection, params, leaf_of_class, class_of_leaf, name=None):
        mean = np.asarray(mean, np.float32)
        projection = np.asarray(projection, np.float32)
        params = np.asarray(params, np.float32)
        if params.ndim != 2 or params.shape[0] < 2 or params.shape[1] < 2:
            raise ValueError(f"params must have shape [num_classes >= 2, k + 1 >= 2], got "
                             f"{params.shape}")
        num_classes, k = params.shape[0], params.shape[1] - 1
        if projection.ndim != 2 or projection.shape[1] != k:
            raise ValueError(f"projection must have shape [dim, {k}] to match params "
                             f"{params.shape}, got {projection.shape}")
        if mean.shape != (projection.shape[0],):
            raise ValueError(f"mean must have shape [{projection.shape[0]}] like projection's "
                             f"rows, got {mean.shape}")
        for arg, perm in (("leaf_of_class", leaf_of_class), ("class_of_leaf", class_of_leaf)):
            perm = np.asarray(perm)
            if perm.shape != (num_classes,) or not np.array_equal(
                    np.sort(perm), np.arange(num_classes)):
                raise ValueError(f"{arg} must be a permutation of range({num_classes})")
        if not np.array_equal(np.asarray(class_of_leaf)[np.asarray(leaf_of_class)],
                              np.arange(num_classes)):
            raise ValueError("class_of_leaf must be the inverse permutation of leaf_of_class")
        if not (np.isfinite(params).all() and np.isfinite(projection).all()
                and np.isfinite(mean).all()):
            raise ValueError("mean, projection and params must be finite")
        super().__init__(int(num_classes), name=name)
        self.dim = int(projection.shape[0])
        self.projection_dim = int(k)
        self._library = _ops.load_ops()
        with self.name_scope:
            def variable(value, var_name, dtype):
                return tf.Variable(np.asarray(value), dtype=dtype, trainable=False,
                                   name=var_name)
            self.mean = variable(mean, "mean", tf.float32)
            self.projection = variable(projection, "projection", tf.float32)
            self.params = variable(params, "params", tf.float32)
            self.leaf_of_class = variable(leaf_of_class, "leaf_of_class", tf.int64)
            self.class_of_leaf = variable(class_of_leaf, "class_of_leaf", tf.int64)

    # ------------------------------------------------------------------
    # Fitting, saving, loading
    # ------------------------------------------------------------------

    @classmethod
    def fit(cls, features, labels, num_classes, projection_dim=16, num_iterations=2,
            newton_steps=2, l2=0.1, name=None):
        """Fits the auxiliary model to training data (once, before training).

        PCA (whitened) onto `projection_dim` components, then the tree greedily
        top-down in C++ (`TfSampled>AdversarialTreeFit`): per node `num_iterations`
        rounds of `newton_steps` Newton steps of a ridge (`l2`) logistic
        regression and a balanced re-assignment of the classes. Every example
        is processed at one node per level: O(N log C (projection_dim + 1)^2
        (newton_steps + 1) num_iterations), parallel over the op's threads.
        Classes without examples still get a leaf and non-zero probability.

        Args:
          features: [N, dim] float inputs x (array or tensor; finite).
          labels: [N] int classes in [0, num_classes) (first label per example).
          num_classes: C >= 2; N must be >= C.
          projection_dim: k <= dim.
          num_iterations: rounds of Newton steps and re-assignment per node (>= 1).
          newton_steps: Newton steps per round (>= 1).
          l2: ridge on each node's (w, b), > 0.
          name: module name.

        Returns:
          The fitted `AdversarialSampler`.
        """
        features = np.asarray(features)
        if features.ndim != 2 or not np.issubdtype(features.dtype, np.floating):
            raise ValueError(f"features must be a float matrix [N, dim], got dtype "
                             f"{features.dtype} and shape {features.shape}")
        labels = np.asarray(labels)
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integer class ids [N], got dtype {labels.dtype} "
                             f"and shape {labels.shape}")
        num_classes = _check_int("num_classes", num_classes, 2)
        projection_dim = _check_int("projection_dim", projection_dim, 1)
        num_iterations = _check_int("num_iterations", num_iterations, 1)
        newton_steps = _check_int("newton_steps", newton_steps, 1)
        if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not (
                0 < l2 < float("inf")):
            raise ValueError(f"l2 must be a positive finite number, got {l2!r}")
        n, dim = features.shape
        if labels.shape[0] != n:
            raise ValueError(f"labels must have one entry per row of features ({n}), got "
                             f"{labels.shape[0]}")
        if projection_dim > dim:
            raise ValueError(f"projection_dim ({projection_dim}) must be <= the input dim "
                             f"(features have {dim} columns)")
        if n < num_classes:
            raise ValueError(f"features must have at least num_classes ({num_classes}) rows "
                             f"(examples) to fit the model, got {n}")
        features = features.astype(np.float32, copy=False)
        if not np.isfinite(features).all():
            row = int(np.argwhere(~np.isfinite(features))[0, 0])
            raise ValueError(f"features must be finite (NaN/Inf in row {row})")
        if n and (labels.min() < 0 or labels.max() >= num_classes):
            bad = labels[(labels < 0) | (labels >= num_classes)][0]
            raise ValueError(f"labels must be in [0, {num_classes}), got {bad}")
        mean, projection = _pca(features, projection_dim)
        projected = np.concatenate([(features[s:s + _FIT_CHUNK] - mean) @ projection
                                    for s in range(0, n, _FIT_CHUNK)]).astype(np.float32)
        params, leaf_of_class, class_of_leaf = _ops.load_ops().tf_sampled_adversarial_tree_fit(
            features=projected, labels=labels.astype(np.int64), num_classes=num_classes,
            num_iterations=num_iterations, newton_steps=newton_steps, l2=float(l2))
        return cls(mean, projection, params.numpy(), leaf_of_class.numpy(),
                   class_of_leaf.numpy(), name=name)

    def get_state(self):
        """The fitted model as a dict of NumPy arrays (the constructor's args)."""
        return {key: getattr(self, key).numpy() for key in
                ("mean", "projection", "params", "leaf_of_class", "class_of_leaf")}

    def save(self, path):
        """Saves the fitted model (NumPy .npz): fit once, train many times.

        The file also holds the sample stream's position (counter and offset),
        so a loaded sampler continues the saved one's draws.
        """
        with open(path, "wb") as f:
            np.savez(f, format=_SAVE_FORMAT, **self.get_state(),
                     **{f"stream_{key}": getattr(self.stream, key).numpy()
                        for key in _STREAM_STATE})

    @classmethod
    def load(cls, path, name=None):
        """An `AdversarialSampler` from a file written by `save`.

        A file without the stream's state (written before streams) gives a
        fresh stream.
        """
        with np.load(path) as data:
            if "format" not in data or int(data["format"]) != _SAVE_FORMAT:
                raise ValueError(f"{path} is not an AdversarialSampler file (format "
                                 f"{_SAVE_FORMAT})")
            state = {key: data[key] for key in
                     ("mean", "projection", "params", "leaf_of_class", "class_of_leaf")}
            stream = {key: int(data[f"stream_{key}"]) for key in _STREAM_STATE
                      if f"stream_{key}" in data}
        sampler = cls(**state, name=name)
        for key, value in stream.items():
            if value < 0:
                raise ValueError(f"{path}: stream_{key} must be >= 0, got {value}")
            getattr(sampler.stream, key).assign(value)
        return sampler

    # ------------------------------------------------------------------
    # The sampler protocol
    # ------------------------------------------------------------------

    def project(self, inputs):
        """x~ = (inputs - mean) @ projection: float32 [batch, projection_dim]."""
        inputs = base.as_query_matrix(inputs, self.num_classes, self.dim)
        return tf.matmul(inputs - self.mean, self.projection)

    def _tree_args(self, inputs):
        return dict(params=self.params, class_of_leaf=self.class_of_leaf,
                    leaf_of_class=self.leaf_of_class, inputs=self.project(inputs))

    def sample(self, inputs, num_sampled, true_classes=None, seed=None):
        base.check_count("num_sampled", num_sampled)
        args = self._tree_args(inputs)
        batch = args["inputs"].shape[0]
        if true_classes is None:
            true_classes = tf.zeros([tf.shape(args["inputs"])[0], 0], tf.int64)
        true_classes = base.as_class_matrix(true_classes, "true_classes", batch)
        seed1, seed2, counter = self.stream.next(seed)
        ids, log_q, true_log_q = self._library.tf_sampled_adversarial_tree_sample(
            true_classes=true_classes, counter=counter, num_sampled=num_sampled, seed=seed1,
            seed2=seed2, **args)
        return base.SampledCandidates(ids, log_q, true_log_q)

    def log_prob(self, inputs, classes):
        args = self._tree_args(inputs)
        classes = base.as_class_matrix(classes, "classes", args["inputs"].shape[0])
        return self._library.tf_sampled_adversarial_tree_log_prob(classes=classes, **args)

    def candidate_sampler(self, true_classes, num_true, num_sampled, unique, range_max,
                          seed=None, name=None, inputs=None):
        if inputs is None:
            raise ValueError("AdversarialSampler.candidate_sampler needs `inputs` [batch, dim]")
        self._check_shared_args(num_true, num_sampled, unique, range_max)
        args = self._tree_args(inputs)
        true_classes = self._shared_true_classes(true_classes, num_true, args["inputs"].shape[0])
        with tf.name_scope(name or "adversarial_candidate_sampler"):
            seed1, seed2, counter = self.stream.next(seed)
            return self._library.tf_sampled_adversarial_tree_candidate_sampler(
                true_classes=true_classes, counter=counter, num_true=num_true,
                num_sampled=num_sampled, unique=bool(unique), range_max=range_max, seed=seed1,
                seed2=seed2, **args)

    # ------------------------------------------------------------------
    # Prediction-time correction (plain TensorFlow: no custom ops)
    # ------------------------------------------------------------------

    def all_log_probs(self, inputs, dtype=tf.float32):
        """log p_n(y | inputs[b]) for every class: [batch, num_classes].

        Plain TensorFlow ops only (a serving graph stays free of custom ops):
        the node logits of each heap level in one matmul, top-down, O(batch C k)
        in all.
        """
        return all_log_probs(self.project(inputs), self.params, self.leaf_of_class, dtype=dtype)

    @property
    def num_subtrees(self):
        """P = 2^floor(log2 C): the subtrees `subtree_log_probs` splits the classes into."""
        return _frontier_size(self.num_classes)

    def subtree_log_probs(self, inputs, start, stop, dtype=tf.float32):
        """log p_n of the classes in subtrees [start, stop) (of `num_subtrees`).

        The classes in chunks, for a full-softmax evaluation that never holds
        [batch, num_classes]: each subtree holds one or two classes, and
        subtrees [0, num_subtrees) hold every class once. Plain TensorFlow,
        O(batch ((stop - start) + log C) k).

        Args:
          inputs: [batch, dim] float.
          start: int scalar (tensors too), the first subtree, 0 <= start < stop.
          stop: int scalar (tensors too), one past the last subtree, <= num_subtrees.
          dtype: computation dtype.

        Returns:
          (classes [n] int64, log_p [batch, n]) with stop - start <= n <=
          2 (stop - start).
        """
        slots, log_p = subtree_log_probs(self.project(inputs), self.params, start, stop,
                                         dtype=dtype)
        return tf.gather(self.class_of_leaf, slots), log_p

    def correct_logits(self, logits, inputs):
        """Prediction scores xi + log p_n(y|x) for a model trained by negative
        sampling against this sampler (Bamler & Mandt, Thm. 1): [batch, C]."""
        logits = tf.convert_to_tensor(logits)
        return logits + tf.cast(self.all_log_probs(inputs), logits.dtype)


def _frontier_size(num_classes):
    """P = 2^floor(log2 C): the nodes of the heap's last full level, [P, 2P)."""
    return 1 << (num_classes.bit_length() - 1)


def subtree_log_probs(projected, params, start, stop, dtype=tf.float32):
    """log p_n(leaf | x) of the leaves under nodes [P + start, P + stop), plain TensorFlow.

    The heap over C leaves (nodes C..2C-1) has its last full level at depth
    floor(log2 C): nodes [P, 2P), P <= C < 2P. A node there below C is
    internal with two leaf children (in [2P, 2C)); one at or above C is a
    leaf. So these P subtrees partition the leaves, and a contiguous range of
    them has contiguous ancestors on every level above: the walk down costs
    O(batch (n + log C) k) for n subtrees, never O(batch C).

    Args:
      projected: [batch, k] projected inputs x~.
      params: [C, k + 1] node regressions (static C >= 2).
      start, stop: int scalars, 0 <= start < stop <= P.
      dtype: computation dtype.

    Returns:
      (slots [n] int64 leaf slots (heap id - C), log_p [batch, n]); over
      [0, P) the slots are 0..C-1 in order.
    """
    params = tf.cast(tf.convert_to_tensor(params), dtype)
    num_classes = params.shape[0]
    depth = num_classes.bit_length() - 1
    frontier = 1 << depth
    x = tf.cast(projected, dtype)
    batch = tf.shape(x)[0]
    # [x, 1]: each node's bias is folded into the matmul. A MatMul followed by
    # a bias add is fused by oneDNN into an inner product whose primitive
    # aborts the process on a weight with no rows, and the last level has no
    # internal node whenever C is a power of two; a plain MatMul of n = 0
    # rows is an empty [batch, 0] result, as it should be.
    x_one = tf.concat([x, tf.ones([batch, 1], dtype)], 1)
    # int32 ranges: heap ids stay below 2C (int32 covers C up to 2^30).
    first = frontier + tf.cast(start, tf.int32)
    last = frontier + tf.cast(stop, tf.int32)  # exclusive

    def children(log_p, lo, hi):
        """log P of nodes [2 lo, 2 hi) from that of internal nodes [lo, hi)."""
        z = tf.matmul(x_one, params[lo:hi], transpose_b=True)
        pair = tf.stack([log_p + tf.math.log_sigmoid(-z), log_p + tf.math.log_sigmoid(z)], 2)
        return tf.reshape(pair, [batch, 2 * (hi - lo)])

    log_p, lo, hi = tf.zeros([batch, 1], dtype), 1, 2  # the root
    for level in range(1, depth + 1):
        shift = depth - level  # ancestors of [first, last) on this level
        new_lo = tf.bitwise.right_shift(first, shift)
        new_hi = tf.bitwise.right_shift(last - 1, shift) + 1
        log_p = children(log_p, lo, hi)[:, new_lo - 2 * lo:new_hi - 2 * lo]
        lo, hi = new_lo, new_hi
    # [first, last): internal nodes first (ids < C), then leaves.
    inner = tf.clip_by_value(num_classes, first, last)
    leaves = log_p[:, inner - first:]
    below = children(log_p[:, :inner - first], first, inner)
    slots = tf.concat([tf.range(inner, last), tf.range(2 * first, 2 * inner)], 0) - num_classes
    return tf.cast(slots, tf.int64), tf.concat([leaves, below], 1)


def all_log_probs(projected, params, leaf_of_class, dtype=tf.float32):
    """log p_n(y | x) of every class from a fitted tree, in plain TensorFlow.

    Args:
      projected: [batch, k] projected inputs x~.
      params: [C, k + 1] node regressions (static C).
      leaf_of_class: [C] int leaf slot of each class.
      dtype: computation dtype (float64 for checks).

    Returns:
      [batch, C] log-probabilities (rows sum to 1 in probability).
    """
    num_classes = tf.TensorShape(params.shape)[0]
    # Every subtree at once: the slots come back as 0..C-1.
    _, leaf_log_p = subtree_log_probs(projected, params, 0, _frontier_size(num_classes),
                                      dtype=dtype)
    return tf.gather(leaf_log_p, tf.cast(leaf_of_class, tf.int32), axis=1)
