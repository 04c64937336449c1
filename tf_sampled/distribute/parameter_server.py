"""Parameter-server training: a class table sharded over "ps" tasks, steps on workers.

`tf.distribute.ParameterServerStrategy` with a
`tf.distribute.coordinator.ClusterCoordinator`: the chief runs the training
program and schedules steps, the workers run them asynchronously, and the
"ps" tasks hold the variables. Keras 3's `fit` refuses this strategy and
Keras 3 optimizers fail on a `ShardedVariable`, so `ParameterServerTrainer`
places one plain variable per shard on its parameter server (`tf.device`)
and updates it with the package's sparse optimizer ops
(`tf_sampled.optimizers.sparse_apply`), which then run on that server.

A step, on a worker, for its batch (h [B, dim], y [B]):

1. the negatives come from a `ShardedKernelSampler` (one kernel tree per
   shard, on the shard's server; exact log q over the whole table) at the
   stream position of the step's id, so a retried step draws the same ones;
2. the distinct rows of the labels and negatives are read from their shards
   and the sampled softmax loss (`tf_sampled.nn.sampled_softmax_loss`) gives
   their gradients: [rows touched, dim] floats, never [num_classes, dim];
3. each shard's rows go to its server, which applies the optimizer to them
   and refreshes its tree with them, unless that server already applied
   this step: every shard keeps the ids of the steps it applied (a ring of
   `retry_window` entries), so a step that the coordinator re-runs after its
   worker died is applied once on every shard, never twice and never lost.

Updates are asynchronous (each worker reads the table as the others left
it), as in TensorFlow's own parameter-server training.
"""
import math
import time

import numpy as np
import tensorflow as tf

from tf_sampled import _ops
from tf_sampled import _seeding
from tf_sampled import nn as nn_lib
from tf_sampled import optimizers as optimizers_lib
from tf_sampled.distribute import cluster as cluster_lib
from tf_sampled.distribute import sharded_sampler as sharded_lib
from tf_sampled.samplers import base as samplers_base

DEFAULT_RETRY_WINDOW = 1 << 16
DEFAULT_CHIEF_GONE_S = 30.0
# Seed attribute of the trainer's draws (seed2 is the trainer's seed).
_STEP_SEED = 20_110_817


def _serve(config, startup_timeout_s, chief_gone_s):
    """Runs this worker's or ps task's server until the chief has gone; exits the process."""
    _ops.load_ops()  # the steps run the package's ops here
    server = tf.distribute.Server(
        tf.train.ClusterSpec({job: list(a) for job, a in config.cluster.items()}),
        job_name=config.task_type, task_index=config.task_index, protocol=config.rpc_layer,
        start=True)
    # `server` stays referenced, so alive, while this loop runs.
    print(f"[tf_sampled.distribute] {config.task_name} serving at {server.target}", flush=True)
    chief = config.cluster["chief"][0]
    started = time.monotonic()
    seen, gone_since = False, None
    while True:
        up = cluster_lib._reachable(chief)  # pylint: disable=protected-access
        now = time.monotonic()
        if up:
            seen, gone_since = True, None
        elif seen:
            gone_since = gone_since or now
            if now - gone_since > chief_gone_s:
                print(f"[tf_sampled.distribute] {config.task_name}: the chief ({chief}) is "
                      f"gone; exiting", flush=True)
                raise SystemExit(0)
        elif startup_timeout_s is not None and now - started > startup_timeout_s:
            raise cluster_lib.ClusterError(
                f"{config.task_name} waited {startup_timeout_s:g} s for the chief ({chief}), "
                f"which runs the training program: start it with its TF_CONFIG (task type "
                f"'chief'), or raise startup_timeout_s")
        time.sleep(0.5)


def make_parameter_server_strategy(tf_config=None, *,
                                   startup_timeout_s=cluster_lib.DEFAULT_STARTUP_TIMEOUT_S,
                                   chief_gone_s=DEFAULT_CHIEF_GONE_S):
    """A `tf.distribute.ParameterServerStrategy` from a checked TF_CONFIG; servers on the others.

    Every task runs the same program with its own TF_CONFIG; call this
    first, before any other TensorFlow operation. On the chief it waits for
    every worker and ps task (with a time limit) and returns the strategy.
    On a "worker" or "ps" task it does not return: it loads the package's
    ops, starts the task's server and serves the chief's steps, then exits
    the process (status 0) once the chief has been unreachable for
    `chief_gone_s` seconds (or raises `ClusterError` if the chief never
    came within `startup_timeout_s`).

    Args:
      tf_config: TF_CONFIG as a JSON string or dict; None reads the
        environment variable. It needs a "chief", one or more "worker" and
        one or more "ps" tasks.
      startup_timeout_s: seconds the chief waits for the other tasks (and a
        server for the chief); None waits forever.
      chief_gone_s: seconds a server keeps serving after losing the chief.

    Returns:
      The strategy (on the chief).

    Raises:
      ValueError: TF_CONFIG is missing or invalid (`parse_tf_config` with
        parameter_servers=True: no ps tasks, no chief or several, no
        workers, ...), a time limit is not a positive number, or this task's
        port is in use.
      ClusterError: a task did not start within startup_timeout_s.
    """
    config = cluster_lib.parse_tf_config(tf_config, parameter_servers=True)
    if config is None:
        raise ValueError("make_parameter_server_strategy needs a TF_CONFIG naming the "
                         "cluster's 'chief', 'worker' and 'ps' tasks (TF_CONFIG is unset)")
    startup_timeout_s = cluster_lib._check_seconds(  # pylint: disable=protected-access
        "startup_timeout_s", startup_timeout_s)
    chief_gone_s = cluster_lib._check_seconds(  # pylint: disable=protected-access
        "chief_gone_s", chief_gone_s)
    if config.task_type != "chief":
        _serve(config, startup_timeout_s, chief_gone_s)
    cluster_lib.wait_for_peers(config, startup_timeout_s)
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec({job: list(a) for job, a in config.cluster.items()}),
        task_type="chief", task_id=0, rpc_layer=config.rpc_layer)
    return cluster_lib._create_strategy_or_exit_after(  # pylint: disable=protected-access
        startup_timeout_s, lambda: tf.distribute.ParameterServerStrategy(resolver))


# ---- the sparse optimizers, per shard ----

def _optimizer_spec(optimizer):
    """("sgd" | "adagrad" | "adam", hyperparameters) of a package sparse optimizer."""
    if optimizer is None:
        optimizer = optimizers_lib.LazyAdam(1e-3)
    kinds = ((optimizers_lib.LazyAdam, "adam"), (optimizers_lib.SparseAdagrad, "adagrad"),
             (optimizers_lib.SparseSGD, "sgd"))
    kind = next((k for cls, k in kinds if type(optimizer) is cls), None)  # pylint: disable=unidiomatic-typecheck
    if kind is None:
        raise ValueError(
            f"ParameterServerTrainer applies tf_sampled.optimizers.LazyAdam, SparseAdagrad or "
            f"SparseSGD on each parameter server with the package's sparse ops (Keras 3 "
            f"optimizers fail on sharded variables); got {type(optimizer).__name__}")
    config = optimizer.get_config()
    learning_rate = config.get("learning_rate")
    if not isinstance(learning_rate, (int, float)):
        raise ValueError(f"ParameterServerTrainer needs a constant learning rate, got "
                         f"{learning_rate!r}")
    for name, bad in (("momentum", kind == "sgd" and config.get("momentum")),
                      ("amsgrad", kind == "adam" and config.get("amsgrad")),
                      ("weight_decay", config.get("weight_decay")),
                      ("clipnorm", config.get("clipnorm")),
                      ("clipvalue", config.get("clipvalue")),
                      ("global_clipnorm", config.get("global_clipnorm"))):
        if bad:
            raise ValueError(f"ParameterServerTrainer's sparse {kind} update has no {name} "
                             f"(got {name}={config.get(name)!r})")
    return kind, config


def _ps_devices(strategy):
    """["/job:ps/replica:0/task:i/device:CPU:0"] of a ParameterServerStrategy's cluster."""
    if strategy is None:
        return []
    resolver = strategy._cluster_resolver  # pylint: disable=protected-access
    num_ps = len(resolver.cluster_spec().as_dict().get("ps", ()))
    return [f"/job:ps/replica:0/task:{i}/device:CPU:0" for i in range(num_ps)]


class _Shard:
    """One shard's variables on its device: rows, biases, optimizer slots, applied-step ring."""

    def __init__(self, index, rows, dim, device, kind, config, seed, use_bias, retry_window):
        self.index, self.rows, self.device = index, rows, device
        with tf.device(device):  # the initial rows are drawn on the server
            self.table = tf.Variable(tf.random.stateless_truncated_normal(
                [rows, dim], seed=[seed % 2**31, index], stddev=1.0 / math.sqrt(dim)),
                name=f"table_{index}")
            self.bias = (tf.Variable(tf.zeros([rows]), name=f"bias_{index}") if use_bias
                         else None)
            weights = [self.table] + ([self.bias] if use_bias else [])
            self.slots = []
            if kind == "adagrad":
                start = float(config.get("initial_accumulator_value", 0.1))
                self.slots = [[tf.Variable(tf.fill(w.shape, start), trainable=False,
                                           name=f"{w.name.split(':')[0]}_accumulator")]
                              for w in weights]
            elif kind == "adam":
                self.slots = [[tf.Variable(tf.zeros(w.shape), trainable=False,
                                           name=f"{w.name.split(':')[0]}_{m}")
                               for m in ("m", "v")] for w in weights]
            self.weights = weights
            # Step ids applied here: slot step % window holds the last step id.
            self.ring = tf.Variable(tf.fill([retry_window], tf.constant(-1, tf.int64)),
                                    trainable=False, name=f"applied_steps_{index}")
            self.applied = tf.Variable(tf.constant(0, tf.int64), trainable=False,
                                       name=f"applied_{index}")
            self.repeats = tf.Variable(tf.constant(0, tf.int64), trainable=False,
                                       name=f"repeats_skipped_{index}")


class ParameterServerTrainer:
    """Trains a class table sharded over parameter servers, with a sharded kernel sampler.

    The model is the class table (and biases) of a sampled softmax over
    `num_classes` classes: batches hold the hidden vectors h [B, dim] (e.g.
    a frozen encoder's outputs) and labels y [B]. The table is split into
    `num_shards` equal shards of num_classes / num_shards consecutive
    classes, shard s on parameter server s mod (ps tasks), each with its
    optimizer slots and its kernel tree (`ShardedKernelSampler`). See the
    module docstring for a step.

    ```python
    strategy = tfs.distribute.make_parameter_server_strategy()  # workers/ps serve here
    trainer = tfs.distribute.ParameterServerTrainer(
        10_000_000, 128, strategy=strategy, num_sampled=64,
        optimizer=tfs.optimizers.SparseAdagrad(0.1))
    trainer.fit(lambda: make_dataset(), total_steps=100_000)  # (h, y) batches per worker
    ```

    Args:
      num_classes: C, classes of the table.
      dim: d, width of h and of the table's rows.
      strategy: a `tf.distribute.ParameterServerStrategy` (from
        `make_parameter_server_strategy`): steps are scheduled on its workers
        by a `ClusterCoordinator`; None: one process, the shards on this
        process's CPU (the same steps, run in turn; for tests and single
        machines).
      num_shards: K, shards of the table (default: the strategy's ps tasks,
        1 without a strategy). It must divide num_classes.
      num_sampled: S, negatives per example.
      sampler: "kernel" (the only sampler that can be sharded), with
        sampler_options {"feature_map", "leaf_size"}.
      sampler_options: dict, see sampler.
      optimizer: `tf_sampled.optimizers.LazyAdam`, `SparseAdagrad` or
        `SparseSGD` with a constant learning rate (its hyperparameters are
        read; each shard keeps its own slots; LazyAdam's bias correction
        counts the steps its shard applied). Default LazyAdam(1e-3).
      use_bias: learn class biases.
      seed: int seed of the initial table, the projections' default and
        the negatives (None: drawn; `keras.utils.set_random_seed` seeds it).
      remove_accidental_hits: see `tf_sampled.nn.sampled_softmax_loss`.
      retry_window: steps each shard remembers as applied: a step retried
        after this many later steps were applied would be applied again.
      verbose: print progress.

    Raises:
      ValueError: before any step, for a strategy that is not a
        ParameterServerStrategy, a table that does not divide into the
        shards, a sampler that cannot be sharded, or an unsupported optimizer.

    Attributes:
      shards: per shard, its variables (table [C / K, dim], bias [C / K],
        optimizer slots, the ring of applied step ids) and device.
      sampler: the `ShardedKernelSampler`.
      step: steps completed (scheduled and finished).
    """

    def __init__(self, num_classes, dim, *, strategy=None, num_shards=None, num_sampled=64,
                 sampler="kernel", sampler_options=None, optimizer=None, use_bias=True,
                 seed=None, remove_accidental_hits=True, retry_window=DEFAULT_RETRY_WINDOW,
                 verbose=True):
        num_classes = samplers_base.check_count("num_classes", num_classes)
        dim = samplers_base.check_count("dim", dim)
        self.num_sampled = samplers_base.check_count("num_sampled", num_sampled)
        self.retry_window = samplers_base.check_count("retry_window", retry_window)
        if strategy is not None and not isinstance(strategy,
                                                   tf.distribute.ParameterServerStrategy):
            raise ValueError(
                f"ParameterServerTrainer runs on tf.distribute.ParameterServerStrategy (from "
                f"tf_sampled.distribute.make_parameter_server_strategy) or in one process "
                f"(strategy=None); got {type(strategy).__name__}: use "
                f"tf_sampled.distribute.Trainer for synchronous strategies")
        self.strategy = strategy
        ps_devices = _ps_devices(strategy)
        num_ps = len(ps_devices)
        if num_shards is None:
            num_shards = num_ps or 1
        num_shards = samplers_base.check_count("num_shards", num_shards)
        if num_classes % num_shards:
            raise ValueError(
                f"num_classes={num_classes} does not divide into num_shards={num_shards} "
                f"equal shards ({num_classes} = {num_classes // num_shards} x {num_shards} + "
                f"{num_classes % num_shards}); choose a number of shards that divides it, or "
                f"pad the table to {-(-num_classes // num_shards) * num_shards} classes")
        fmap_and_leaf = sharded_lib.check_shardable(sampler, sampler_options)
        kind, config = _optimizer_spec(optimizer)
        self.num_classes, self.dim, self.num_shards = num_classes, dim, num_shards
        self.optimizer_kind, self.optimizer_config = kind, config
        self.remove_accidental_hits = bool(remove_accidental_hits)
        self.seed = _seeding.seed_or_draw(seed)
        self.verbose = bool(verbose)
        rows = num_classes // num_shards
        devices = [ps_devices[s % num_ps] if num_ps else "/cpu:0" for s in range(num_shards)]
        self.shards = [_Shard(s, rows, dim, devices[s], kind, config, self.seed, use_bias,
                              self.retry_window) for s in range(num_shards)]
        feature_map, leaf_size = fmap_and_leaf
        with tf.device(devices[0]):
            self.sampler = sharded_lib.ShardedKernelSampler(
                [sh.table for sh in self.shards], feature_map, leaf_size=leaf_size,
                biases=[sh.bias for sh in self.shards] if use_bias else None,
                devices=devices, name="sharded_kernel_sampler")
        self.step = 0
        self._coordinator = (tf.distribute.coordinator.ClusterCoordinator(strategy)
                             if strategy is not None else None)
        self._train_fn = tf.function(self._train_step, reduce_retracing=True)
        self._eval_fn = tf.function(self._eval_step, reduce_retracing=True)

    def _log(self, message):
        if self.verbose:
            print(f"[tf_sampled.distribute] {message}", flush=True)

    # ---- one step ----

    def _gather(self, ids):
        """Rows [n, dim] and biases [n] (or None) of global ids [n], each read on its shard."""
        rows, biases, positions = [], [], []
        for s, shard in enumerate(self.shards):
            inside = self.sampler.shard_of(ids) == s
            positions.append(tf.cast(tf.where(inside)[:, 0], tf.int32))
            local = tf.boolean_mask(ids, inside) - int(self.sampler.offsets[s])
            with tf.device(shard.device):
                rows.append(tf.gather(shard.table, local))
                if shard.bias is not None:
                    biases.append(tf.gather(shard.bias, local))
        table = tf.dynamic_stitch(positions, rows)
        return table, (tf.dynamic_stitch(positions, biases) if biases else None)

    def _apply_rows(self, shard, local, gradients, step):
        """The guarded update of one shard on its device: applied once per step id."""
        kind, config = self.optimizer_kind, self.optimizer_config
        library = _ops.load_ops()
        lr = tf.constant(config["learning_rate"], tf.float32)
        with tf.device(shard.device):
            # One op takes every input of the update on this server: either all
            # of them arrived from the worker, and the check, the update, the
            # refresh and the record then run here whatever the worker does,
            # or none of this shard's update happens.
            arrived = tf.identity_n([step, local] + list(gradients))
        step, local, gradients = arrived[0], arrived[1], arrived[2:]
        slot_index = tf.math.floormod(step, self.retry_window)

        def apply():
            done = []
            for weight, slots, grad in zip(shard.weights, shard.slots or [[]] * 2, gradients):
                if kind == "sgd":
                    library.tf_sampled_sparse_apply_sgd(var=weight.handle, indices=local,
                                                        grads=grad, lr=lr)
                elif kind == "adagrad":
                    library.tf_sampled_sparse_apply_adagrad(
                        var=weight.handle, accumulator=slots[0].handle, indices=local,
                        grads=grad, lr=lr, epsilon=tf.constant(config["epsilon"], tf.float32))
                else:
                    t = tf.cast(shard.applied + 1, tf.float32)
                    beta_1, beta_2 = config["beta_1"], config["beta_2"]
                    alpha = lr * tf.sqrt(1.0 - tf.pow(beta_2, t)) / (1.0 - tf.pow(beta_1, t))
                    library.tf_sampled_sparse_apply_lazy_adam(
                        var=weight.handle, m=slots[0].handle, v=slots[1].handle,
                        indices=local, grads=grad, lr=alpha, beta1=tf.constant(beta_1),
                        beta2=tf.constant(beta_2),
                        epsilon=tf.constant(config["epsilon"], tf.float32))
                # Read after the update (same variable: ordered after it).
                done.append(tf.gather(weight, local[:1]))
            with tf.control_dependencies(done):
                self.sampler.shards[shard.index].refresh(local)
            with tf.control_dependencies([tf.gather(self.sampler.shards[shard.index].nodes,
                                                    [1])]):
                # The step counts as applied only once its update and refresh ran.
                shard.ring.scatter_update(tf.IndexedSlices(step[None], slot_index[None]))
                shard.applied.assign_add(1)
            return tf.constant(True)

        def skip():
            shard.repeats.assign_add(1)
            return tf.constant(False)

        with tf.device(shard.device):
            already = tf.equal(tf.gather(shard.ring, slot_index), step)
            return tf.cond(already, skip, apply)

    def _labels(self, y):
        """y as int64 [B], checked to lie in [0, num_classes)."""
        y = tf.reshape(tf.cast(y, tf.int64), [-1])
        with tf.control_dependencies([
                tf.debugging.assert_non_negative(y, message="labels must be >= 0"),
                tf.debugging.assert_less(y, tf.constant(self.num_classes, tf.int64),
                                         message="labels must be < num_classes")]):
            return tf.identity(y)

    def _train_step(self, h, y, step):
        """One step on (h [B, dim] float32, y [B] or [B, 1] int) with step id `step` (int64)."""
        h = tf.cast(h, tf.float32)
        y = self._labels(y)
        batch = tf.shape(y)[0]
        sampled = self.sampler.sample_at(h, self.num_sampled, y[:, None], _STEP_SEED,
                                         self.seed, step)
        unique, position = tf.unique(tf.concat([y, tf.reshape(sampled.ids, [-1])], 0))
        rows, biases = self._gather(unique)
        labels = position[:batch][:, None]
        candidates = tf.reshape(position[batch:], [batch, self.num_sampled])
        with tf.GradientTape() as tape:
            tape.watch(rows)
            if biases is not None:
                tape.watch(biases)
            losses = nn_lib.sampled_softmax_loss(
                rows, biases, labels, h,
                samplers_base.SampledCandidates(candidates, sampled.log_q, sampled.true_log_q),
                remove_accidental_hits=self.remove_accidental_hits)
            loss = tf.reduce_sum(losses) / tf.cast(batch, tf.float32)
        grads = [tf.convert_to_tensor(g) for g in
                 tape.gradient(loss, [rows] + ([biases] if biases is not None else []))]
        applied = []
        owner = self.sampler.shard_of(unique)
        for s, shard in enumerate(self.shards):
            inside = owner == s
            local = tf.boolean_mask(unique, inside) - int(self.sampler.offsets[s])
            applied.append(self._apply_rows(
                shard, local, [tf.boolean_mask(g, inside) for g in grads], step))
        with tf.control_dependencies(applied):
            return tf.stack([tf.reduce_sum(losses), tf.cast(batch, tf.float32)])

    def _worker_step(self, iterator, step):
        h, y = next(iterator)
        return self._train_fn(h, y, step)

    # ---- public loop ----

    def fit(self, dataset, total_steps, *, log_every=100):
        """Runs steps until `total_steps` steps have completed.

        With a strategy, each step is scheduled on a worker by the
        `ClusterCoordinator` (one step per batch of the worker's own
        iterator); a worker that dies mid-step has its step re-run on another
        worker (or on itself once restarted), and the shards apply it once.

        Args:
          dataset: a `tf.data.Dataset` of (h [B, dim] float, y [B] int)
            batches, or a function returning one (with a strategy it is
            created on every worker: `create_per_worker_dataset`). It must
            not run out before total_steps (repeat() it).
          total_steps: total steps of the run (the ones already completed
            included).
          log_every: print the mean loss every N steps (0: never).

        Returns:
          {"train": [{"step", "loss", "ms_per_step"}]} at every log point.

        Raises:
          ValueError: before any step, for a bad dataset or total_steps.
          ClusterError: a parameter server failed (the coordinator cannot
            recover from that; workers it recovers from).
        """
        if isinstance(total_steps, bool) or not isinstance(total_steps, (int, np.integer)) \
                or total_steps < 0:
            raise ValueError(f"total_steps must be a non-negative integer, got {total_steps!r}")
        probe = dataset() if callable(dataset) else dataset
        if not isinstance(probe, tf.data.Dataset):
            raise ValueError(f"dataset must be a tf.data.Dataset of (h, y) batches or a "
                             f"function returning one, got {type(probe).__name__}")
        spec = probe.element_spec
        if not isinstance(spec, tuple) or len(spec) != 2 or spec[0].shape.rank != 2 \
                or spec[0].shape[-1] != self.dim:
            raise ValueError(f"dataset must yield (h [batch, {self.dim}], y [batch]) batches, "
                             f"got elements {spec}")
        history = {"train": []}
        log_every = log_every or max(total_steps - self.step, 1)
        if self._coordinator is None:
            iterator = iter(probe)
            run = lambda step: self._train_fn(*next(iterator), tf.constant(step, tf.int64))
        else:
            fn = dataset if callable(dataset) else (lambda: dataset)
            per_worker = self._coordinator.create_per_worker_dataset(fn)
            iterator = iter(per_worker)
            worker_fn = tf.function(self._worker_step)
            run = lambda step: self._coordinator.schedule(
                worker_fn, args=(iterator, tf.constant(step, tf.int64)))
        while self.step < total_steps:
            start, end = self.step, min(total_steps, self.step + log_every)
            mark = time.perf_counter()
            results = [run(step) for step in range(start, end)]
            try:
                if self._coordinator is not None:
                    self._coordinator.join()
                stats = np.sum([np.asarray(r.fetch() if hasattr(r, "fetch") else r)
                                for r in results], axis=0)
            except (tf.errors.UnavailableError, tf.errors.AbortedError,
                    tf.errors.CancelledError) as error:
                raise cluster_lib.ClusterError(
                    f"parameter-server training, steps {start + 1}-{end}: a parameter server "
                    f"failed or the cluster stopped ({type(error).__name__}); the coordinator "
                    f"recovers from workers, not from parameter servers. TensorFlow said: "
                    f"{str(error).splitlines()[0][:300]}") from error
            self.step = end
            row = {"step": end, "loss": float(stats[0] / max(stats[1], 1.0)),
                   "ms_per_step": 1000.0 * (time.perf_counter() - mark) / (end - start)}
            history["train"].append(row)
            self._log(f"step {end}/{total_steps}: loss {row['loss']:.4f}, "
                      f"{row['ms_per_step']:.1f} ms/step")
        return history

    def _eval_step(self, h, y):
        h = tf.cast(h, tf.float32)
        y = self._labels(y)
        owner = self.sampler.shard_of(y)
        shard_logits, label_logit = [], tf.zeros(tf.shape(y), tf.float32)
        for s, shard in enumerate(self.shards):
            with tf.device(shard.device):  # [B, rows] logits stay on the server
                logits = tf.matmul(h, shard.table, transpose_b=True)
                if shard.bias is not None:
                    logits += shard.bias[None, :]
                local = self.sampler._local(y, s)  # pylint: disable=protected-access
                label_logit += tf.where(owner == s,
                                        tf.gather(logits, local[:, None], batch_dims=1)[:, 0],
                                        0.0)
            shard_logits.append(logits)
        lse, above = [], []
        for shard, logits in zip(self.shards, shard_logits):
            with tf.device(shard.device):
                lse.append(tf.reduce_logsumexp(logits, 1))
                above.append(tf.reduce_sum(tf.cast(logits > label_logit[:, None], tf.float32),
                                           1))
        cross_entropy = tf.reduce_logsumexp(tf.stack(lse, 1), 1) - label_logit
        rank = tf.add_n(above)
        return tf.stack([tf.reduce_sum(cross_entropy), tf.cast(tf.size(y), tf.float32),
                         tf.reduce_sum(tf.cast(rank < 1, tf.float32))])

    def evaluate(self, dataset):
        """Full-softmax cross-entropy and top-1 accuracy over `dataset`, run by this process.

        Each shard computes its logits [B, rows] and their log-sum-exp on its
        server; [B] values per shard come back.

        Args:
          dataset: `tf.data.Dataset` of (h [B, dim], y [B]) batches.

        Returns:
          {"loss": mean cross-entropy (nats), "top_1_accuracy"}.
        """
        totals = np.zeros(3)
        for h, y in dataset:
            totals += self._eval_fn(h, y).numpy()
        count = max(totals[1], 1e-12)
        return {"loss": float(totals[0] / count), "top_1_accuracy": float(totals[2] / count)}

    def shard_counts(self):
        """{"applied": [K] steps each shard applied, "repeats_skipped": [K] re-run steps it
        refused because it had applied them already}."""
        return {"applied": [int(sh.applied.numpy()) for sh in self.shards],
                "repeats_skipped": [int(sh.repeats.numpy()) for sh in self.shards]}

    def applied_steps(self, s):
        """Sorted step ids shard s applied (those still in its retry window): int64 [n]."""
        ring = self.shards[s].ring.numpy()
        return np.sort(ring[ring >= 0])

    def table(self):
        """The whole table [num_classes, dim] and biases [num_classes] (or None), as numpy."""
        table = np.concatenate([sh.table.numpy() for sh in self.shards])
        if self.shards[0].bias is None:
            return table, None
        return table, np.concatenate([sh.bias.numpy() for sh in self.shards])
