"""Parameter-server training: a class table sharded over "ps" tasks, steps on workers.

`tf.distribute.ParameterServerStrategy` with a
`tf.distribute.coordinator.ClusterCoordinator`: the chief runs the training
program and schedules steps, the workers run them asynchronously, and the
"ps" tasks hold the variables. Keras 3's `fit` refuses this strategy and
Keras 3 optimizers fail on a `ShardedVariable`, so `ParameterServerTrainer`
places one plain variable per shard on its parameter server (`tf.device`)
and updates it with the package's sparse optimizer ops
(`tf_sampled.optimizers.sparse_apply`), which then run on that server. An
optional trunk (a Keras model computing h from x, its variables created in
`strategy.scope()` and so on the ps tasks) is updated with plain TensorFlow
ops on the servers that hold its variables.

A step, on a worker, for its batch (x, y [B]), h [B, dim] = trunk(x) (or
the batch's h without a trunk):

1. the negatives come from a `ShardedKernelSampler` (one kernel tree per
   shard, on the shard's server; exact log q over the whole table) at the
   stream position of the step's id, so a retried step draws the same ones;
2. the distinct rows of the labels and negatives are read from their shards
   and the sampled softmax loss (`tf_sampled.nn.sampled_softmax_loss`) gives
   their gradients: [rows touched, dim] floats, never [num_classes, dim];
   backpropagated through h, it gives the trunk's gradients;
3. each shard's rows go to its server, and the trunk's gradients to the
   servers that hold its variables; each of these "update groups" (one per
   shard, one per server holding trunk variables) applies its update (and a
   shard refreshes its tree) unless it already applied this step: every
   group keeps the ids of the steps it applied (a ring of `retry_window`
   entries), so a step that the coordinator re-runs after its worker died
   is applied once by every group, never twice and never lost.

Why once: a group's update is one guarded subgraph on its server. Its inputs
(the step id and every gradient of the group) enter through one op
(`tf.identity_n`) placed on the server, so either all of them arrived and
the claim of the step id, the update and the refresh run there, or none
arrived and nothing of the group changed. The claim is one op,
`TfSampled>ClaimStep`: under the lock of the group's ring variable (the ids
of the steps it applied) it checks the id and records it, a compare-and-set,
and the update runs only when it claimed the id. A worker that dies before
its inputs arrived leaves the group untouched, and the coordinator's re-run
applies the step; one that dies after leaves the step claimed, and the
re-run finds it in the ring and skips it (`repeats_skipped`); of two runs
of one step that reach the server at the same time (a re-run while the
first still updates) exactly one claims it. A group's rows or trunk
variables are updated only inside its guard. The groups of one step are
independent: a re-run applies the step on the groups that missed it and
skips it on the others.

Updates are asynchronous (each worker reads the table and the trunk as the
others left them), as in TensorFlow's own parameter-server training.

Checkpoints (`tf.train.CheckpointManager`, written by the chief) hold every
group's weights, optimizer slots and ring, the sampler's trees, row
snapshots and projections, the trunk and the step count.
"""
import math
import time

import keras
import numpy as np
import tensorflow as tf

from tf_sampled import _ops
from tf_sampled import _seeding
from tf_sampled import _variables
from tf_sampled import nn as nn_lib
from tf_sampled import optimizers as optimizers_lib
from tf_sampled.distribute import cluster as cluster_lib
from tf_sampled.distribute import sharded_sampler as sharded_lib
from tf_sampled.distribute import trainer as trainer_lib
from tf_sampled.layers.model import head_and_input
from tf_sampled.optimizers import lazy_adam
from tf_sampled.samplers import base as samplers_base

DEFAULT_RETRY_WINDOW = 1 << 16
DEFAULT_CHIEF_GONE_S = 30.0
SUPPORTED_OPTIMIZERS = ("LazyAdam", "SparseAdagrad", "SparseSGD")
# Seed attribute of the trainer's draws (seed2 is the trainer's seed).
_STEP_SEED = 20_110_817
# The checkpoint's record of the table's layout: [C, dim, K, use_bias].
_LAYOUT_KEY = "layout/.ATTRIBUTES/VARIABLE_VALUE"

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


# ---- the optimizers, per update group ----

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
                      ("global_clipnorm", config.get("global_clipnorm")),
                      ("gradient_accumulation_steps",
                       config.get("gradient_accumulation_steps")),
                      ("use_ema", config.get("use_ema"))):
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


def _trunk_of(model, strategy, num_classes, dim):
    """The Keras model mapping x to h [B, dim] that the trainer trains, checked (or None)."""
    if model is None:
        return None
    if not isinstance(model, keras.Model):
        raise ValueError(f"trunk must be a keras.Model mapping x to h [batch, dim] (or one "
                         f"ending in tf_sampled.layers.SampledSoftmax), got "
                         f"{type(model).__name__}")
    if not model.built or not model.variables:
        raise ValueError(f"trunk {model.name!r} is not built (or has no variables): build it "
                         f"(call it on keras.Input tensors) inside strategy.scope()")
    try:
        head, head_input = head_and_input(model)
    except (AttributeError, ValueError, IndexError, TypeError):
        head = None
    if head is not None:
        if head.num_classes != num_classes:
            raise ValueError(f"trunk {model.name!r} ends in a SampledSoftmax over "
                             f"{head.num_classes} classes, the trainer's table has "
                             f"num_classes={num_classes}")
        # The layers before the head; the head's own table is not used (the
        # trainer's sharded table replaces it).
        model = keras.Model(model.inputs, head_input, name=f"{model.name}_trunk")
    outputs = getattr(model, "outputs", None)
    if outputs and len(tf.nest.flatten(outputs)) == 1:
        shape = tf.nest.flatten(outputs)[0].shape
        if len(shape) != 2 or shape[-1] != dim:
            raise ValueError(f"trunk {model.name!r} outputs shape {tuple(shape)}; the trainer "
                             f"needs h [batch, dim={dim}]")
    trainable = {id(v) for v in model.trainable_variables}
    frozen = [v.path for v in model.variables if id(v) not in trainable]
    if frozen:
        raise ValueError(
            f"trunk {model.name!r} has non-trainable variables ({frozen[:3]}): state that a "
            f"forward pass updates (BatchNormalization's statistics, Dropout's seed) would not "
            f"be guarded against a retried step's second update; use layers without it")
    wrong = [f"{v.path} ({v.dtype})" for v in model.trainable_variables
             if v.dtype != "float32"]
    if wrong:
        raise ValueError(f"trunk {model.name!r} must have float32 variables, got {wrong[:3]}")
    if strategy is not None:
        outside = [v.path for v in model.variables if not strategy.extended
                   .variable_created_in_scope(_variables.as_tf_variable(v))]
        if outside:
            raise ValueError(
                f"trunk {model.name!r} has variables created outside the strategy's scope "
                f"({outside[:3]}{' ...' if len(outside) > 3 else ''}): build it inside "
                f"`with strategy.scope():` so that its variables live on the ps tasks")
    return model


class _Group:
    """Variables updated together on one device: optimizer slots and the applied-step record.

    Attributes:
      name: "shard_<s>" or "trunk_<g>".
      device: the device of the variables, their update and the record.
      weights: the tf.Variables the group updates.
      slots: per weight, its optimizer slots ([] for SGD; [accumulator];
        [m, v]), same shapes.
      ring: int64 [retry_window]: slot step % window holds the last step id
        applied (-1: none).
      applied, repeats: int64 scalars: steps applied, re-runs refused.
    """

    def _init_record(self, name, device, weights, kind, config, retry_window):
        self.name, self.device, self.weights = name, device, weights
        with tf.device(device):
            self.slots = []
            for weight in weights:
                base_name = weight.name.split(":")[0].replace("/", "_")
                if kind == "adagrad":
                    start = float(config.get("initial_accumulator_value", 0.1))
                    self.slots.append([tf.Variable(tf.fill(weight.shape, start),
                                                   trainable=False,
                                                   name=f"{base_name}_accumulator")])
                elif kind == "adam":
                    self.slots.append([tf.Variable(tf.zeros(weight.shape), trainable=False,
                                                   name=f"{base_name}_{m}") for m in ("m", "v")])
                else:
                    self.slots.append([])
            self.ring = tf.Variable(tf.fill([retry_window], tf.constant(-1, tf.int64)),
                                    trainable=False, name=f"{name}_applied_steps")
            self.applied = tf.Variable(tf.constant(0, tf.int64), trainable=False,
                                       name=f"{name}_applied")
            self.repeats = tf.Variable(tf.constant(0, tf.int64), trainable=False,
                                       name=f"{name}_repeats_skipped")

    def record(self):
        """The group's state for a checkpoint, weights excluded (saved elsewhere)."""
        return tf.train.Checkpoint(slots=self.slots, ring=self.ring, applied=self.applied,
                                   repeats=self.repeats)


class _Shard(_Group):
    """One shard's variables on its device: rows, biases, optimizer slots, applied-step ring."""

    def __init__(self, index, rows, dim, device, kind, config, seed, use_bias, retry_window):
        self.index, self.rows = index, rows
        with tf.device(device):  # the initial rows are drawn on the server
            self.table = tf.Variable(tf.random.stateless_truncated_normal(
                [rows, dim], seed=[seed % 2**31, index], stddev=1.0 / math.sqrt(dim)),
                name=f"table_{index}")
            self.bias = (tf.Variable(tf.zeros([rows]), name=f"bias_{index}") if use_bias
                         else None)
        weights = [self.table] + ([self.bias] if use_bias else [])
        self._init_record(f"shard_{index}", device, weights, kind, config, retry_window)


class _TrunkGroup(_Group):
    """The trunk's variables that live on one device."""

    def __init__(self, index, device, weights, kind, config, retry_window):
        self.index = index
        self._init_record(f"trunk_{index}", device, weights, kind, config, retry_window)


def _trunk_groups(trunk, kind, config, retry_window):
    """One `_TrunkGroup` per device of the trunk's trainable variables, in first-seen order."""
    by_device = {}
    for variable in trunk.trainable_variables:
        inner = _variables.as_tf_variable(variable)
        by_device.setdefault(inner.device, []).append(inner)
    return [_TrunkGroup(g, device, weights, kind, config, retry_window)
            for g, (device, weights) in enumerate(by_device.items())]


class ParameterServerTrainer:
    """Trains a class table sharded over parameter servers (and a trunk), with a sharded sampler.

    The model is a sampled softmax over `num_classes` classes: its class
    table (and biases), and optionally a trunk, a Keras model computing the
    hidden vectors h [B, dim] from the inputs x. Without a trunk the batches
    hold (h [B, dim], y [B]) (e.g. a frozen encoder's outputs); with one they
    hold (x, y [B]) and the trunk is trained with the table. The table is
    split into `num_shards` equal shards of num_classes / num_shards
    consecutive classes, shard s on parameter server s mod (ps tasks), each
    with its optimizer slots and its kernel tree (`ShardedKernelSampler`).
    The trunk's variables stay where `strategy.scope()` put them (on the ps
    tasks); its optimizer slots are created next to them. See the module
    docstring for a step and why every step is applied exactly once.

    ```python
    strategy = tfs.distribute.make_parameter_server_strategy()  # workers/ps serve here
    with strategy.scope():
        trunk = build_encoder()                     # keras.Model: x -> h [B, 128]
    trainer = tfs.distribute.ParameterServerTrainer(
        10_000_000, 128, strategy=strategy, trunk=trunk, num_sampled=64,
        optimizer=tfs.optimizers.SparseAdagrad(0.1), checkpoint_dir="gs://bucket/run1")
    trainer.fit(lambda: make_dataset(), total_steps=100_000)  # (x, y) batches per worker
    ```

    Args:
      num_classes: C, classes of the table.
      dim: d, width of h and of the table's rows.
      strategy: a `tf.distribute.ParameterServerStrategy` (from
        `make_parameter_server_strategy`): steps are scheduled on its workers
        by a `ClusterCoordinator`; None: one process, the shards on this
        process's CPU (the same steps, run in turn; for tests and single
        machines).
      trunk: None (batches hold h), or a built `keras.Model` mapping x to h
        [B, dim], built inside `strategy.scope()` (its variables then live on
        the ps tasks), with float32 trainable variables only (no
        non-trainable state updated by a forward pass: BatchNormalization,
        Dropout). A model ending in `tf_sampled.layers.SampledSoftmax` (as
        `tfs.distribute.Trainer` takes) is cut before its head: the layers
        that produce the head's input are the trunk, the head's own table
        is not used.
      num_shards: K, shards of the table (default: the strategy's ps tasks,
        1 without a strategy). It must divide num_classes.
      num_sampled: S, negatives per example.
      sampler: "kernel" (the only sampler that can be sharded), with
        sampler_options {"feature_map", "leaf_size"}.
      sampler_options: dict, see sampler.
      optimizer: `tf_sampled.optimizers.LazyAdam`, `SparseAdagrad` or
        `SparseSGD` (`SUPPORTED_OPTIMIZERS`) with a constant learning rate,
        and no momentum, amsgrad, weight decay, clipping, EMA or gradient
        accumulation. Its hyperparameters are read, and the same update
        runs on every group: the package's sparse op on the table's rows
        and on a trunk variable with a `tf.IndexedSlices` gradient (an
        Embedding), Keras' dense formula on the trunk's other variables.
        Each group keeps its own slots; Adam's bias correction counts the
        steps its group applied. Default LazyAdam(1e-3).
      use_bias: learn class biases.
      seed: int seed of the initial table, the projections' default and
        the negatives (None: drawn; `keras.utils.set_random_seed` seeds it).
      remove_accidental_hits: see `tf_sampled.nn.sampled_softmax_loss`.
      retry_window: steps each group remembers as applied: a step retried
        after this many later steps were applied would be applied again.
      checkpoint_dir: None, or a directory the chief can write (a shared
        file system or a bucket for a cluster). If it holds a checkpoint,
        the table, slots, records, sampler state, trunk and step count are
        restored from it here, before any step.
      checkpoint_every: None, or N: also save every N steps during `fit`
        (`fit` always saves at its end when checkpoint_dir is set).
      max_to_keep: checkpoints kept in checkpoint_dir.
      verbose: print progress.

    Raises:
      ValueError: before any step, for a strategy that is not a
        ParameterServerStrategy, a table that does not divide into the
        shards, a sampler that cannot be sharded, an unsupported optimizer, a
        trunk that is not built, has the wrong output width, non-trainable
        or non-float32 variables or variables made outside the strategy's
        scope, a checkpoint_dir that cannot be written, or a checkpoint of a
        different table (classes, dim, shards, biases) or trunk.

    Attributes:
      shards: per shard, its variables (table [C / K, dim], bias [C / K],
        optimizer slots, the ring of applied step ids) and device.
      trunk: the trunk model (None without one).
      trunk_groups: per device holding trunk variables, their slots and
        ring of applied step ids.
      sampler: the `ShardedKernelSampler`.
      step: steps completed (scheduled and finished), restored ones included.
      restored_from: the checkpoint restored at construction, or None.
    """

    def __init__(self, num_classes, dim, *, strategy=None, trunk=None, num_shards=None,
                 num_sampled=64, sampler="kernel", sampler_options=None, optimizer=None,
                 use_bias=True, seed=None, remove_accidental_hits=True,
                 retry_window=DEFAULT_RETRY_WINDOW, checkpoint_dir=None, checkpoint_every=None,
                 max_to_keep=3, verbose=True):
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
        self.trunk = _trunk_of(trunk, strategy, num_classes, dim)
        if checkpoint_every is not None and (isinstance(checkpoint_every, bool) or not
                                             isinstance(checkpoint_every, int)
                                             or checkpoint_every < 1):
            raise ValueError(f"checkpoint_every must be a positive integer or None, got "
                             f"{checkpoint_every!r}")
        if checkpoint_dir is not None:
            _check_writable(checkpoint_dir)
        self.num_classes, self.dim, self.num_shards = num_classes, dim, num_shards
        self.optimizer_kind, self.optimizer_config = kind, config
        self.remove_accidental_hits = bool(remove_accidental_hits)
        self.seed = _seeding.seed_or_draw(seed)
        self.verbose = bool(verbose)
        rows = num_classes // num_shards
        devices = [ps_devices[s % num_ps] if num_ps else "/cpu:0" for s in range(num_shards)]
        self.shards = [_Shard(s, rows, dim, devices[s], kind, config, self.seed, use_bias,
                              self.retry_window) for s in range(num_shards)]
        self.trunk_groups = (_trunk_groups(self.trunk, kind, config, self.retry_window)
                             if self.trunk is not None else [])
        feature_map, leaf_size = fmap_and_leaf
        with tf.device(devices[0]):
            self.sampler = sharded_lib.ShardedKernelSampler(
                [sh.table for sh in self.shards], feature_map, leaf_size=leaf_size,
                biases=[sh.bias for sh in self.shards] if use_bias else None,
                devices=devices, name="sharded_kernel_sampler")
        self._step = tf.Variable(tf.constant(0, tf.int64), trainable=False, name="step")
        self._coordinator = (tf.distribute.coordinator.ClusterCoordinator(strategy)
                             if strategy is not None else None)
        self._train_fn = tf.function(self._train_step, reduce_retracing=True)
        self._eval_fn = tf.function(self._eval_step, reduce_retracing=True)
        self.checkpoint_dir, self.checkpoint_every = checkpoint_dir, checkpoint_every
        self.restored_from, self._manager, self._saved_step = None, None, None
        self._checkpoint = tf.train.Checkpoint(
            layout=tf.Variable([num_classes, dim, num_shards, int(bool(use_bias))],
                               dtype=tf.int64, trainable=False, name="layout"),
            shards=[tf.train.Checkpoint(table=sh.table, bias=sh.bias, record=sh.record())
                    if sh.bias is not None else
                    tf.train.Checkpoint(table=sh.table, record=sh.record())
                    for sh in self.shards],
            sampler=self.sampler, step=self._step,
            **({"trunk": self.trunk, "trunk_groups": [g.record() for g in self.trunk_groups]}
               if self.trunk is not None else {}))
        if checkpoint_dir is not None:
            self._manager = tf.train.CheckpointManager(self._checkpoint, checkpoint_dir,
                                                       max_to_keep=max_to_keep)
            latest = self._manager.latest_checkpoint
            if latest:
                self._restore(latest)

    def _log(self, message):
        if self.verbose:
            print(f"[tf_sampled.distribute] {message}", flush=True)

    @property
    def step(self):
        """Steps completed (restored ones included)."""
        return int(self._step.numpy())

    # ---- checkpoints ----

    def _layout(self):
        return [self.num_classes, self.dim, self.num_shards, int(self.shards[0].bias is not None)]

    def _restore(self, path):
        """Restores checkpoint `path` into every variable, or ValueError naming what differs."""
        try:
            saved = tf.train.load_variable(path, _LAYOUT_KEY).tolist()
        except (tf.errors.NotFoundError, ValueError) as error:
            raise ValueError(f"the checkpoint {path} in checkpoint_dir is not a "
                             f"ParameterServerTrainer checkpoint (it has no table layout: "
                             f"{str(error).splitlines()[0][:200]})") from None
        if saved != self._layout():
            names = ("num_classes", "dim", "num_shards", "use_bias")
            differ = ", ".join(f"{n}={a} (this trainer: {b})"
                               for n, a, b in zip(names, saved, self._layout()) if a != b)
            raise ValueError(f"the checkpoint {path} holds a different table: {differ}; use "
                             f"another checkpoint_dir or the checkpoint's layout")
        trainer_lib.restore_matching(self._checkpoint, path, "this trainer (its trunk, "
                                     "optimizer or sampler differ)")
        self.restored_from, self._saved_step = path, self.step
        self._log(f"restored step {self.step} from {path}")

    def save(self):
        """Writes a checkpoint of every group, the sampler, the trunk and the step.

        Call between `fit` calls (fit saves at its end and every
        checkpoint_every steps): every scheduled step has finished then, so
        the checkpoint holds the state after exactly `step` steps.

        Returns:
          The checkpoint's path (numbered by the step).

        Raises:
          ValueError: the trainer has no checkpoint_dir.
        """
        if self._manager is None:
            raise ValueError("ParameterServerTrainer(checkpoint_dir=...) is needed to save "
                             "checkpoints")
        path = self._manager.save(checkpoint_number=self.step)
        self._saved_step = self.step
        self._log(f"saved step {self.step} to {path}")
        return path

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

    def _update(self, weight, slots, gradient, t):
        """The optimizer's update of `weight`: ops to wait for (on the group's device).

        Args:
          weight: a float32 tf.Variable.
          slots: its slots ([], [accumulator] or [m, v]).
          gradient: a dense gradient (weight's shape), or (ids [n], rows
            [n, ...]) of distinct rows.
          t: float32 scalar, the group's step number (Adam's bias correction).

        Returns:
          [ops or tensors]: the update has run once they have.
        """
        kind, config = self.optimizer_kind, self.optimizer_config
        lr = tf.constant(config["learning_rate"], tf.float32)
        epsilon = tf.constant(config.get("epsilon", 0.0), tf.float32)
        if kind == "adam":
            beta_1, beta_2 = config["beta_1"], config["beta_2"]
            alpha = lr * tf.sqrt(1.0 - tf.pow(beta_2, t)) / (1.0 - tf.pow(beta_1, t))
        if isinstance(gradient, tuple):  # distinct rows: the package's sparse ops
            library = _ops.load_ops()
            ids, rows = gradient
            if kind == "sgd":
                library.tf_sampled_sparse_apply_sgd(var=weight.handle, indices=ids,
                                                    grads=rows, lr=lr)
            elif kind == "adagrad":
                library.tf_sampled_sparse_apply_adagrad(
                    var=weight.handle, accumulator=slots[0].handle, indices=ids, grads=rows,
                    lr=lr, epsilon=epsilon)
            else:
                library.tf_sampled_sparse_apply_lazy_adam(
                    var=weight.handle, m=slots[0].handle, v=slots[1].handle, indices=ids,
                    grads=rows, lr=alpha, beta1=tf.constant(beta_1),
                    beta2=tf.constant(beta_2), epsilon=epsilon)
            # Read after the update (same variable: ordered after it).
            return [tf.gather(weight, ids[:1])]
        # Dense: Keras' formulas of SGD, Adagrad and Adam, in plain ops.
        if kind == "sgd":
            return [weight.assign_sub(lr * gradient, read_value=False)]
        if kind == "adagrad":
            accumulator = slots[0].assign_add(tf.square(gradient))
            return [weight.assign_sub(lr * gradient / tf.sqrt(accumulator + epsilon),
                                      read_value=False)]
        m = slots[0].assign_add((gradient - slots[0]) * (1.0 - beta_1))
        v = slots[1].assign_add((tf.square(gradient) - slots[1]) * (1.0 - beta_2))
        return [weight.assign_sub(m * alpha / (tf.sqrt(v) + epsilon), read_value=False)]

    def _guarded(self, group, step, inputs, update):
        """Runs `update(inputs, t)` on the group's device once per step id.

        Args:
          group: a `_Group`.
          step: int64 scalar, the step's id.
          inputs: tensors the update needs (they travel to the group's device).
          update: fn(inputs on the device, t float32 scalar) -> [ops]; it
            runs inside the guard, t = the group's applied steps + 1.

        Returns:
          bool scalar: applied (True) or refused as a repeat (False).
        """
        with tf.device(group.device):
            # One op takes every input of the update on this server: either all
            # of them arrived from the worker, and the check, the update, the
            # refresh and the record then run here whatever the worker does,
            # or none of this group's update happens.
            arrived = tf.identity_n([step] + list(inputs))
        step, inputs = arrived[0], arrived[1:]

        def apply():
            t = tf.cast(group.applied + 1, tf.float32)
            done = update(inputs, t)
            with tf.control_dependencies(done):
                group.applied.assign_add(1)
            return tf.constant(True)

        def skip():
            group.repeats.assign_add(1)
            return tf.constant(False)

        with tf.device(group.device):
            # Check and record in one op, under the ring's lock: of two runs
            # of one step (the coordinator's re-run while the first still
            # updates on the server) exactly one claims it.
            claimed = _ops.load_ops().tf_sampled_claim_step(ring=group.ring.handle, step=step)
            return tf.cond(claimed, apply, skip)

    def _apply_rows(self, shard, local, gradients, step):
        """The guarded update of one shard's rows local [n] and its tree's refresh."""
        def update(inputs, t):
            local, gradients = inputs[0], inputs[1:]
            done = []
            for weight, slots, grad in zip(shard.weights, shard.slots, gradients):
                done += self._update(weight, slots, (local, grad), t)
            with tf.control_dependencies(done):
                self.sampler.shards[shard.index].refresh(local)
            return [tf.gather(self.sampler.shards[shard.index].nodes, [1])]

        return self._guarded(shard, step, [local] + list(gradients), update)

    def _apply_trunk(self, group, gradients, step):
        """The guarded update of one device's trunk variables."""
        inputs, structure = [], []
        for weight, grad in zip(group.weights, gradients):
            if grad is None:
                grad = tf.zeros_like(weight)
            if isinstance(grad, tf.IndexedSlices):
                ids, rows = lazy_adam.sum_duplicates(grad)  # distinct rows travel
                structure.append(2)
                inputs += [tf.cast(ids, tf.int64), tf.cast(rows, tf.float32)]
            else:
                structure.append(1)
                inputs.append(tf.cast(grad, tf.float32))

        def update(inputs, t):
            done, at = [], 0
            for weight, slots, size in zip(group.weights, group.slots, structure):
                grad = tuple(inputs[at:at + 2]) if size == 2 else inputs[at]
                at += size
                done += self._update(weight, slots, grad, t)
            return done

        return self._guarded(group, step, inputs, update)

    def _labels(self, y):
        """y as int64 [B], checked to lie in [0, num_classes)."""
        y = tf.reshape(tf.cast(y, tf.int64), [-1])
        with tf.control_dependencies([
                tf.debugging.assert_non_negative(y, message="labels must be >= 0"),
                tf.debugging.assert_less(y, tf.constant(self.num_classes, tf.int64),
                                         message="labels must be < num_classes")]):
            return tf.identity(y)

    def _hidden(self, x, training):
        """h [B, dim] float32: trunk(x), or x itself without a trunk."""
        if self.trunk is None:
            return tf.cast(x, tf.float32)
        h = tf.cast(self.trunk(x, training=training), tf.float32)
        return tf.ensure_shape(h, [None, self.dim])

    def _train_step(self, x, y, step):
        """One step on a batch (x, y [B] or [B, 1] int) with step id `step` (int64 scalar).

        x is h [B, dim] without a trunk, the trunk's input with one.
        Returns float32 [2]: the sum of the batch's sampled losses and B.
        """
        y = self._labels(y)
        batch = tf.shape(y)[0]
        trunk_variables = [w for g in self.trunk_groups for w in g.weights]
        with tf.GradientTape() as tape:
            h = self._hidden(x, training=True)
            with tape.stop_recording():
                sampled = self.sampler.sample_at(tf.stop_gradient(h), self.num_sampled,
                                                 y[:, None], _STEP_SEED, self.seed, step)
                unique, position = tf.unique(tf.concat([y, tf.reshape(sampled.ids, [-1])], 0))
                rows, biases = self._gather(unique)
            tape.watch(rows)
            if biases is not None:
                tape.watch(biases)
            labels = position[:batch][:, None]
            candidates = tf.reshape(position[batch:], [batch, self.num_sampled])
            losses = nn_lib.sampled_softmax_loss(
                rows, biases, labels, h,
                samplers_base.SampledCandidates(candidates, sampled.log_q, sampled.true_log_q),
                remove_accidental_hits=self.remove_accidental_hits)
            loss = tf.reduce_sum(losses) / tf.cast(batch, tf.float32)
        sources = [rows] + ([biases] if biases is not None else [])
        grads = tape.gradient(loss, sources + trunk_variables)
        row_grads = [tf.convert_to_tensor(g) for g in grads[:len(sources)]]
        trunk_grads = grads[len(sources):]
        applied = []
        owner = self.sampler.shard_of(unique)
        for s, shard in enumerate(self.shards):
            inside = owner == s
            local = tf.boolean_mask(unique, inside) - int(self.sampler.offsets[s])
            applied.append(self._apply_rows(
                shard, local, [tf.boolean_mask(g, inside) for g in row_grads], step))
        at = 0
        for group in self.trunk_groups:
            applied.append(self._apply_trunk(group, trunk_grads[at:at + len(group.weights)],
                                             step))
            at += len(group.weights)
        with tf.control_dependencies(applied):
            return tf.stack([tf.reduce_sum(losses), tf.cast(batch, tf.float32)])

    def _worker_step(self, iterator, step):
        x, y = next(iterator)
        return self._train_fn(x, y, step)

    # ---- public loop ----

    def _check_dataset(self, dataset):
        """The dataset `dataset` gives (a function is called once), checked."""
        probe = dataset() if callable(dataset) else dataset
        name = "x" if self.trunk is not None else "h"
        what = "(x, y)" if self.trunk is not None else f"(h [batch, {self.dim}], y [batch])"
        if not isinstance(probe, tf.data.Dataset):
            raise ValueError(f"dataset must be a tf.data.Dataset of ({name}, y) batches or a "
                             f"function returning one, got {type(probe).__name__}")
        spec = probe.element_spec
        if not isinstance(spec, tuple) or len(spec) != 2:
            raise ValueError(f"dataset must yield {what} batches, got elements {spec}")
        if self.trunk is None and (spec[0].shape.rank != 2 or spec[0].shape[-1] != self.dim):
            raise ValueError(f"dataset must yield (h [batch, {self.dim}], y [batch]) batches, "
                             f"got elements {spec}")
        return probe

    def fit(self, dataset, total_steps, *, log_every=100):
        """Runs steps until `total_steps` steps have completed.

        With a strategy, each step is scheduled on a worker by the
        `ClusterCoordinator` (one step per batch of the worker's own
        iterator); a worker that dies mid-step has its step re-run on another
        worker (or on itself once restarted), and every group applies it once.

        Step t takes batch t of the dataset: at its start `fit` skips the
        batches of the steps already done (in one process all of them; with
        W workers, each worker's dataset skips step // W of its own). So in one
        process, or with one worker, a run continued from a checkpoint sees
        the batches, and draws the negatives, of the uninterrupted run (with
        a dataset whose order its seeds fix).

        Args:
          dataset: a `tf.data.Dataset` of (h [B, dim] float, y [B] int)
            batches ((x, y) with a trunk), or a function returning one (with
            a strategy it is created on every worker:
            `create_per_worker_dataset`). It must not run out before
            total_steps (repeat() it).
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
        probe = self._check_dataset(dataset)
        history = {"train": []}
        log_every = log_every or max(total_steps - self.step, 1)
        if self._coordinator is None:
            iterator = iter(probe.skip(self.step))
            run = lambda step: self._train_fn(*next(iterator), tf.constant(step, tf.int64))
        else:
            skip = self.step // len(_workers(self.strategy))
            fn = dataset if callable(dataset) else (lambda: dataset)
            per_worker = self._coordinator.create_per_worker_dataset(lambda: fn().skip(skip))
            iterator = iter(per_worker)
            worker_fn = tf.function(self._worker_step)
            run = lambda step: self._coordinator.schedule(
                worker_fn, args=(iterator, tf.constant(step, tf.int64)))
        every = self.checkpoint_every if self._manager is not None else None
        while self.step < total_steps:
            start = self.step
            end = min(total_steps, (start // log_every + 1) * log_every)
            if every:
                end = min(end, (start // every + 1) * every)
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
            self._step.assign(end)
            if end % log_every == 0 or end == total_steps:
                row = {"step": end, "loss": float(stats[0] / max(stats[1], 1.0)),
                       "ms_per_step": 1000.0 * (time.perf_counter() - mark) / (end - start)}
                history["train"].append(row)
                self._log(f"step {end}/{total_steps}: loss {row['loss']:.4f}, "
                          f"{row['ms_per_step']:.1f} ms/step")
            if every and end % every == 0 and end != total_steps:
                self.save()
        if self._manager is not None and self._saved_step != self.step:
            self.save()
        return history

    def _eval_step(self, x, y):
        h = self._hidden(x, training=False)
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
          dataset: `tf.data.Dataset` of (h [B, dim], y [B]) batches ((x, y)
            with a trunk).

        Returns:
          {"loss": mean cross-entropy (nats), "top_1_accuracy"}.
        """
        totals = np.zeros(3)
        for x, y in dataset:
            totals += self._eval_fn(x, y).numpy()
        count = max(totals[1], 1e-12)
        return {"loss": float(totals[0] / count), "top_1_accuracy": float(totals[2] / count)}

    @staticmethod
    def _counts(groups):
        return {"applied": [int(g.applied.numpy()) for g in groups],
                "repeats_skipped": [int(g.repeats.numpy()) for g in groups]}

    def shard_counts(self):
        """{"applied": [K] steps each shard applied, "repeats_skipped": [K] re-run steps it
        refused because it had applied them already}."""
        return self._counts(self.shards)

    def trunk_counts(self):
        """`shard_counts` of the trunk's groups ([G] each: one per device of its variables)."""
        return self._counts(self.trunk_groups)

    @staticmethod
    def _ring_steps(group):
        ring = group.ring.numpy()
        return np.sort(ring[ring >= 0])

    def applied_steps(self, s):
        """Sorted step ids shard s applied (those still in its retry window): int64 [n]."""
        return self._ring_steps(self.shards[s])

    def trunk_applied_steps(self, g):
        """Sorted step ids trunk group g applied (those still in its retry window): int64 [n]."""
        return self._ring_steps(self.trunk_groups[g])

    def table(self):
        """The whole table [num_classes, dim] and biases [num_classes] (or None), as numpy."""
        table = np.concatenate([sh.table.numpy() for sh in self.shards])
        if self.shards[0].bias is None:
            return table, None
        return table, np.concatenate([sh.bias.numpy() for sh in self.shards])


def _workers(strategy):
    """The worker task names of a ParameterServerStrategy's cluster."""
    spec = strategy._cluster_resolver.cluster_spec().as_dict()  # pylint: disable=protected-access
    return list(spec.get("worker", ())) or [None]


def _check_writable(directory):
    """ValueError naming `directory` unless a file can be created in it (made if missing)."""
    probe = f"{str(directory).rstrip('/')}/.tf_sampled_write_probe"
    try:
        tf.io.gfile.makedirs(directory)
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("probe")
        tf.io.gfile.remove(probe)
    except (tf.errors.OpError, OSError) as error:
        raise ValueError(f"checkpoint_dir {directory!r} is not a writable directory: "
                         f"{str(error).splitlines()[0][:200]}") from None
