"""The kernel-tree sampler (Blanc & Rendle 2018) as a TensorFlow module."""
import math
import numbers

import tensorflow as tf

from tf_sampled import _ops
from tf_sampled import _variables
from tf_sampled import features as features_lib
from tf_sampled.samplers import base
from tf_sampled.samplers import builtin
from tf_sampled.samplers import stream as stream_lib

DEFAULT_LEAF_SIZE = 128
# The log-uniform share of the proposal, per example (sample, log_prob) and
# batch-shared (candidate_sampler): measured best or level on WordNet, GCIDE
# and a 1M-class task (benchmarks/RESULTS.md).
DEFAULT_PRIOR_WEIGHT = 0.5


def _check_prior_weight(prior_weight):
    """prior_weight as a float in [0, 1], or ValueError naming it."""
    if (isinstance(prior_weight, bool) or not isinstance(prior_weight, numbers.Real)
            or not 0.0 <= float(prior_weight) <= 1.0):  # NaN fails the comparison
        raise ValueError(f"prior_weight must be a number in [0, 1], got {prior_weight!r}")
    return float(prior_weight)


class KernelSampler(base.Sampler):
    """Samples classes from q(i | h) proportional to a kernel K([h, 1], [w_i, b_i]).

    The classes are split into leaves of `leaf_size` consecutive ids (order
    your ids so that this grouping is sensible, e.g. by frequency). A balanced
    tree over the leaves stores, per node, the sum of the feature map over its
    classes; a query walks down the tree (the S draws of one query are split
    between children by binomial draws, so upper levels are scored once) and
    draws a class inside the reached leaf from the map's exact kernel, read
    from the current embeddings. The returned log q is exact for the process
    that drew the sample, also when the tree is stale.

    State (non-trainable variables, checkpointed with the sampler):
      nodes: [2 N, F] float64 node sums, N = ceil(num_classes / leaf_size).
      rows: [num_classes, dim (+1)] float32 snapshot of the rows the tree
        holds, so `refresh(ids)` can subtract their old features (None with
        incremental=False).
      omega: the feature map's projections.

    Args:
      embeddings: [num_classes, dim] class embeddings: a float32 `tf.Variable`,
        read in place at every call (never copied), or a tensor (copied into
        a non-trainable variable once).
      feature_map: a `tf_sampled.features.FeatureMap` or its name; defaults to
        `PositiveRandom(128)`, which targets the model's softmax exp(h.w + b).
      leaf_size: classes per leaf (evaluated exactly). Larger leaves give a
        proposal closer to the kernel at a cost of leaf_size * dim per
        distinct leaf drawn.
      biases: optional [num_classes] class biases (variable or tensor, as
        embeddings); the proposal then targets exp(h . w + b).
      incremental: keep the row snapshot that `refresh(ids)` needs (memory of
        one more table). False keeps only the node sums (about 4 F / (leaf_size
        dim) of the table) and allows full `refresh()` only.
      prior_weight: a in [0, 1], the log-uniform share of the per-example
        proposal of `sample` and `log_prob`: q(i | h) = a p_lu(i) + (1 - a)
        q_tree(i | h), p_lu TensorFlow's log-uniform (class ids sorted by
        decreasing frequency). A defensive mixture: every class keeps at
        least a p_lu(i), also while the model's softmax, which the tree
        follows, is still near uniform. Binomial(S, a) of each row's draws
        come from p_lu; every log q is the mixture's. The default 0.5 was
        level with the tree alone on WordNet and 0.18-0.26 nats better per
        step on GCIDE and at 1M classes; 0 is the tree alone. The CPU ops
        mix the prior in; around the GPU kernels (the tree alone) this
        module does: each slot from p_lu with probability a, else the
        tree's draw, the same proposal. `candidate_sampler` uses it too unless
        given its own `prior_weight`.
      name: module name.
    """

    def __init__(self, embeddings, feature_map=None, leaf_size=DEFAULT_LEAF_SIZE,
                 biases=None, incremental=True, prior_weight=DEFAULT_PRIOR_WEIGHT, name=None):
        shape = embeddings.shape
        base.check_table_shape(shape)
        if biases is not None and tf.TensorShape(biases.shape) != [shape[0]]:
            raise ValueError(
                f"biases must have shape [{shape[0]}] like embeddings' rows, got {biases.shape}")
        super().__init__(int(shape[0]), name=name)
        self.leaf_size = base.check_count("leaf_size", leaf_size)
        self.prior_weight = _check_prior_weight(prior_weight)
        # None: the ops mix the prior in on the CPU, this module on a GPU
        # (`_composes_prior`); True / False force one way (tests).
        self._compose_prior = None
        self.feature_map = features_lib.get(
            feature_map if feature_map is not None else features_lib.PositiveRandom(128))
        self.embeddings = embeddings
        self.biases = biases
        self.dim = int(shape[1])
        self.row_dim = self.dim + (biases is not None)
        self.feature_dim = self.feature_map.feature_dim(self.row_dim, biases is not None)
        self._attrs = dict(self.feature_map.op_attrs(), leaf_size=self.leaf_size)
        self._library = _ops.load_ops()
        with self.name_scope:
            # The ops read the table in place through variable handles (a
            # dense read of a variable that saw a sparse update copies it).
            self._table = base.as_float32_variable(embeddings, "embeddings")
            self._bias_table = (tf.Variable(tf.zeros([0]), trainable=False, name="no_biases")
                                if biases is None else base.as_float32_variable(biases, "biases"))
            self.omega = tf.Variable(self.feature_map.projections(self.feature_dim),
                                     trainable=False, name="omega")
            rows = self._current_rows()
            self.rows = (tf.Variable(rows, trainable=False, name="rows") if incremental
                         else None)
            self.nodes = tf.Variable(self._build(rows), trainable=False, name="nodes")

    @property
    def num_leaves(self):
        return -(-self.num_classes // self.leaf_size)

    @property
    def num_features(self):
        return self.feature_map.num_features(self.feature_dim)

    def memory_bytes(self):
        """Bytes of state: {"nodes": tree node sums, "rows": refresh snapshot}."""
        return {"nodes": 2 * self.num_leaves * self.num_features * 8,
                "rows": self.num_classes * self.row_dim * 4 if self.rows is not None else 0}

    def _current_rows(self):
        rows = tf.convert_to_tensor(self._table)
        if self.biases is None:
            return rows
        return tf.concat([rows, tf.convert_to_tensor(self._bias_table)[:, None]], 1)

    def _gather_current_rows(self, ids):
        rows = tf.gather(self._table, ids)
        if self.biases is None:
            return rows
        return tf.concat([rows, tf.gather(self._bias_table, ids)[:, None]], 1)

    def _build(self, rows):
        return self._library.tf_sampled_kernel_tree_build(
            rows=rows, omega=self.omega, has_bias=self.biases is not None, **self._attrs)

    def _table_args(self, inputs):
        inputs = base.as_query_matrix(inputs, self.num_classes, self.dim)
        return dict(nodes=self.nodes.handle, embeddings=self._table.handle,
                    biases=self._bias_table.handle, omega=self.omega,
                    inputs=inputs)

    def _composes_prior(self):
        """Whether the prior is mixed in here rather than by the ops: their GPU
        kernels draw from the tree alone."""
        if self._compose_prior is not None:
            return self._compose_prior
        return self.prior_weight > 0 and "GPU" in (self._table.device or "").upper()

    def _mix(self, classes, log_q_tree):
        """log(a p_lu + (1 - a) q_tree) of classes, from log q_tree (same shape)."""
        a = self.prior_weight
        log_prior = builtin.log_uniform_log_q(self.num_classes, classes)
        return tf.reduce_logsumexp(
            tf.stack([log_prior + math.log(a), log_q_tree + math.log1p(-a)]), 0) \
            if a < 1 else log_prior

    def sample(self, inputs, num_sampled, true_classes=None, seed=None):
        base.check_count("num_sampled", num_sampled)
        args = self._table_args(inputs)
        batch = args["inputs"].shape[0]
        if true_classes is None:
            true_classes = tf.zeros([tf.shape(args["inputs"])[0], 0], tf.int64)
        true_classes = base.as_class_matrix(true_classes, "true_classes", batch)
        seed1, seed2, counter = self.stream.next(seed)
        compose = self._composes_prior()
        ids, log_q, true_log_q = self._library.tf_sampled_kernel_tree_sample(
            true_classes=true_classes, counter=counter, num_sampled=num_sampled, seed=seed1,
            seed2=seed2, prior_weight=0.0 if compose else self.prior_weight, **args,
            **self._attrs)
        if compose:
            # Each slot from the prior with probability a, else the tree's draw
            # (an iid sequence): iid draws from the mixture, keyed by the call.
            key = stream_lib.stateless_key(seed1, seed2, counter)
            shape = tf.shape(ids)
            from_prior = tf.random.stateless_uniform(
                shape, tf.random.experimental.stateless_fold_in(key, 1), dtype=tf.float64) \
                < self.prior_weight
            prior_ids = builtin.log_uniform_draw(
                self.num_classes, shape, tf.random.experimental.stateless_fold_in(key, 2))
            ids = tf.where(from_prior, prior_ids, ids)
            log_q = self._mix(ids, self._library.tf_sampled_kernel_tree_log_prob(
                classes=ids, prior_weight=0.0, **args, **self._attrs))
            true_log_q = self._mix(true_classes, true_log_q)
        return base.SampledCandidates(ids, log_q, true_log_q)

    def log_prob(self, inputs, classes):
        args = self._table_args(inputs)
        classes = base.as_class_matrix(classes, "classes", args["inputs"].shape[0])
        if self._composes_prior():
            return self._mix(classes, self._library.tf_sampled_kernel_tree_log_prob(
                classes=classes, prior_weight=0.0, **args, **self._attrs))
        return self._library.tf_sampled_kernel_tree_log_prob(
            classes=classes, prior_weight=self.prior_weight, **args, **self._attrs)

    def candidate_sampler(self, true_classes, num_true, num_sampled, unique, range_max,
                          seed=None, name=None, inputs=None, prior_weight=None):
        """Batch-shared candidates with TensorFlow's candidate-sampler contract.

        The proposal is q(i) = a p_lu(i) + (1 - a) q_tree(i), a = prior_weight:
        p_lu(i) = log((i + 2) / (i + 1)) / log(num_classes + 1) is TensorFlow's
        log-uniform (class ids sorted by decreasing frequency), q_tree the
        tree's mixture over the batch (leaves from the exact mixture of the
        inputs' leaf distributions, classes inside a leaf from the kernel of
        the mean input). Each call draws Binomial(S, a) of its draws from p_lu
        and the rest from q_tree, in random order (an iid sequence), and the
        expected counts are exact for q.

        Args:
          true_classes: [batch, num_true] int64 target classes.
          num_true: int, columns of `true_classes`.
          num_sampled: int, S.
          unique: bool; draw until S distinct classes (expected counts then
            use num_tries, as TensorFlow's samplers do).
          range_max: int, must equal num_classes.
          seed: optional int seed (with the stream counter; None: the
            sampler's own stream).
          name: optional name scope.
          inputs: [batch, dim] float32 queries (the layer input h).
          prior_weight: a, a number in [0, 1]: the log-uniform share of the
            proposal (0: the tree alone; 1: exactly TensorFlow's log-uniform
            sampler); None: the sampler's `prior_weight` (default 0.5, which
            measured best of 0, 0.25 and 0.5 at equal training time here:
            WordNet, S = 16 and 1024, 3 seeds).

        Returns:
          (sampled_candidates [S] int64, true_expected_count [batch, num_true]
          float32, sampled_expected_count [S] float32).

        Raises:
          ValueError: `inputs` is missing, prior_weight is not a number in
            [0, 1], or an argument breaks the candidate-sampler contract.
        """
        if inputs is None:
            raise ValueError("KernelSampler.candidate_sampler needs `inputs` [batch, dim]")
        prior_weight = (self.prior_weight if prior_weight is None
                        else _check_prior_weight(prior_weight))
        self._check_shared_args(num_true, num_sampled, unique, range_max)
        args = self._table_args(inputs)
        true_classes = self._shared_true_classes(true_classes, num_true, args["inputs"].shape[0])
        with tf.name_scope(name or "kernel_candidate_sampler"):
            seed1, seed2, counter = self.stream.next(seed)
            return self._library.tf_sampled_kernel_tree_candidate_sampler(
                true_classes=true_classes, counter=counter, num_true=num_true,
                num_sampled=num_sampled, unique=bool(unique), range_max=range_max, seed=seed1,
                seed2=seed2, prior_weight=prior_weight, **args, **self._attrs)

    @property
    def refreshes_ids(self):
        return self.rows is not None

    def refresh(self, ids=None, in_place=True):
        """Updates the tree to the current embeddings (and biases).

        Args:
          ids: None for a full rebuild (O(num_classes * F * dim)), or the class
            ids whose rows changed (any shape, duplicates allowed): their old
            features are replaced on every node of their paths,
            O(len(ids) * F * (dim + log num_leaves)). Plain CPU variables are
            updated in place by one op; mirrored or GPU ones through node
            deltas and a scatter-add.
          in_place: False updates plain CPU variables through node deltas too
            (the path of mirrored and GPU variables, e.g. to compare the two).
        """
        if ids is None:
            # Build first: a failed build (a NaN row) leaves the state as it was.
            rows = self._current_rows()
            nodes = self._build(rows)
            if self.rows is not None:
                with tf.control_dependencies([nodes]):
                    self.rows.assign(rows)
            self.nodes.assign(nodes)
            return
        if self.rows is None:
            raise ValueError("refresh(ids) needs the row snapshot: construct the sampler "
                             "with incremental=True, or call refresh() for a full rebuild")
        ids = tf.convert_to_tensor(ids)
        if not ids.dtype.is_integer:
            raise ValueError(f"ids must be integer class ids, got dtype {ids.dtype.name}")
        ids = tf.cast(ids, tf.int64)
        variables = _variables.in_place_variables(
            [self.nodes, self.rows, self._table, self._bias_table]) if in_place else None
        if variables is not None:
            # One op reads the rows in place and updates nodes and snapshot.
            nodes, rows, table, bias_table = variables
            self._library.tf_sampled_kernel_tree_refresh_rows(
                nodes=nodes.handle, rows=rows.handle, embeddings=table.handle,
                biases=bias_table.handle, omega=self.omega, ids=ids, **self._attrs)
            return
        ids, _ = tf.unique(tf.reshape(ids, [-1]))
        # The op validates the ids; clipping only keeps the gathers from
        # failing first with a less precise message.
        safe_ids = tf.clip_by_value(ids, 0, self.num_classes - 1)
        new_rows = self._gather_current_rows(safe_ids)
        old_rows = tf.gather(self.rows, safe_ids)
        node_ids, deltas = self._library.tf_sampled_kernel_tree_update(
            ids=ids, old_rows=old_rows, new_rows=new_rows, omega=self.omega,
            num_classes=tf.constant(self.num_classes, tf.int64),
            has_bias=self.biases is not None, **self._attrs)
        self.nodes.scatter_add(tf.IndexedSlices(deltas, node_ids))
        self.rows.scatter_update(tf.IndexedSlices(new_rows, ids))
