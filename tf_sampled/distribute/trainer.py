"""A training driver for SampledSoftmax models on tf.distribute's synchronous strategies.

Keras 3's `fit` fails under `tf.distribute.MultiWorkerMirroredStrategy`, so
`Trainer` runs its own `strategy.run` loop. Each step, on every replica:

1. the trunk computes h for the replica's slice of the global batch and the
   `SampledSoftmax` head draws its negatives from the sampler's stream at
   position counter x replicas + replica id (`SampleStream`): replicas draw
   different negatives, and a run repeats exactly on as many replicas;
2. the loss is the replica's sum of sampled losses over the global batch
   size, so the all-reduced gradient is the global batch's mean;
3. the class table's and biases' `tf.IndexedSlices` gradients are summed
   per distinct id (`sum_duplicate_rows`), then the optimizer all-reduces
   the gradients: dense ones with an all-reduce, IndexedSlices with an
   all-gather of their rows and ids (TensorFlow's `CollectiveAllReduce`:
   never a dense [num_classes, dim] tensor), and every replica applies the
   same update;
4. every replica refreshes its copy of the sampler with the ids all replicas
   touched (an all-gather), so the copies stay identical.

Evaluation is the head's chunked full softmax (`full_softmax_stats`), summed
over replicas. Checkpoints (`tf.train.CheckpointManager`) hold the model, the
sampler (its stream counter included) and the optimizer; a restarted run
resumes at the saved step with the samples the uninterrupted run would have
drawn.
"""
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.distribute import distribute_lib  # the default strategy

from tf_sampled import optimizers as optimizers_lib
from tf_sampled.distribute import cluster as cluster_lib
from tf_sampled.layers.model import head_and_input
from tf_sampled.layers.sampled_softmax import check_label_shape
from tf_sampled.optimizers import lazy_adam

SUPPORTED_STRATEGIES = ("MultiWorkerMirroredStrategy", "MirroredStrategy", "OneDeviceStrategy",
                        "the default strategy")
_HINTS = {
    "ParameterServerStrategy": "parameter-server training (a class table sharded over 'ps' "
                               "tasks, steps scheduled by a ClusterCoordinator) has its own "
                               "driver: tf_sampled.distribute.ParameterServerTrainer",
    "TPUStrategy": "the sampling ops have no TPU (XLA) kernels",
    "CentralStorageStrategy": "it keeps the variables on one device apart from the replicas; "
                              "use MirroredStrategy on one machine",
}
# What a failed collective raises: a peer that died (Unavailable, Aborted,
# Cancelled, FailedPrecondition after a restart) or stalled past the timeout.
_CLUSTER_ERRORS = (tf.errors.DeadlineExceededError, tf.errors.UnavailableError,
                   tf.errors.AbortedError, tf.errors.CancelledError,
                   tf.errors.FailedPreconditionError)


def check_strategy(strategy):
    """`strategy` if `Trainer` supports it, else ValueError naming it.

    Supported: `tf.distribute.MultiWorkerMirroredStrategy`,
    `tf.distribute.MirroredStrategy`, `tf.distribute.OneDeviceStrategy` and
    the default (no) strategy: synchronous data parallelism with the
    variables mirrored on every replica.

    Raises:
      ValueError: naming the strategy and what is supported instead.
    """
    if isinstance(strategy, (tf.distribute.MultiWorkerMirroredStrategy,
                             tf.distribute.MirroredStrategy, tf.distribute.OneDeviceStrategy)):
        return strategy
    if strategy is distribute_lib._get_default_strategy():
        return strategy
    name = type(strategy).__name__
    hint = next((h for key, h in _HINTS.items() if key in name), None)
    raise ValueError(
        f"tf_sampled.distribute.Trainer does not support {name}"
        f"{f' ({hint})' if hint else ''}; it supports {', '.join(SUPPORTED_STRATEGIES)}. "
        f"For a cluster, create the strategy with tf_sampled.distribute.make_strategy().")


def _cluster_of(strategy):
    """The `ClusterConfig` a MultiWorkerMirroredStrategy was created with, or None."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return None
    spec = resolver.cluster_spec().as_dict()
    if not spec or not resolver.task_type:
        return None
    cluster = {job: (list(tasks) if isinstance(tasks, (list, tuple))
                     else [tasks[i] for i in sorted(tasks)])
               for job, tasks in spec.items()}
    return cluster_lib.parse_tf_config({"cluster": cluster, "task": {
        "type": resolver.task_type, "index": int(resolver.task_id or 0)}})


def _check_model(model, strategy):
    """(head, head input tensor) of a built model whose variables the strategy made."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model ending in a "
                         f"tf_sampled.layers.SampledSoftmax layer, got {type(model).__name__}")
    try:
        head, head_input = head_and_input(model)
    except (AttributeError, ValueError, IndexError) as error:
        raise ValueError(
            f"Trainer trains a functional keras.Model whose output is one "
            f"tf_sampled.layers.SampledSoftmax layer (e.g. "
            f"tf_sampled.layers.SampledSoftmaxModel(inputs, outputs)); model "
            f"{model.name!r} does not qualify: {error}") from None
    if not head.built:
        raise ValueError(f"model {model.name!r}: its SampledSoftmax layer is not built; build "
                         f"the model (call it on Input tensors) inside strategy.scope()")
    outside = [v.path for v in model.variables
               if not strategy.extended.variable_created_in_scope(_tf_variable(v))]
    if outside:
        raise ValueError(
            f"model {model.name!r} has variables created outside this strategy's scope "
            f"({outside[:3]}{' ...' if len(outside) > 3 else ''}): build the model and "
            f"its optimizer inside `with strategy.scope():`")
    return head, head_input


def _tf_variable(variable):
    """The tf.Variable behind a Keras variable (or the variable itself)."""
    inner = getattr(variable, "value", None)
    return inner if isinstance(inner, tf.Variable) else variable


def _check_optimizer(optimizer, strategy, num_replicas):
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise ValueError(f"optimizer must be a keras.optimizers.Optimizer (e.g. "
                         f"tf_sampled.optimizers.LazyAdam()), got {optimizer!r}")
    if getattr(optimizer, "_distribution_strategy", strategy) is not strategy:
        raise ValueError(f"optimizer {optimizer.name!r} was created outside this strategy's "
                         f"scope: create it inside `with strategy.scope():`")
    if optimizer.gradient_accumulation_steps:
        raise ValueError(
            f"optimizer {optimizer.name!r} has gradient_accumulation_steps="
            f"{optimizer.gradient_accumulation_steps}: Keras accumulates gradients in dense "
            f"slots, a [num_classes, dim] update of the class table every step; use a larger "
            f"global batch instead")
    reason = optimizers_lib.densifying_reason(optimizer)
    if reason:
        warnings.warn(f"{reason}: every step updates every row of the class table on every "
                      f"replica. Use tf_sampled.optimizers.LazyAdam, SparseAdagrad or "
                      f"SparseSGD to keep a step O(rows touched).", stacklevel=3)
    if num_replicas > 1 and (optimizer.clipnorm or optimizer.clipvalue
                             or optimizer.global_clipnorm):
        warnings.warn(f"optimizer {optimizer.name!r} clips gradients: Keras clips each "
                      f"replica's gradient before the all-reduce, so the clipped update "
                      f"depends on the number of replicas", stacklevel=3)


def sum_duplicate_rows(gradient):
    """An IndexedSlices gradient with one row per distinct id; others unchanged.

    A sampled step's table gradient holds a row per label and negative
    ([batch * (S + 1), dim]), many of them repeated ids; summing them first
    shrinks what the all-gather sends to the rows actually touched.

    Args:
      gradient: a `tf.IndexedSlices` (values [n, ...], indices [n]), a
        tensor, or None.

    Returns:
      `tf.IndexedSlices` (values [u, ...], indices [u] distinct, in order of
      first appearance) for IndexedSlices, else `gradient` itself.
    """
    if not isinstance(gradient, tf.IndexedSlices):
        return gradient
    ids, values = lazy_adam.sum_duplicates(gradient)
    return tf.IndexedSlices(values, ids, gradient.dense_shape)


def restore_matching(checkpoint, path, what):
    """Restores checkpoint `path` into every object `checkpoint` tracks.

    Every object must be in the checkpoint with its shape (the checkpoint's
    own save counter may stay unrestored).

    Args:
      checkpoint: a `tf.train.Checkpoint`.
      path: the checkpoint's path prefix.
      what: what `checkpoint` holds, for the error message.

    Raises:
      ValueError: "the checkpoint {path} does not match {what}: ...".
    """
    status = None
    try:
        status = checkpoint.restore(path)
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        raise ValueError(f"the checkpoint {path} does not match {what}: "
                         f"{str(error)[:500]}") from None
    finally:
        if status is not None:
            status.expect_partial()


def _checksum(value):
    """[2] float64 checksums of a variable's value, without a copy of its size.

    Equal values give equal checksums; a changed element changes them (a
    float32 weighted sum over rows and columns, and the float64 plain sum).
    """
    value = tf.convert_to_tensor(value)
    if not value.dtype.is_floating or value.shape.rank < 2:
        flat = tf.cast(tf.reshape(value, [-1]), tf.float64)
        weights = tf.cast(tf.range(tf.size(flat)) % 997 + 1, tf.float64)
        return tf.stack([tf.reduce_sum(flat), tf.reduce_sum(flat * weights)])
    matrix = tf.cast(tf.reshape(value, [-1, value.shape[-1]]), tf.float32)
    columns = tf.cast(tf.range(value.shape[-1]) % 89 + 1, tf.float32)[:, None]
    per_row = tf.matmul(matrix, columns)[:, 0]  # [rows]
    rows = tf.cast(tf.range(tf.shape(per_row)[0]) % 997 + 1, tf.float64)
    per_row = tf.cast(per_row, tf.float64)
    return tf.stack([tf.reduce_sum(per_row), tf.reduce_sum(per_row * rows)])


def _fingerprint(obj):
    """int64 hash of an object's Keras config (its seeds included), or 0."""
    try:
        text = json.dumps(obj.get_config(), sort_keys=True, default=str)
    except Exception:  # pylint: disable=broad-except
        return 0
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


class Trainer:
    """Trains a model ending in `SampledSoftmax` with a custom `strategy.run` loop.

    Build the model and its optimizer inside `strategy.scope()`; every worker
    of a cluster runs the same program, and calls `fit`, `evaluate`, `save`
    and `check_replicas` together (they run collective operations). Per step each replica trains on its
    slice of the global batch with its own negatives; the class table's
    gradient travels as `tf.IndexedSlices` (rows touched x dim floats + ids
    per replica, all-gathered), every replica applies the same sparse
    optimizer step and refreshes its sampler with every replica's touched
    ids. See the module docstring.

    ```python
    strategy = tfs.distribute.make_strategy()       # reads TF_CONFIG
    with strategy.scope():
        model = build_model()                       # ends in SampledSoftmax
        optimizer = tfs.optimizers.LazyAdam(2e-3)
    trainer = tfs.distribute.Trainer(model, optimizer, strategy=strategy,
                                     checkpoint_dir="gs://bucket/run1")
    trainer.fit(train_batches, total_steps=10_000, validation_data=val_batches)
    ```

    Args:
      model: a built `keras.Model` whose output is one
        `tf_sampled.layers.SampledSoftmax` layer (a `SampledSoftmaxModel`,
        or a bare class table: Input(dim) -> SampledSoftmax), built in
        `strategy.scope()`.
      optimizer: a Keras optimizer created in `strategy.scope()`; None: the
        model's compiled optimizer, else a new `tf_sampled.optimizers.LazyAdam()`.
        A densifying optimizer (Keras' Adam, momentum SGD, weight decay) warns;
        gradient accumulation is a ValueError (its slots are dense).
      strategy: `tf.distribute.MultiWorkerMirroredStrategy` (use
        `make_strategy`), `MirroredStrategy`, `OneDeviceStrategy`, or None for
        the current one (the default strategy outside any scope).
      checkpoint_dir: None, or a directory every worker can read (a shared
        file system or bucket in a cluster). If it holds a checkpoint, the
        model, sampler and optimizer are restored from it here, before any
        step. The chief writes checkpoints there; the other workers write
        theirs to a local temporary directory and delete it (TensorFlow
        needs every worker in a save).
      checkpoint_every: None, or N: also save every N steps during `fit`
        (`fit` always saves at its end).
      max_to_keep: checkpoints kept in checkpoint_dir.
      check_replicas: compare every worker's model configuration and
        variables before training (`check_replicas`); a difference (an
        unseeded random choice made in each process) is a ValueError.
      verbose: print progress on the chief.

    Raises:
      ValueError: before any step, for an unsupported strategy, a model that
        does not end in SampledSoftmax or was built outside the strategy's
        scope, an optimizer created outside it or with gradient accumulation,
        a checkpoint that does not match the model, or workers whose models
        differ.

    Attributes:
      model: the model.
      optimizer: the optimizer (`optimizer.iterations` is the step count).
      strategy: the strategy.
      cluster: the `ClusterConfig` of a MultiWorkerMirroredStrategy's
        cluster, or None in one process.
      restored_from: the checkpoint restored at construction, or None.
    """

    def __init__(self, model, optimizer=None, *, strategy=None, checkpoint_dir=None,
                 checkpoint_every=None, max_to_keep=3, check_replicas=True, verbose=True):
        strategy = check_strategy(strategy or tf.distribute.get_strategy())
        self.strategy = strategy
        self.model = model
        self._head, head_input = _check_model(model, strategy)
        self.num_replicas = strategy.num_replicas_in_sync
        self.cluster = _cluster_of(strategy)
        self._check_collective_timeout()
        if optimizer is None:
            optimizer = getattr(model, "optimizer", None)
            if optimizer is None:
                with strategy.scope():
                    optimizer = optimizers_lib.LazyAdam()
        _check_optimizer(optimizer, strategy, self.num_replicas)
        self.optimizer = optimizer
        if checkpoint_every is not None and (isinstance(checkpoint_every, bool) or not isinstance(
                checkpoint_every, int) or checkpoint_every < 1):
            raise ValueError(f"checkpoint_every must be a positive integer or None, got "
                             f"{checkpoint_every!r}")
        self.checkpoint_every = checkpoint_every
        self.verbose = bool(verbose)
        with strategy.scope():
            if not optimizer.built:
                optimizer.build(model.trainable_variables)
            # The layers up to the head; Keras' tracking would save them twice.
            self._trunk = keras.Model(model.inputs, head_input)
        self._variables = model.trainable_variables
        self._train_fn = tf.function(self._train_step, reduce_retracing=True)
        self._eval_fn = tf.function(self._eval_step, reduce_retracing=True)
        self._checksum_fn = None
        self._last_iterator = None
        self._checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
        self.checkpoint_dir = checkpoint_dir
        self.restored_from = None
        self._manager = None
        if checkpoint_dir is not None:
            if self.is_chief:
                self._manager = tf.train.CheckpointManager(
                    self._checkpoint, checkpoint_dir, max_to_keep=max_to_keep)
            latest = tf.train.latest_checkpoint(checkpoint_dir)
            if latest:
                restore_matching(self._checkpoint, latest,
                                 f"model {model.name!r} and its optimizer")
                self.restored_from = latest
                self._log(f"restored step {self.step} from {latest}")
        if check_replicas:
            self.check_replicas(config=True)

    # ---- cluster ----

    @property
    def is_chief(self):
        """Whether this process writes checkpoints and prints progress."""
        return self.cluster is None or self.cluster.is_chief

    @property
    def step(self):
        """Optimizer steps taken so far (restored ones included)."""
        return int(self.optimizer.iterations.numpy())

    def _check_collective_timeout(self):
        extended = self.strategy.extended
        options = getattr(extended, "_communication_options", None)
        if self.cluster is not None and self.cluster.num_workers > 1 and options is not None \
                and not options.timeout_seconds:
            warnings.warn(
                "the strategy's collective operations have no timeout: a worker that stalls "
                "leaves the others waiting forever. Create it with "
                "tf_sampled.distribute.make_strategy(collective_timeout_s=...) or "
                "CommunicationOptions(timeout_seconds=...).", stacklevel=3)

    def _log(self, message):
        if self.verbose and self.is_chief:
            print(f"[tf_sampled.distribute] {message}", flush=True)

    def _cluster_error(self, error, what):
        """A ClusterError for a failed collective (multi-worker), else None."""
        if self.cluster is None or self.cluster.num_workers < 2:
            return None
        timeout = getattr(getattr(self.strategy.extended, "_communication_options", None),
                          "timeout_seconds", None)
        cause = (f"a collective operation waited longer than collective_timeout_s={timeout:g} s"
                 if isinstance(error, tf.errors.DeadlineExceededError) and timeout
                 else f"a collective operation failed ({type(error).__name__})")
        saved = (f"; the last checkpoint in {self.checkpoint_dir} resumes the run"
                 if self.checkpoint_dir else "")
        lines = [ln.strip() for ln in str(error).splitlines() if ln.strip() and not ln.startswith(
            ("Graph execution error", "Detected at node", "  File", "Traceback"))]
        first = lines[0][:300] if lines else type(error).__name__
        return cluster_lib.ClusterError(
            f"{self.cluster.task_name} of a {self.cluster.num_workers}-worker cluster, {what}: "
            f"{cause}: a peer worker crashed, was stopped or stalled. Restart every worker"
            f"{saved}. TensorFlow said: {first}")

    # ---- replica consistency ----

    def _state_variables(self):
        """[(name, tf.Variable)]: model weights, sampler state, optimizer slots."""
        table = {id(_tf_variable(v)) for v in self._head.weights}
        named = [(v.path, _tf_variable(v)) for v in self.model.variables]
        sampler = getattr(self._head, "sampler", None)
        if sampler is not None:
            named += [(f"{self._head.name}/sampler/{v.name}", v) for v in sampler.variables
                      if id(v) not in table]
        named += [(v.path, _tf_variable(v)) for v in self.optimizer.variables]
        seen, unique = set(), []
        for name, variable in named:
            if id(variable) not in seen:
                seen.add(id(variable))
                unique.append((name, variable))
        return unique

    def replica_checksums(self):
        """Checksums of every replica's copy of the model, sampler and optimizer state.

        Returns:
          (names [V] str, checksums [num_replicas, V + 1, 2] float64): per
          replica of every worker, two checksums per variable, and last the
          hash of the model's and optimizer's configuration (their seeds
          included). Replicas in sync have equal rows.
        """
        named = self._state_variables()
        if self._checksum_fn is None:
            config = (_fingerprint(self.model) ^ _fingerprint(self.optimizer)) % 2**52
            config_row = tf.constant([[float(config), 0.0]], tf.float64)

            def replica_fn():
                sums = tf.stack([_checksum(v.read_value()) for _, v in named]
                                + [config_row[0]])
                context = tf.distribute.get_replica_context()
                return context.all_gather(sums[None], axis=0)

            self._checksum_fn = tf.function(lambda: self.strategy.run(replica_fn))
        result = self.strategy.experimental_local_results(self._checksum_fn())[0]
        return [name for name, _ in named], result.numpy()

    def check_replicas(self, config=False):
        """Raises unless every replica of every worker holds the same state.

        Compares checksums of the model's weights, the sampler's state and the
        optimizer's slots (and the configuration hash) across all replicas:
        one all-gather, O(variables) floats per replica.

        Args:
          config: raise ValueError (a setup problem, before training) rather
            than RuntimeError.

        Raises:
          ValueError: (with config=True) naming the first variable that
            differs and the replicas holding the different copies.
          RuntimeError: the same, with config=False.
        """
        names, sums = self.replica_checksums()
        differ = np.any(sums != sums[:1], axis=(0, 2))
        if not differ.any():
            return
        index = int(np.argmax(differ))
        replicas = [r for r in range(len(sums)) if np.any(sums[r, index] != sums[0, index])]
        what = names[index] if index < len(names) else "the model's or optimizer's configuration"
        error = ValueError if config else RuntimeError
        raise error(
            f"replicas {replicas} hold a different {what!r} than replica 0"
            f"{f' ({sum(differ)} of {len(differ)} entries differ)' if sum(differ) > 1 else ''}. "
            f"Every worker must build the same model with the same seeds: call "
            f"keras.utils.set_random_seed(seed) with one seed on every worker before building "
            f"it, and build it inside strategy.scope().")

    # ---- steps ----

    def _replica_train_step(self, batch):
        x, y, weight = keras.utils.unpack_x_y_sample_weight(batch)
        with tf.GradientTape() as tape:
            h = self._trunk(x, training=True)
            losses, touched, ess = self._head.sampled_loss(h, y)
            rows = tf.shape(losses)[0]
            weight = (tf.ones([rows]) if weight is None
                      else tf.cast(tf.reshape(weight, [-1]), tf.float32))
            # The global batch's mean (Keras' sum_over_batch_size): the
            # gradients' all-reduce sums the replicas' shares.
            global_rows = tf.cast(rows * self.num_replicas, tf.float32)
            loss = tf.reduce_sum(losses * weight) / global_rows
            if self.model.losses:
                loss += tf.add_n(self.model.losses) / self.num_replicas
            scaled = self.optimizer.scale_loss(loss)
        gradients = [sum_duplicate_rows(g) for g in tape.gradient(scaled, self._variables)]
        self.optimizer.apply(gradients, self._variables)
        # Each id once: the all-gather of touched ids sends no repeats.
        self._head.update_sampler(tf.unique(touched)[0])
        # One vector, so the cross-replica sum is one collective.
        return tf.stack([tf.reduce_sum(losses * weight), tf.reduce_sum(weight),
                         tf.reduce_sum(ess), tf.cast(tf.size(ess), tf.float32)])

    def _train_step(self, iterator):
        stats = self.strategy.run(self._replica_train_step, args=(next(iterator),))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, stats, axis=None)

    def _replica_eval_step(self, batch):
        x, y, weight = keras.utils.unpack_x_y_sample_weight(batch)
        h = self._trunk(x, training=False)
        cross_entropy, rank = self._head.full_softmax_stats(h, y)
        weight = (tf.ones_like(cross_entropy) if weight is None
                  else tf.cast(tf.reshape(weight, [-1]), tf.float32))
        hits = [tf.reduce_sum(tf.cast(rank < k, tf.float32) * weight)
                for k in self._head.eval_top_k]
        return tf.stack([tf.reduce_sum(cross_entropy * weight), tf.reduce_sum(weight), *hits])

    def _eval_step(self, batch):
        stats = self.strategy.run(self._replica_eval_step, args=(batch,))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, stats, axis=None)

    # ---- data ----

    def _distribute(self, dataset, name, train):
        """The distributed dataset; ValueError for data the loop cannot use."""
        if not isinstance(dataset, tf.data.Dataset):
            raise ValueError(f"{name} must be a tf.data.Dataset of batches (x, y) or (x, y, "
                             f"sample_weight), got {type(dataset).__name__}")
        spec = dataset.element_spec
        if not isinstance(spec, tuple) or len(spec) not in (2, 3):
            raise ValueError(f"{name} must yield (x, y) or (x, y, sample_weight) batches, got "
                             f"elements {spec}")
        try:
            check_label_shape(spec[1].shape)
        except (ValueError, AttributeError) as error:
            raise ValueError(f"{name}: {error}") from None
        batch = spec[1].shape[0]
        if train:
            if batch is None:
                raise ValueError(
                    f"{name} must have a static batch size (batch(global_batch_size, "
                    f"drop_remainder=True)): every step splits one global batch over the "
                    f"{self.num_replicas} replicas")
            if batch % self.num_replicas:
                raise ValueError(f"{name}'s global batch size {batch} does not divide over "
                                 f"{self.num_replicas} replicas")
        options = tf.data.Options()
        if dataset.options().experimental_distribute.auto_shard_policy == \
                tf.data.experimental.AutoShardPolicy.AUTO:
            # Every worker reads the pipeline and keeps its part of each
            # global batch: the same batches as one process, and a resume
            # that skips whole global batches.
            options.experimental_distribute.auto_shard_policy = \
                tf.data.experimental.AutoShardPolicy.DATA
        return self.strategy.experimental_distribute_dataset(dataset.with_options(options))

    # ---- public loop ----

    def fit(self, dataset, total_steps, *, validation_data=None, validation_every=None,
            validation_steps=None, log_every=100):
        """Trains until the optimizer has taken `total_steps` steps.

        A run restored from `checkpoint_dir` continues at its saved step and
        skips that many batches of `dataset`, so with a dataset whose order
        is fixed by its seeds (e.g. `shuffle(n, seed=s).repeat()`) it sees the
        batches, and draws the negatives, of the uninterrupted run.

        Args:
          dataset: `tf.data.Dataset` of global batches (x, y) or (x, y,
            sample_weight): y int [batch] or [batch, 1]; a static batch size
            (`drop_remainder=True`) divisible by the replicas. Each worker
            keeps its part of every batch (`AutoShardPolicy.DATA` unless the
            dataset sets a policy).
          total_steps: the run's total number of optimizer steps, restored
            ones included (calling fit again with a larger total continues).
          validation_data: optional dataset of (x, y[, sample_weight])
            batches (any batch size), evaluated with `evaluate`.
          validation_every: evaluate every N steps (and at the end); None:
            at the end only.
          validation_steps: batches per evaluation (None: the whole dataset).
          log_every: print the running means every N steps on the chief (0:
            never).

        Returns:
          {"train": [{"step", "loss", "sampler_ess", "ms_per_step"}, ...] at
          every log point and the end, "validation": [{"step", "loss",
          "perplexity", "top_k_accuracy"...}, ...]}; "loss" in training is the
          sampled loss (it stays near log(S + 1) with an adaptive sampler).

        Raises:
          ValueError: before any step, for a dataset the loop cannot use
            (not a Dataset, wrong structure, no static or divisible batch
            size, fewer batches than the steps left).
          ClusterError: a collective failed in a multi-worker run (a peer
            died or stalled past the strategy's timeout).
        """
        if isinstance(total_steps, bool) or not isinstance(total_steps, (int, np.integer)) \
                or total_steps < 0:
            raise ValueError(f"total_steps must be a non-negative integer, got {total_steps!r}")
        total_steps = int(total_steps)
        for name, value in (("validation_every", validation_every),
                            ("validation_steps", validation_steps)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        start = self.step
        history = {"train": [], "validation": []}
        if start >= total_steps:
            self._log(f"step {start} >= total_steps {total_steps}: nothing to train")
            return history
        left = total_steps - start
        self._distribute(dataset, "dataset", train=True)  # checks before skipping
        if validation_data is not None:
            self._distribute(validation_data, "validation_data", train=False)
        cardinality = int(dataset.skip(start).cardinality())
        if 0 <= cardinality < left:
            raise ValueError(f"dataset holds {cardinality} batches after the {start} already "
                             f"trained, fewer than the {left} steps left to total_steps="
                             f"{total_steps}: repeat() it")
        iterator = iter(self._distribute(dataset.skip(start), "dataset", train=True))
        self._last_iterator = iterator
        sums = {}
        mark, mark_step = time.perf_counter(), start
        step = start
        while step < total_steps:
            try:
                stats = dict(zip(("loss_sum", "weight_sum", "ess_sum", "ess_count"),
                                 self._train_fn(iterator).numpy().tolist()))
            except _CLUSTER_ERRORS as error:
                cluster_error = self._cluster_error(error, f"training step {step + 1}")
                if cluster_error is None:
                    raise
                raise cluster_error from error
            step += 1
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value
            last = step == total_steps
            if (log_every and step % log_every == 0) or last:
                elapsed = time.perf_counter() - mark
                row = {"step": step, "loss": sums["loss_sum"] / max(sums["weight_sum"], 1e-12),
                       "sampler_ess": sums["ess_sum"] / max(sums["ess_count"], 1.0),
                       "ms_per_step": 1000.0 * elapsed / (step - mark_step)}
                history["train"].append(row)
                self._log(f"step {step}/{total_steps}: loss {row['loss']:.4f}, sampler_ess "
                          f"{row['sampler_ess']:.3f}, {row['ms_per_step']:.1f} ms/step")
                sums, mark, mark_step = {}, time.perf_counter(), step
            if self.checkpoint_every and step % self.checkpoint_every == 0 and not last \
                    and self.checkpoint_dir is not None:
                self.save()
            if validation_data is not None and (
                    last or (validation_every and step % validation_every == 0)):
                row = dict(step=step, **self.evaluate(validation_data, steps=validation_steps))
                history["validation"].append(row)
                self._log(f"step {step}: validation "
                          + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "step"))
        if self.checkpoint_dir is not None:
            self.save()
        return history

    def evaluate(self, dataset, steps=None):
        """Full-softmax metrics over `dataset`, all replicas together.

        The head's chunked evaluation (`SampledSoftmax.full_softmax_stats`:
        O(batch x chunk) memory): cross-entropy over all classes, perplexity
        and the top-k accuracies of the head's eval_top_k.

        Args:
          dataset: `tf.data.Dataset` of (x, y) or (x, y, sample_weight) batches.
          steps: batches to evaluate (None: all).

        Returns:
          {"loss": mean cross-entropy (nats), "perplexity": exp(loss),
          "top_k_accuracy": ... for each k}, weighted by sample_weight.
        """
        if steps is not None:
            dataset = dataset.take(steps)
        totals = np.zeros(2 + len(self._head.eval_top_k))
        try:
            for batch in self._distribute(dataset, "dataset", train=False):
                totals += self._eval_fn(batch).numpy()
        except _CLUSTER_ERRORS as error:
            cluster_error = self._cluster_error(error, "evaluation")
            if cluster_error is None:
                raise
            raise cluster_error from error
        count = max(totals[1], 1e-12)
        loss = float(totals[0] / count)
        result = {"loss": loss, "perplexity": float(np.exp(min(loss, 700.0)))}
        for k, hits in zip(self._head.eval_top_k, totals[2:]):
            result[f"top_{k}_accuracy"] = float(hits / count)
        return result

    # ---- checkpoints ----

    def save(self):
        """Writes a checkpoint of the model, sampler and optimizer; every worker calls it.

        Returns:
          The checkpoint's path on the chief (numbered by the step), None on
          the other workers (they write to a temporary directory and delete
          it: TensorFlow needs every worker in a save).

        Raises:
          ValueError: the trainer has no checkpoint_dir.
        """
        if self.checkpoint_dir is None:
            raise ValueError("Trainer(checkpoint_dir=...) is needed to save checkpoints")
        if self._manager is not None:
            path = self._manager.save(checkpoint_number=self.step)
            self._log(f"saved step {self.step} to {path}")
            return path
        scratch = tempfile.mkdtemp(prefix="tf_sampled_worker_ckpt_")
        try:
            self._checkpoint.write(os.path.join(scratch, "ckpt"))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return None

    # ---- inspection ----

    def collective_ops(self):
        """The collective operations of the traced training step.

        Call after `fit` ran a step (the step is traced then). Lists each
        collective of the step's graph and its nested functions (the
        IndexedSlices all-gather sits in a cond that pads unequal lengths)
        with its input's dtype and static shape: one checks that no
        collective carries a [num_classes, dim] tensor.

        Returns:
          [{"op": op type, "dtype": dtype name, "shape": list (None for an
          unknown dimension)}], in graph order.
        """
        if self._last_iterator is None:
            raise ValueError("collective_ops() needs a traced step: call fit first")
        concrete = self._train_fn.get_concrete_function(self._last_iterator)
        found = []
        seen_functions = set()

        def visit(graph):
            for op in graph.get_operations():
                if op.type.startswith("Collective") and op.inputs:
                    tensor = op.inputs[0]
                    found.append({"op": op.type, "dtype": tensor.dtype.name,
                                  "shape": tensor.shape.as_list()
                                  if tensor.shape.rank is not None else None})
                for attr in ("then_branch", "else_branch", "body", "cond", "f"):
                    try:
                        function = op.get_attr(attr)
                    except (ValueError, TypeError):
                        continue
                    name = getattr(function, "name", None)
                    if name and name not in seen_functions:
                        seen_functions.add(name)
                        inner = graph._get_function(name)
                        if inner is not None:
                            visit(inner.graph)

        visit(concrete.graph)
        return found
