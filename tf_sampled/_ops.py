"""Loading the compiled op library, lazily and with errors that say how to fix them."""
import glob
import os
import threading

import tensorflow as tf

_ENV_PATH = "TF_SAMPLED_OPS_LIBRARY"
_LOCK = threading.Lock()
_LIBRARY = None
_LIBRARY_PATH = None

_REBUILD = (
    "Rebuild it from the source tree with `pip install --no-build-isolation -e .` "
    "(or `pip install .`), which compiles custom_ops/ with g++ against the "
    "installed TensorFlow."
)

# Ops that sample or build state: no gradient flows through them.
_NO_GRADIENT_OPS = (
    "TfSampled>KernelTreeBuild",
    "TfSampled>KernelTreeUpdate",
    "TfSampled>KernelTreeRefreshRows",
    "TfSampled>KernelTreeSample",
    "TfSampled>KernelTreeLogProb",
    "TfSampled>KernelTreeCandidateSampler",
    "TfSampled>LshBuild",
    "TfSampled>LshUpdate",
    "TfSampled>LshSample",
    "TfSampled>LshLogProb",
    "TfSampled>LshCandidateSampler",
    "TfSampled>AdversarialTreeFit",
    "TfSampled>AdversarialTreeSample",
    "TfSampled>AdversarialTreeLogProb",
    "TfSampled>AdversarialTreeCandidateSampler",
    # The parameter-server guard: a claim, not a function of its inputs.
    "TfSampled>ClaimStep",
    # Optimizer steps: they update variables in place and return nothing.
    "TfSampled>SparseApplySgd",
    "TfSampled>SparseApplyLazyAdam",
    "TfSampled>SparseApplyAdagrad",
    # Second-order gradients of the fused loss are not provided.
    "TfSampled>SampledSoftmaxLossGrad",
)


class OpLibraryError(ImportError):
    """The op library is missing, or was built for another TensorFlow."""


def _default_library_path():
    package_dir = os.path.dirname(os.path.abspath(__file__))
    candidates = sorted(glob.glob(os.path.join(package_dir, "_tf_sampled_ops*.so")))
    return candidates[0] if candidates else None


def _check_tensorflow_version():
    try:
        from tf_sampled import _build_info  # pylint: disable=import-outside-toplevel
    except ImportError:
        return  # built outside setup.py (Bazel): nothing recorded
    built = _build_info.TENSORFLOW_VERSION.split(".")[:2]
    running = tf.__version__.split(".")[:2]
    if built != running:
        raise OpLibraryError(
            f"tf_sampled's op library was built against TensorFlow {'.'.join(built)} "
            f"but TensorFlow {tf.__version__} is installed; custom ops are not "
            f"ABI-compatible across minor versions. {_REBUILD}"
        )


def load_ops(path=None):
    """Loads the tf_sampled op library once and returns its module of op wrappers.

    Call it before loading a SavedModel whose graph contains tf_sampled ops.

    Args:
      path: optional path of the shared library. Defaults to the environment
        variable `TF_SAMPLED_OPS_LIBRARY`, else the library built into the
        package by `pip install`.

    Raises:
      OpLibraryError: the library is missing or does not match TensorFlow.
    """
    global _LIBRARY, _LIBRARY_PATH
    with _LOCK:
        if _LIBRARY is not None:
            return _LIBRARY
        explicit = path or os.environ.get(_ENV_PATH)
        path = explicit or _default_library_path()
        if path is None or not os.path.exists(path):
            raise OpLibraryError(
                f"tf_sampled's op library was not found (looked for "
                f"{path or 'tf_sampled/_tf_sampled_ops*.so'}). {_REBUILD}"
            )
        if not explicit:
            _check_tensorflow_version()
        try:
            library = tf.load_op_library(path)
        except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as error:
            raise OpLibraryError(
                f"tf_sampled's op library at {path} could not be loaded "
                f"({error}); it was probably built against another TensorFlow. "
                f"{_REBUILD}"
            ) from error
        for op_name in _NO_GRADIENT_OPS:
            tf.no_gradient(op_name)
        _LIBRARY, _LIBRARY_PATH = library, path
        return library


def ops_library_path():
    """Path of the loaded op library (loads it if needed)."""
    load_ops()
    return _LIBRARY_PATH
