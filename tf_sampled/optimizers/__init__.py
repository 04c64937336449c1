"""Keras 3 optimizers whose step costs O(rows touched) on a sparse gradient."""
from tf_sampled.optimizers.densify import densifying_reason
from tf_sampled.optimizers.lazy_adam import LazyAdam
from tf_sampled.optimizers.sparse_adagrad import SparseAdagrad
from tf_sampled.optimizers.sparse_sgd import SparseSGD
