"""Builds tf_sampled and its op library with g++ and TensorFlow's own flags.

`pip install .` (and `pip install -e .`) compile every source under custom_ops/
into tf_sampled/_tf_sampled_ops*.so against the TensorFlow found in the build
environment; the package then refuses to load under another TensorFlow minor
version (the C++ ABI of custom ops is not stable across them).
"""
import os
import subprocess
import sys
from glob import glob

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
# Opt-in GPU build (README, "GPU build"): TF_SAMPLED_CUDA=1 compiles the CUDA
# core (custom_ops/cuda/*.cu) with nvcc and the GPU kernels (kernels/*_gpu.cc)
# with -DGOOGLE_CUDA=1. The default build never touches CUDA.
CUDA = os.environ.get("TF_SAMPLED_CUDA", "0") not in ("", "0")
SOURCES = sorted(
    glob(os.path.join("custom_ops", "core", "*.cc"))
    + glob(os.path.join("custom_ops", "ops", "*.cc"))
    + [s for s in glob(os.path.join("custom_ops", "kernels", "*.cc"))
       if CUDA or not s.endswith("_gpu.cc")]
)
CUDA_SOURCES = sorted(glob(os.path.join("custom_ops", "cuda", "*.cu"))) if CUDA else []
HEADERS = sorted(glob(os.path.join("custom_ops", "**", "*.h"), recursive=True))


def _compile_cuda(build_temp):
    """nvcc objects of the CUDA core (custom_ops/cuda/nvcc.sh, the one nvcc
    command line; NVCC and TF_SAMPLED_CUDA_ARCHS select the compiler and GPU
    archs), and the flags that link them."""
    cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    objects = []
    os.makedirs(build_temp, exist_ok=True)
    for source in CUDA_SOURCES:
        obj = os.path.join(build_temp, os.path.basename(source) + ".o")
        command = ["bash", os.path.join(HERE, "custom_ops", "cuda", "nvcc.sh"), "-c",
                   os.path.join(HERE, source), "-o", obj]
        print(" ".join(command))
        subprocess.check_call(command)
        objects.append(obj)
    lib_dirs = [os.path.join(cuda_home, d) for d in ("lib64", "lib")]
    return objects, (["-DGOOGLE_CUDA=1"] + [f"-L{d}" for d in lib_dirs if os.path.isdir(d)]
                     + ["-lcudart_static", "-ldl", "-lrt"])


def _tensorflow_build_info():
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    return tf.__version__, tf.sysconfig.get_compile_flags(), tf.sysconfig.get_link_flags()


class BuildTfOps(build_ext):
    """Compiles the op library with g++ instead of distutils' compiler setup."""

    def build_extension(self, ext):
        version, compile_flags, link_flags = _tensorflow_build_info()
        output = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(output), exist_ok=True)
        cxx = os.environ.get("CXX", "g++")
        cuda_objects, cuda_flags = _compile_cuda(self.build_temp) if CUDA else ([], [])
        command = (
            # -fno-math-errno: no library call per sqrt (we never read errno),
            # so the optimizer row loops vectorize.
            [cxx, "-std=c++17", "-shared", "-fPIC", "-O3", "-fno-math-errno", "-I" + HERE]
            # -Wno-psabi: see .bazelrc (harmless notes on core/simd.h's
            # always-inlined 8-float vector helpers).
            + ["-Wno-deprecated-declarations", "-Wno-interference-size", "-Wno-psabi"]
            + [os.path.join(HERE, s) for s in ext.sources]
            + cuda_objects
            + cuda_flags
            + compile_flags
            + link_flags
            + ["-o", output]
        )
        print(" ".join(command))
        subprocess.check_call(command)
        # Record the TensorFlow the library was built against next to it (and
        # in the source tree for editable installs, which copy only the .so).
        targets = [os.path.dirname(output)]
        if self.inplace or getattr(self, "editable_mode", False):
            targets.append(os.path.join(HERE, "tf_sampled"))
        for target in targets:
            with open(os.path.join(target, "_build_info.py"), "w") as f:
                f.write(f'TENSORFLOW_VERSION = "{version}"\n')


def _tensorflow_minor():
    try:
        version = _tensorflow_build_info()[0]
    except ImportError:
        return None
    return ".".join(version.split(".")[:2])


minor = _tensorflow_minor() or "2.21"

setup(
    name="tf_sampled",
    version="0.1.0",
    description="Adaptive negative samplers for sampled softmax as TensorFlow custom ops",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["tf_sampled", "tf_sampled.*"]),
    package_data={"tf_sampled": ["data/*/*"]},
    ext_modules=[Extension("tf_sampled._tf_sampled_ops", sources=SOURCES,
                           depends=HEADERS + CUDA_SOURCES)],
    cmdclass={"build_ext": BuildTfOps},
    install_requires=["numpy"],
    # The library is built against this minor version: install the CPU or the
    # GPU wheel of it (either works), e.g. `pip install .[cpu]`.
    extras_require={
        "cpu": [f"tensorflow-cpu=={minor}.*"],
        "gpu": [f"tensorflow=={minor}.*"],
        "test": ["pytest", "scipy"],
        "examples": ["absl-py", "matplotlib"],
    },
    zip_safe=False,
)
