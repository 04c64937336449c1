"""A kernel sampler over a class table split into shards: one tree per shard.

On parameter servers each shard of the class table lives on its own "ps"
task; `ShardedKernelSampler` builds a `tf_sampled.samplers.KernelSampler`
over each shard's rows on the shard's device, so the tree, its row snapshot
and the refresh of touched rows stay with the rows. A draw for a query h
picks a shard s with probability

    P(s | h) = m_s(h) / sum_t m_t(h),   m_s(h) = the shard tree's root mass,

(for the kernel maps m_s(h) = phi(h) . z_s(root), z_s(root) = sum over the
shard's classes of phi(w_c): the root row of the tree's node sums; every
shard uses the same feature map and projections), then descends inside that
shard's tree. The shard probabilities are floored at `MIN_SHARD_PROB` (a
shard whose mass is not positive or underflows stays reachable), and the log
q of a draw is exact over the whole table:

    log q(c | h) = log P(shard(c) | h) + log q_shard(c | h).
"""
import numpy as np
import tensorflow as tf

from tf_sampled import features as features_lib
from tf_sampled.samplers import base
from tf_sampled.samplers import kernel as kernel_lib
from tf_sampled.samplers import stream as stream_lib

# Every shard keeps at least this probability for every query.
MIN_SHARD_PROB = 1e-6
# Shard s draws with the seed attribute seed1 * _SHARD_SEED_STRIDE + s + 1
# (mod 2^63): its own stream, a function of the sampler's seeds.
_SHARD_SEED_STRIDE = 1_000_003


def check_shardable(sampler, options=None):
    """(feature_map, leaf_size) of a sampler `ShardedKernelSampler` can shard, else ValueError.

    Args:
      sampler: "kernel" (with `options` {"feature_map", "leaf_size"}), or
        something else: a name or instance of a sampler that cannot be
        sharded (an LSH or adversarial sampler holds global state: hash
        tables or an auxiliary tree fitted on the whole table; the built-in
        unigram samplers are not input-dependent and are not offered here).
      options: dict of the kernel sampler's options.

    Raises:
      ValueError: naming the sampler and what can be sharded.
    """
    options = dict(options or {})
    if sampler == "kernel":
        unknown = sorted(set(options) - {"feature_map", "leaf_size"})
        if unknown:
            raise ValueError(f"the sharded 'kernel' sampler takes options ['feature_map', "
                             f"'leaf_size'], got unknown {unknown}")
        fmap = features_lib.get(options.get("feature_map") or
                                features_lib.PositiveRandom(128))
        leaf_size = base.check_count("leaf_size",
                                     options.get("leaf_size", kernel_lib.DEFAULT_LEAF_SIZE))
        return fmap, leaf_size
    name = sampler if isinstance(sampler, str) else type(sampler).__name__
    raise ValueError(
        f"sampler {name!r} cannot be sharded over parameter servers: a sharded table needs "
        f"one sampling tree per shard, which only the kernel sampler ('kernel', "
        f"tf_sampled.samplers.KernelSampler's tree) provides (LSH hash tables and the "
        f"adversarial sampler's tree are fitted on the whole table). Use sampler='kernel'.")


def shard_offsets(rows):
    """[K + 1] int64 first class id of each shard (and the total) for shard sizes `rows`."""
    return np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)


class ShardedKernelSampler(base.Sampler):
    """One `KernelSampler` tree per shard of a class table, exact log q over the whole table.

    Shard s holds the classes offsets[s] .. offsets[s + 1] - 1 (its rows
    in order). Its tree, row snapshot and projections are created on
    `devices[s]` (the parameter server of the shard), so sampling inside a
    shard and refreshing its touched rows run there; only the queries
    [batch, dim] go to each shard and [batch, S] ids and log q come back.

    Each draw picks its shard from P(s | h) (the shards' root masses, see
    the module docstring) and then takes the corresponding draw of the
    shard's tree: each shard draws, for every query, as many candidates as
    the batch's query that needs most from it (an iid sequence, at most S),
    and draw j of query b is the next of the draws its shard made for b. The
    cost is K (shards) descents per query, at most O(K S log(leaves)).

    Args:
      tables: K float32 `tf.Variable`s [rows_s, dim] (the shards of the
        [num_classes, dim] table, in class order).
      feature_map: a `tf_sampled.features.FeatureMap` (or name) shared by all
        shards; default `PositiveRandom(128)`.
      leaf_size: classes per leaf in every shard's tree.
      biases: None, or K float32 variables [rows_s] (the proposal then
        targets exp(h . w + b)).
      devices: K device strings (default: each table's device).
      name: module name.

    Attributes:
      shards: the K `KernelSampler`s.
      offsets: [K + 1] int64 numpy array of shard boundaries.
    """

    def __init__(self, tables, feature_map=None, leaf_size=kernel_lib.DEFAULT_LEAF_SIZE,
                 biases=None, devices=None, name=None):
        tables = list(tables)
        if not tables:
            raise ValueError("tables must hold at least one shard")
        shapes = [base.check_table_shape(t.shape) for t in tables]
        dims = {d for _, d in shapes}
        if len(dims) != 1:
            raise ValueError(f"every shard must have the same dim, got shapes {shapes}")
        if biases is not None and len(list(biases)) != len(tables):
            raise ValueError(f"biases must hold one variable per shard ({len(tables)}), got "
                             f"{len(list(biases))}")
        devices = list(devices) if devices is not None else [t.device for t in tables]
        if len(devices) != len(tables):
            raise ValueError(f"devices must name one device per shard ({len(tables)}), got "
                             f"{devices}")
        self.offsets = shard_offsets([r for r, _ in shapes])
        super().__init__(int(self.offsets[-1]), name=name)
        self.dim = dims.pop()
        self.devices = devices
        self.feature_map = features_lib.get(
            feature_map if feature_map is not None else features_lib.PositiveRandom(128))
        self.has_bias = biases is not None
        self.shards = []
        for s, table in enumerate(tables):
            with tf.device(devices[s]):
                # The trees' proposal alone: a log-uniform share would be over
                # a shard's ids, not over the whole table's.
                self.shards.append(kernel_lib.KernelSampler(
                    table, self.feature_map, leaf_size=leaf_size,
                    biases=None if biases is None else list(biases)[s], prior_weight=0.0,
                    name=f"shard_{s}"))

    @property
    def num_shards(self):
        return len(self.shards)

    @property
    def refreshes_ids(self):
        return True

    def shard_of(self, classes):
        """Shard index (int32, the shape of classes) of int64 class ids."""
        flat = tf.searchsorted(tf.constant(self.offsets[1:-1]), tf.reshape(classes, [-1]),
                               side="right", out_type=tf.int32)
        return tf.reshape(flat, tf.shape(classes))

    def shard_log_prob(self, inputs):
        """log P(shard | h): float64 [batch, K] (rows sum to 1 in probability).

        Args:
          inputs: [batch, dim] float queries h.
        """
        inputs = base.as_query_matrix(inputs, self.num_classes, self.dim)
        x = tf.cast(inputs, tf.float64)
        if self.has_bias:
            x = tf.concat([x, tf.ones_like(x[:, :1])], 1)
        masses = []
        for s, shard in enumerate(self.shards):
            with tf.device(self.devices[s]):
                root = tf.gather(shard.nodes, [1])  # [1, F]: one row, read on its device
                omega = shard.omega
            masses.append(self.feature_map.reference_node_log_mass(
                x, root, omega, has_bias=self.has_bias)[:, 0])
        log_mass = tf.stack(masses, 1)  # [batch, K], -inf where not positive
        finite = tf.math.is_finite(log_mass)
        any_finite = tf.reduce_any(finite, 1, keepdims=True)
        # No positive mass in any shard: uniform over the shards.
        log_mass = tf.where(any_finite, tf.where(finite, log_mass, -np.inf),
                            tf.zeros_like(log_mass))
        probs = tf.nn.softmax(log_mass, axis=1)
        floor = MIN_SHARD_PROB
        probs = (1.0 - floor * self.num_shards) * probs + floor
        return tf.math.log(probs)

    def _local(self, classes, s):
        """Class ids as shard s's local ids, clipped into its range."""
        return tf.clip_by_value(classes - int(self.offsets[s]), 0,
                                int(self.offsets[s + 1] - self.offsets[s]) - 1)

    @staticmethod
    def _pick(per_shard, shard):
        """per_shard [K, batch, n] values, shard [batch, n] -> [batch, n] of the chosen shard."""
        stacked = tf.transpose(per_shard, [1, 2, 0])  # [batch, n, K]
        return tf.gather(stacked, shard[:, :, None], batch_dims=2)[:, :, 0]

    def sample(self, inputs, num_sampled, true_classes=None, seed=None):
        seed1, seed2, position = self.stream.next(seed)
        return self.sample_at(inputs, num_sampled, true_classes, seed1, seed2, position)

    def sample_at(self, inputs, num_sampled, true_classes, seed1, seed2, position):
        """`sample` at a given stream position, without touching the stream's counter.

        A function of (seed1, seed2, position) and the state: the
        parameter-server trainer draws a step's negatives at the step's own
        position, so a step the coordinator retries draws the same ones.

        Args:
          inputs: [batch, dim] float queries.
          num_sampled: S, draws per query.
          true_classes: None or int [batch, num_true] (or [batch]) ids.
          seed1: int, the ops' seed attribute (`SampleStream.next`'s first seed).
          seed2: int, the second seed.
          position: int64 scalar tensor >= 0.

        Returns:
          `SampledCandidates`: ids [batch, S] int64 global ids, log_q
          [batch, S], true_log_q [batch, num_true] float32, exact over the
          whole table.
        """
        base.check_count("num_sampled", num_sampled)
        inputs = base.as_query_matrix(inputs, self.num_classes, self.dim)
        batch = inputs.shape[0]
        if true_classes is None:
            true_classes = tf.zeros([tf.shape(inputs)[0], 0], tf.int64)
        true_classes = base.as_class_matrix(true_classes, "true_classes", batch)
        log_shard = self.shard_log_prob(inputs)  # [batch, K] float64
        key = stream_lib.stateless_key(seed1, seed2, position)
        chosen = tf.random.stateless_categorical(
            log_shard, num_sampled, seed=key, dtype=tf.int32)  # [batch, S]
        one_hot = tf.one_hot(chosen, self.num_shards, dtype=tf.int32)  # [batch, S, K]
        # Draw j of query b is the rank[b, j]-th of the draws its shard makes
        # for b (the draws of one query are an iid sequence).
        rank = tf.reduce_sum((tf.cumsum(one_hot, axis=1) - 1) * one_hot, 2)  # [batch, S]
        needed = tf.reduce_max(tf.reduce_sum(one_hot, 1), 0)  # [K] most draws of a query
        true_shard = self.shard_of(true_classes)
        ids = tf.zeros_like(chosen, tf.int64)
        log_q = tf.zeros_like(chosen, tf.float32)
        true_log_q = tf.zeros_like(true_classes, tf.float32)
        for s, shard in enumerate(self.shards):
            with tf.device(self.devices[s]):
                shard_ids, shard_log_q, shard_true_log_q = self._shard_draws(
                    shard, s, inputs, true_classes, needed[s], num_sampled, seed1, seed2,
                    position)
            at = tf.minimum(rank, tf.shape(shard_ids)[1] - 1)
            mine = tf.equal(chosen, s)
            ids = tf.where(mine, tf.gather(shard_ids, at, batch_dims=1) + int(self.offsets[s]),
                           ids)
            log_q = tf.where(mine, tf.gather(shard_log_q, at, batch_dims=1), log_q)
            true_log_q = tf.where(tf.equal(true_shard, s), shard_true_log_q, true_log_q)
        log_q += tf.cast(tf.gather(log_shard, chosen, batch_dims=1), tf.float32)
        true_log_q += tf.cast(tf.gather(log_shard, true_shard, batch_dims=1), tf.float32)
        return base.SampledCandidates(ids, log_q, true_log_q)

    def _shard_draws(self, shard, s, inputs, true_classes, needed, num_sampled, seed1, seed2,
                     position):
        """Shard s's draws for every query: ids [batch, m] local, log q [batch, m] within the
        shard, true log q [batch, num_true]; m the smallest of S, S/2, S/4, ... (>= 1) that
        covers `needed` (the ops' draw count is static: one branch per size)."""
        sizes = sorted({max(num_sampled >> i, 1) for i in range(num_sampled.bit_length())})
        args = dict(shard._table_args(inputs),  # pylint: disable=protected-access
                    true_classes=self._local(true_classes, s), counter=position,
                    seed=(seed1 * _SHARD_SEED_STRIDE + s + 1) % 2**63, seed2=seed2,
                    **shard._attrs)  # pylint: disable=protected-access
        library = shard._library  # pylint: disable=protected-access
        branches = [lambda m=m: library.tf_sampled_kernel_tree_sample(num_sampled=m, **args)
                    for m in sizes]
        index = tf.searchsorted(tf.constant(sizes, tf.int32), needed[None], side="left",
                                out_type=tf.int32)[0]
        return tf.switch_case(index, branches)

    def log_prob(self, inputs, classes):
        """Exact log q(classes[b, k] | inputs[b]) over the whole table: float32 [batch, n]."""
        inputs = base.as_query_matrix(inputs, self.num_classes, self.dim)
        classes = base.as_class_matrix(classes, "classes", inputs.shape[0])
        with tf.control_dependencies([
                tf.debugging.assert_non_negative(classes, message="classes must be >= 0"),
                tf.debugging.assert_less(classes, tf.constant(self.num_classes, tf.int64),
                                         message="classes must be < num_classes")]):
            classes = tf.identity(classes)
        log_shard = self.shard_log_prob(inputs)
        per_shard = []
        for s, shard in enumerate(self.shards):
            with tf.device(self.devices[s]):
                per_shard.append(shard.log_prob(inputs, self._local(classes, s)))
        shard = self.shard_of(classes)
        return (self._pick(tf.stack(per_shard), shard)
                + tf.cast(tf.gather(log_shard, shard, batch_dims=1), tf.float32))

    def candidate_sampler(self, true_classes, num_true, num_sampled, unique, range_max,
                          seed=None, name=None, inputs=None):
        raise ValueError("ShardedKernelSampler draws per-example negatives (sample); "
                         "batch-shared candidates over shards are not provided")

    def split_ids(self, ids, s):
        """The local ids [n_s] of shard s among global int64 ids [n] (order kept)."""
        ids = tf.reshape(tf.cast(ids, tf.int64), [-1])
        inside = (ids >= int(self.offsets[s])) & (ids < int(self.offsets[s + 1]))
        return tf.boolean_mask(ids, inside) - int(self.offsets[s])

    def refresh(self, ids=None):
        """Refreshes every shard's tree (ids None) or the shards holding `ids` (global ids).

        Each shard's refresh runs on its device (`KernelSampler.refresh`).
        """
        for s, shard in enumerate(self.shards):
            with tf.device(self.devices[s]):
                shard.refresh(None if ids is None else self.split_ids(ids, s))
