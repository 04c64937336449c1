"""Training on a cluster with tf.distribute: MultiWorkerMirroredStrategy and a custom loop.

- `make_strategy`: a `tf.distribute.MultiWorkerMirroredStrategy` from a
  checked TF_CONFIG, with time limits on start-up and on collectives.
- `Trainer`: trains a model ending in `tf_sampled.layers.SampledSoftmax` with
  a `strategy.run` loop (Keras 3's `fit` fails under MultiWorkerMirroredStrategy):
  sparse (all-gathered IndexedSlices) class-table gradients, identical
  sampler state on every replica, distinct negatives per replica, checkpoints
  that resume with the same samples, chunked full-softmax evaluation.
- `parse_tf_config`, `local_cluster`, `run_local_cluster`: TF_CONFIG checks
  and local clusters of processes (tests, examples, benchmarks).

Parameter-server training (a class table sharded over "ps" tasks) is not
supported yet.
"""
from tf_sampled.distribute.cluster import (ClusterConfig, ClusterError, WorkerResult,
                                           describe_failure, free_ports, local_cluster,
                                           make_strategy, parse_tf_config, run_local_cluster,
                                           wait_for_peers)
from tf_sampled.distribute.trainer import SUPPORTED_STRATEGIES, Trainer, check_strategy
