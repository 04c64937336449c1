"""Bazel macro for building the tf_sampled TensorFlow custom-op library."""

load("@rules_cc//cc:defs.bzl", "cc_binary")

def tf_sampled_op_library(name, srcs = [], hdrs = [], deps = [], copts = [], linkopts = [], **kwargs):
    """Builds a TensorFlow custom-op shared library loadable by tf.load_op_library.

    Like tensorflow/addons' `custom_op_library`: a `cc_binary(linkshared = 1)`
    compiled against the pip-installed TensorFlow's headers (with TF's
    defines: -D_GLIBCXX_USE_CXX11_ABI=1 -DEIGEN_MAX_ALIGN_BYTES=64) and linked
    against its libtensorflow_framework.so.2, mirroring setup.py's
    `g++ -std=c++17 -shared -fPIC -O3 ... $(tf compile/link flags)`.

    Args:
      name: target name; must end in ".so" (e.g. "_tf_sampled_ops.so").
      srcs: .cc files (REGISTER_OP definitions and kernels).
      hdrs: private headers of the op library.
      deps: further cc_library deps (e.g. framework-free core code).
      copts: extra compiler options.
      linkopts: extra linker options.
      **kwargs: passed to cc_binary (visibility, tags, ...).
    """
    if not name.endswith(".so"):
        fail("tf_sampled_op_library name must end in .so, got %r" % name)
    cc_binary(
        name = name,
        srcs = srcs + hdrs,
        copts = [
            "-std=c++17",
            "-O3",
            "-fno-math-errno",  # as setup.py: sqrt loops vectorize
            "-pthread",
            # As setup.py: TF/Eigen/absl headers trip these.
            "-Wno-deprecated-declarations",
            "-Wno-interference-size",
            "-Wno-sign-compare",
            "-Wno-unused-but-set-parameter",
        ] + copts,
        linkopts = ["-pthread"] + linkopts,
        linkshared = 1,
        deps = deps + ["@local_config_tf//:tensorflow"],
        **kwargs
    )
