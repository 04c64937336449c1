"""Which Keras 3 optimizers turn a sparse row gradient into an O(table) update."""
import keras

from tf_sampled.optimizers.lazy_adam import LazyAdam
from tf_sampled.optimizers.sparse_adagrad import SparseAdagrad
from tf_sampled.optimizers.sparse_sgd import SparseSGD


def densifying_reason(optimizer):
    """Why `optimizer` updates every row of a table on a sparse gradient, or None.

    Keras 3's optimizers evaluate their update with dense arithmetic on the
    moment slots (Adam, Adagrad, RMSprop, ..., SGD with momentum), and weight
    decay and EMA touch every weight; only plain SGD and this package's
    `SparseSGD` / `LazyAdam` / `SparseAdagrad` keep a step O(rows touched).

    Args:
      optimizer: a `keras.optimizers.Optimizer`.

    Returns:
      A sentence naming the cause, or None when the optimizer stays sparse.
    """
    name = type(optimizer).__name__
    if getattr(optimizer, "weight_decay", None):
        return f"{name} has weight_decay={optimizer.weight_decay}, which decays every row"
    if getattr(optimizer, "use_ema", False):
        return f"{name} has use_ema=True, which averages every row"
    if isinstance(optimizer, (LazyAdam, SparseAdagrad)):
        return None
    if type(optimizer) in (keras.optimizers.SGD, SparseSGD):  # pylint: disable=unidiomatic-typecheck
        if optimizer.momentum:
            return f"SGD with momentum={optimizer.momentum} keeps a dense momentum slot"
        return None
    return (f"{name} updates its slots and weights densely in Keras 3 (it is not one of "
            f"SGD without momentum, tf_sampled.optimizers.SparseSGD, LazyAdam, SparseAdagrad)")
