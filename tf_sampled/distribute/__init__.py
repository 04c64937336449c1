"""Training on a cluster with tf.distribute: MultiWorkerMirroredStrategy and a custom loop.

- `make_strategy`: a `tf.distribute.MultiWorkerMirroredStrategy` from a
  checked TF_CONFIG, with time limits on start-up and on collectives.
- `Trainer`: trains a model ending in `tf_sampled.layers.SampledSoftmax` with
  a `strategy.run` loop (Keras 3's `fit` fails under MultiWorkerMirroredStrategy):
  sparse (all-gathered IndexedSlices) class-table gradients, identical
  sampler state on every replica, distinct negatives per replica, checkpoints
  that resume with the same samples, chunked full-softmax evaluation.
- `make_parameter_server_strategy`, `ParameterServerTrainer`: a
  `tf.distribute.ParameterServerStrategy` with a `ClusterCoordinator`: the
  class table, its optimizer slots and one kernel tree per shard
  (`ShardedKernelSampler`) on the "ps" tasks, sparse updates and refreshes
  run there, each step applied once even when its worker dies.
- `parse_tf_config`, `local_cluster`, `run_local_cluster`: TF_CONFIG checks
  and local clusters of processes (tests, examples, benchmarks).
"""
from tf_sampled.distribute.cluster import (ClusterConfig, ClusterError, WorkerResult,
                                           describe_failure, free_ports, local_cluster,
                                           make_strategy, parse_tf_config, run_local_cluster,
                                           wait_for_peers)
from tf_sampled.distribute.parameter_server import (ParameterServerTrainer,
                                                    make_parameter_server_strategy)
from tf_sampled.distribute.sharded_sampler import ShardedKernelSampler
from tf_sampled.distribute.trainer import SUPPORTED_STRATEGIES, Trainer, check_strategy

__all__ = ["ClusterConfig", "ClusterError", "WorkerResult", "describe_failure", "free_ports",
           "local_cluster", "make_strategy", "parse_tf_config", "run_local_cluster",
           "wait_for_peers", "ParameterServerTrainer", "make_parameter_server_strategy",
           "ShardedKernelSampler", "SUPPORTED_STRATEGIES", "Trainer", "check_strategy"]
