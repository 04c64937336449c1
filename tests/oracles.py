"""Brute-force oracles for the kernel-tree sampler, in NumPy float64."""
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
