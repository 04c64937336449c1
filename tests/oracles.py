"""Brute-force oracles of the samplers' exact proposals, in NumPy float64."""
import numpy as np
import tensorflow as tf


def kernel_log_prob(sampler, inputs, classes=None, query_features=None, query_rows=None):
    """log q of a KernelSampler over all classes, by brute force.

    Recomputes every node sum from the sampler's row snapshot with the feature
    map's plain-TensorFlow reference, applies the op's clamped branch rule
    level by level, and the exact kernel inside each leaf from the current
    embeddings. `query_features` / `query_rows` replace phi(x) and x (for the
    batch-shared mixture query).

    Returns:
      [batch, num_classes] float64 log q, or [batch, n] for the given classes.
    """
    rows = sampler.rows.numpy().astype(np.float64)
    omega = sampler.omega.numpy()
    fmap = sampler.feature_map
    num_classes, leaf_size = sampler.num_classes, sampler.leaf_size
    num_leaves = sampler.num_leaves
    has_bias = sampler.biases is not None
    phi_rows = fmap.reference_features(rows, omega, has_bias).numpy()
    nodes = np.zeros([2 * num_leaves, phi_rows.shape[1]])
    for leaf in range(num_leaves):
        nodes[num_leaves + leaf] = phi_rows[leaf * leaf_size:(leaf + 1) * leaf_size].sum(0)
    for node in range(num_leaves - 1, 0, -1):
        nodes[node] = nodes[2 * node] + nodes[2 * node + 1]

    h = np.asarray(inputs, np.float64)
    current = np.asarray(tf.convert_to_tensor(sampler.embeddings), np.float64)
    if sampler.biases is not None:
        x = np.concatenate([h, np.ones([h.shape[0], 1])], 1)
        current = np.concatenate(
            [current, np.asarray(tf.convert_to_tensor(sampler.biases), np.float64)[:, None]], 1)
    else:
        x = h
    log_kernel = fmap.reference_log_kernel(query_rows if query_rows is not None else x,
                                           current).numpy()  # [B, C]
    if query_features is not None:  # a mixture of kernel-map queries
        masses = query_features @ nodes.T
        log_mass = np.where(masses > 0, np.log(np.where(masses > 0, masses, 1.0)), -np.inf)
    else:
        log_mass = fmap.reference_node_log_mass(
            query_rows if query_rows is not None else x, nodes, omega, has_bias).numpy()
    out = np.zeros([log_kernel.shape[0], num_classes])
    eps = 1e-6
    for b in range(log_kernel.shape[0]):
        log_leaf = np.zeros(2 * num_leaves)
        for node in range(1, num_leaves):
            log_a, log_c = log_mass[b, 2 * node], log_mass[b, 2 * node + 1]
            p = 0.5 if log_a == log_c == -np.inf else 1.0 / (1.0 + np.exp(log_c - log_a))
            p = min(max(p, eps), 1 - eps)
            log_leaf[2 * node] = log_leaf[node] + np.log(p)
            log_leaf[2 * node + 1] = log_leaf[node] + np.log1p(-p)
        for leaf in range(num_leaves):
            lo, hi = leaf * leaf_size, min((leaf + 1) * leaf_size, num_classes)
            lk = log_kernel[b, lo:hi]
            lse = lk.max() + np.log(np.exp(lk - lk.max()).sum())
            out[b, lo:hi] = log_leaf[num_leaves + leaf] + lk - lse
    if classes is not None:
        out = np.take_along_axis(out, np.asarray(classes), 1)
    return out


def adversarial_log_prob(sampler, x):
    """log p_n(c | x) [batch, C] of an AdversarialSampler, walking each leaf's path."""
    state = sampler.get_state()
    xt = (x.astype(np.float64) - state["mean"]) @ state["projection"].astype(np.float64)
    params = state["params"].astype(np.float64)
    num_classes = params.shape[0]
    out = np.zeros((len(x), num_classes))
    for c in range(num_classes):
        node = num_classes + state["leaf_of_class"][c]
        while node > 1:
            z = xt @ params[node // 2, :-1] + params[node // 2, -1]
            out[:, c] += -np.logaddexp(0, -z if node % 2 else z)
            node //= 2
    return out


def log_uniform_probabilities(num_classes):
    """TensorFlow's log-uniform p(i) = log((i + 2) / (i + 1)) / log(C + 1), float64 [C]."""
    k = np.arange(num_classes, dtype=np.float64)
    return np.log((k + 2) / (k + 1)) / np.log(num_classes + 1)


def builtin_probabilities(name, num_classes, counts=None, distortion=1.0):
    """q [C] of a built-in sampler from TensorFlow's own op (expected counts / S).

    name: "uniform", "log_uniform", "unigram" (with `counts` and `distortion`)
    or "learned_unigram" (its initial, uniform state).
    """
    all_ids = np.arange(num_classes, dtype=np.int64)[None, :]
    fns = {"uniform": tf.random.uniform_candidate_sampler,
           "log_uniform": tf.random.log_uniform_candidate_sampler,
           "unigram": lambda *a, **k: tf.random.fixed_unigram_candidate_sampler(
               *a, distortion=distortion, unigrams=np.asarray(counts).tolist(), **k),
           "learned_unigram": tf.random.learned_unigram_candidate_sampler}
    _, true_count, _ = fns[name](all_ids, num_classes, 1, False, num_classes, seed=1)
    return true_count.numpy()[0]
