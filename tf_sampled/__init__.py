"""tf_sampled: adaptive negative samplers for sampled softmax, as TensorFlow ops.

Importing the package never fails for a missing op library: the error comes
when an op is first needed (or from `load_ops()`), and says how to rebuild.
"""
from tf_sampled import datasets
from tf_sampled import distribute
from tf_sampled import features
from tf_sampled import layers
from tf_sampled import nn
from tf_sampled import optimizers
from tf_sampled import random
from tf_sampled import samplers
from tf_sampled._ops import OpLibraryError, load_ops, ops_library_path

__version__ = "0.1.0"
