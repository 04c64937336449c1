"""TensorFlow-free harness for the CUDA core (custom_ops/cuda).

    python -m tools.cuda_harness                # build with nvcc, run every check
    python -m tools.cuda_harness --build-only   # compile only (what CI can do without a GPU)
    python -m tools.cuda_harness --sanitizer    # the malformed cases under compute-sanitizer

Builds one shared library with nvcc (custom_ops/cuda/nvcc.sh, the command
line every build of the CUDA core uses) from the CUDA core, the C++ core
(custom_ops/core/*.cc) and a small C API (tests/cuda_harness/), loads it with ctypes and checks the GPU against
the C++ core on the same inputs: node sums and log q equal within float
tolerance, sampled frequencies passing a chi-square test against the exact q,
incremental updates equal to a rebuild, malformed sizes and values rejected
with InvalidArgument and a healthy context afterwards. Without a CUDA device
the checks are skipped (exit status 0, a line says so) after the build.
"""
import argparse
import ctypes
import math
import os
import shutil
import subprocess
import sys
from glob import glob

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_ARCH = os.environ.get("TF_SAMPLED_CUDA_ARCH", "sm_90")
BUILD_DIR = os.path.join(ROOT, "build", "cuda_harness")
NVCC_SH = os.path.join(ROOT, "custom_ops", "cuda", "nvcc.sh")

KINDS = {"quadratic": 0, "random_fourier": 1, "positive_random": 2, "gaussian_moments": 3}


def sources():
    """The CUDA core, the harness's C API and the C++ core it is checked against."""
    return (sorted(glob(os.path.join(ROOT, "custom_ops", "cuda", "*.cu")))
            + sorted(glob(os.path.join(ROOT, "tests", "cuda_harness", "*.cu")))
            + sorted(glob(os.path.join(ROOT, "custom_ops", "core", "*.cc"))))


def find_nvcc():
    found = shutil.which("nvcc")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
            return os.path.join(home, "bin", "nvcc")
    return None


def build(arch=DEFAULT_ARCH, out_dir=BUILD_DIR, force=False):
    """Compiles the harness library (skipped when it is newer than every source)."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise FileNotFoundError("nvcc not found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin)")
    os.makedirs(out_dir, exist_ok=True)
    output = os.path.join(out_dir, f"libtf_sampled_cuda_harness_{arch}.so")
    headers = glob(os.path.join(ROOT, "custom_ops", "**", "*.h*"), recursive=True) + [NVCC_SH]
    newest = max(os.path.getmtime(p) for p in sources() + headers)
    if not force and os.path.exists(output) and os.path.getmtime(output) > newest:
        return output
    command = ["bash", NVCC_SH, "-shared", "-lineinfo"] + sources() + ["-o", output]
    env = dict(os.environ, NVCC=nvcc, TF_SAMPLED_CUDA_ARCHS=arch.removeprefix("sm_"))
    print(" ".join(command), flush=True)
    subprocess.check_call(command, env=env)
    return output


class TscSpec(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int), ("bias_is_weight", ctypes.c_int),
                ("dim", ctypes.c_int64), ("omega", ctypes.c_void_p),
                ("num_omega", ctypes.c_int64), ("alpha", ctypes.c_double),
                ("temperature", ctypes.c_double), ("num_classes", ctypes.c_int64),
                ("leaf_size", ctypes.c_int64)]


class TscTable(ctypes.Structure):
    _fields_ = [("nodes", ctypes.c_void_p), ("num_node_values", ctypes.c_int64),
                ("embeddings", ctypes.c_void_p), ("num_embedding_values", ctypes.c_int64),
                ("biases", ctypes.c_void_p), ("d", ctypes.c_int64)]


def _ptr(array):
    return None if array is None else array.ctypes.data_as(ctypes.c_void_p)


class Harness:
    """The harness library with NumPy-friendly calls; GPU calls return (code, message)."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.tsc_gpu_available.restype = ctypes.c_int
        for name in ("tsc_gpu_build", "tsc_gpu_sample", "tsc_gpu_log_prob",
                     "tsc_gpu_apply_updates", "tsc_gpu_update_deltas", "tsc_gpu_check_context",
                     "tsc_cpu_build", "tsc_cpu_sample", "tsc_cpu_log_prob",
                     "tsc_cpu_update_deltas", "tsc_gpu_bench", "tsc_cpu_bench"):
            getattr(self.lib, name).restype = ctypes.c_int
        self.error = ctypes.create_string_buffer(1024)

    def gpu_available(self):
        return bool(self.lib.tsc_gpu_available())

    def _result(self, code):
        return code, self.error.value.decode()

    # Every call takes a Problem (below) and plain NumPy arrays.
    def gpu_build(self, p, rows=None, **claimed):
        rows = p.rows if rows is None else rows
        spec = p.spec(**claimed)
        nodes = np.zeros(p.nodes_shape, np.float64)
        code = self.lib.tsc_gpu_build(ctypes.byref(spec), _ptr(rows), ctypes.c_int64(rows.shape[0]),
                                      _ptr(nodes), ctypes.c_int64(nodes.size), self.error, 1024)
        return self._result(code) + (nodes,)

    def cpu_build(self, p, rows=None):
        rows = p.rows if rows is None else rows
        nodes = np.zeros(p.nodes_shape, np.float64)
        if self.lib.tsc_cpu_build(ctypes.byref(p.spec()), _ptr(rows), _ptr(nodes)):
            raise ValueError("C++ core: a row is not finite")
        return nodes

    def gpu_sample(self, p, inputs, num_sampled, true_classes, seed=1, batch=None, **claimed):
        batch = inputs.shape[0] if batch is None else batch
        rows = max(batch, 0)
        ids = np.zeros((rows, max(num_sampled, 0)), np.int64)
        log_q = np.zeros(ids.shape, np.float32)
        true_log_q = np.zeros(true_classes.shape, np.float32)
        code = self.lib.tsc_gpu_sample(
            ctypes.byref(p.spec(**claimed)), ctypes.byref(p.table()), _ptr(inputs),
            ctypes.c_int64(batch), ctypes.c_int64(num_sampled), _ptr(true_classes),
            ctypes.c_int64(true_classes.shape[1]), ctypes.c_uint64(seed), _ptr(ids),
            _ptr(log_q), _ptr(true_log_q), self.error, 1024)
        return self._result(code) + (ids, log_q, true_log_q)

    def cpu_sample(self, p, inputs, num_sampled, seed=1):
        ids = np.zeros((inputs.shape[0], num_sampled), np.int64)
        log_q = np.zeros(ids.shape, np.float32)
        if self.lib.tsc_cpu_sample(ctypes.byref(p.spec()), ctypes.byref(p.table()), _ptr(inputs),
                                   ctypes.c_int64(inputs.shape[0]), ctypes.c_int64(num_sampled),
                                   ctypes.c_uint64(seed), _ptr(ids), _ptr(log_q)):
            raise ValueError("C++ core: a row is not finite")
        return ids, log_q

    def gpu_log_prob(self, p, inputs, classes, n=None, **claimed):
        n = classes.shape[1] if n is None else n
        log_q = np.zeros(classes.shape, np.float32)
        code = self.lib.tsc_gpu_log_prob(
            ctypes.byref(p.spec(**claimed)), ctypes.byref(p.table()), _ptr(inputs),
            ctypes.c_int64(inputs.shape[0]), _ptr(classes), ctypes.c_int64(n), _ptr(log_q),
            self.error, 1024)
        return self._result(code) + (log_q,)

    def cpu_log_prob(self, p, inputs, classes):
        log_q = np.zeros(classes.shape, np.float32)
        if self.lib.tsc_cpu_log_prob(ctypes.byref(p.spec()), ctypes.byref(p.table()),
                                     _ptr(inputs), ctypes.c_int64(inputs.shape[0]),
                                     _ptr(classes), ctypes.c_int64(classes.shape[1]),
                                     _ptr(log_q)):
            raise ValueError("C++ core: a row is not finite")
        return log_q

    def gpu_apply_updates(self, p, nodes, ids, old_rows, new_rows, n=None):
        n = ids.shape[0] if n is None else n
        nodes = nodes.copy()
        code = self.lib.tsc_gpu_apply_updates(
            ctypes.byref(p.spec()), _ptr(nodes), ctypes.c_int64(nodes.size), _ptr(ids),
            _ptr(old_rows), _ptr(new_rows), ctypes.c_int64(n), self.error, 1024)
        return self._result(code) + (nodes,)

    def _deltas(self, fn, p, ids, old_rows, new_rows, with_error):
        capacity = max(ids.shape[0], 1) * 64
        count = ctypes.c_int64(0)
        node_ids = np.zeros(capacity, np.int64)
        deltas = np.zeros((capacity, p.num_features), np.float64)
        args = [ctypes.byref(p.spec()), _ptr(ids), _ptr(old_rows), _ptr(new_rows),
                ctypes.c_int64(ids.shape[0]), ctypes.c_int64(capacity), ctypes.byref(count),
                _ptr(node_ids), _ptr(deltas)]
        code = fn(*(args + ([self.error, 1024] if with_error else [])))
        k = count.value
        return code, node_ids[:k], deltas[:k]

    def gpu_update_deltas(self, p, ids, old_rows, new_rows):
        code, node_ids, deltas = self._deltas(self.lib.tsc_gpu_update_deltas, p, ids,
                                              old_rows, new_rows, True)
        return self._result(code) + (node_ids, deltas)

    def cpu_update_deltas(self, p, ids, old_rows, new_rows):
        code, node_ids, deltas = self._deltas(self.lib.tsc_cpu_update_deltas, p, ids,
                                              old_rows, new_rows, False)
        if code:
            raise ValueError("C++ core: a row is not finite")
        return node_ids, deltas

    def check_context(self):
        return self._result(self.lib.tsc_gpu_check_context(self.error, 1024))


class Problem:
    """A random class table and feature map, as the ops would see it."""

    def __init__(self, kind, num_classes=300, d=8, leaf_size=7, num_omega=32, bias=True,
                 seed=0, temperature=1.0, alpha=4.0):
        rng = np.random.default_rng(seed)
        self.kind, self.num_classes, self.d, self.leaf_size = kind, num_classes, d, leaf_size
        self.temperature, self.alpha = temperature, alpha
        self.embeddings = (rng.standard_normal((num_classes, d)) / math.sqrt(d)).astype(np.float32)
        self.biases = (0.3 * rng.standard_normal(num_classes)).astype(np.float32) if bias else None
        self.bias_is_weight = bias and kind in ("positive_random", "gaussian_moments")
        self.dim = d + (1 if bias else 0)
        feature_dim = self.dim - (1 if self.bias_is_weight else 0)
        self.num_omega = num_omega if kind in ("random_fourier", "positive_random") else 0
        self.omega = rng.standard_normal((max(self.num_omega, 1), feature_dim)).astype(np.float32)
        self.rows = self.augment(self.embeddings, self.biases)
        self.num_features = {"quadratic": feature_dim * (feature_dim + 1) // 2 + 1,
                             "random_fourier": 2 * self.num_omega,
                             "positive_random": self.num_omega,
                             "gaussian_moments": 2 * feature_dim + 1}[kind]
        num_leaves = -(-num_classes // leaf_size)
        self.nodes_shape = (2 * num_leaves, self.num_features)
        self.nodes = None  # set by the checks (the CPU build)
        self._keep = []

    def augment(self, embeddings, biases):
        if biases is None:
            return np.ascontiguousarray(embeddings, np.float32)
        return np.ascontiguousarray(np.concatenate([embeddings, biases[:, None]], 1), np.float32)

    def spec(self, **claimed):
        values = dict(kind=KINDS[self.kind], bias_is_weight=int(self.bias_is_weight),
                      dim=self.dim, omega=self.omega.ctypes.data, num_omega=self.num_omega,
                      alpha=self.alpha, temperature=self.temperature,
                      num_classes=self.num_classes, leaf_size=self.leaf_size)
        values.update(claimed)
        return TscSpec(**values)

    def table(self):
        nodes = self.nodes if self.nodes is not None else np.zeros(self.nodes_shape)
        self._keep = [nodes]
        return TscTable(nodes.ctypes.data, nodes.size, self.embeddings.ctypes.data,
                        self.embeddings.size,
                        None if self.biases is None else self.biases.ctypes.data, self.d)

    def inputs(self, batch, seed=1, scale=2.0):
        rng = np.random.default_rng(seed)
        return (scale * rng.standard_normal((batch, self.d)) / math.sqrt(self.d)).astype(np.float32)


# ---- statistics ----------------------------------------------------------------------

def chi_square_p(observed, expected, min_expected=5.0):
    """Pearson's test with bins of expected count < min_expected pooled; the
    p-value by the Wilson-Hilferty approximation (no SciPy needed)."""
    order = np.argsort(expected)
    obs, exp = observed[order].astype(np.float64), expected[order].astype(np.float64)
    small = np.cumsum(exp) < min_expected * 2
    pooled_obs = [obs[small].sum()] if small.any() else []
    pooled_exp = [exp[small].sum()] if small.any() else []
    obs = np.concatenate([pooled_obs, obs[~small]])
    exp = np.concatenate([pooled_exp, exp[~small]])
    stat = float(((obs - exp) ** 2 / exp).sum())
    dof = len(obs) - 1
    z = ((stat / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return 0.5 * math.erfc(z / math.sqrt(2)), stat, dof


# ---- checks ----------------------------------------------------------------------------

class Failure(AssertionError):
    pass


def expect(condition, message):
    if not condition:
        raise Failure(message)


def check_ok(result, what):
    code, message = result[0], result[1]
    expect(code == 0, f"{what}: GPU call failed ({code}): {message}")
    return result[2:]


def check_build(h, p):
    (gpu_nodes,) = check_ok(h.gpu_build(p), "build")
    cpu_nodes = h.cpu_build(p)
    scale = np.abs(cpu_nodes).max(axis=1, keepdims=True) + 1e-300
    err = float((np.abs(gpu_nodes - cpu_nodes) / scale).max())
    expect(err < 1e-4, f"build {p.kind}: node sums differ from the C++ core by {err:.3g} (relative)")
    p.nodes = cpu_nodes


def check_log_prob(h, p, batch=16, n=24):
    inputs = p.inputs(batch)
    classes = np.random.default_rng(2).integers(0, p.num_classes, (batch, n)).astype(np.int64)
    (gpu,) = check_ok(h.gpu_log_prob(p, inputs, classes), "log_prob")
    cpu = h.cpu_log_prob(p, inputs, classes)
    err = float(np.abs(gpu - cpu).max())
    expect(err < 2e-4, f"log_prob {p.kind}: log q differs from the C++ core by {err:.3g}")


def exact_q(h, p, inputs):
    """q(c | inputs[0]) for every class, from the C++ core's log q."""
    all_classes = np.arange(p.num_classes, dtype=np.int64)[None, :]
    return h.cpu_log_prob(p, inputs, all_classes)[0].astype(np.float64)


def check_cpu_reference(h, p, draws=40000):
    """The harness's own machinery (problem set-up, exact q, chi-square) on
    the C++ core alone: runs without a GPU."""
    p.nodes = h.cpu_build(p)
    inputs = p.inputs(1, seed=3)
    exact = exact_q(h, p, inputs)
    expect(abs(np.exp(exact).sum() - 1) < 1e-4, f"{p.kind}: exact q sums to {np.exp(exact).sum()}")
    ids, log_q = h.cpu_sample(p, inputs, draws, seed=11)
    err = float(np.abs(log_q[0] - exact[ids[0]]).max())
    expect(err < 2e-4, f"C++ core {p.kind}: sampled log q differs from log_prob by {err:.3g}")
    pvalue, stat, dof = chi_square_p(np.bincount(ids[0], minlength=p.num_classes),
                                     np.exp(exact) * draws)
    expect(pvalue > 1e-4, f"C++ core {p.kind}: chi-square {stat:.1f} on {dof} dof, p = {pvalue:.2g}")


def check_sample(h, p, draws=40000):
    """One query drawn many times: chi-square against the exact q (the C++
    core's log q of every class), and every returned log q equal to it."""
    inputs = p.inputs(1, seed=3)
    exact = exact_q(h, p, inputs)
    q = np.exp(exact)
    expect(abs(q.sum() - 1) < 1e-4, f"{p.kind}: exact q sums to {q.sum()}")
    truth = np.array([[5, p.num_classes - 1]], np.int64)
    ids, log_q, true_log_q = check_ok(h.gpu_sample(p, inputs, draws, truth, seed=11), "sample")
    ids = ids[0]
    expect(ids.min() >= 0 and ids.max() < p.num_classes, f"{p.kind}: sampled id out of range")
    err = float(np.abs(log_q[0] - exact[ids]).max())
    expect(err < 2e-4, f"sample {p.kind}: returned log q differs from the exact one by {err:.3g}")
    err = float(np.abs(true_log_q[0] - exact[truth[0]]).max())
    expect(err < 2e-4, f"sample {p.kind}: true_log_q differs by {err:.3g}")
    counts = np.bincount(ids, minlength=p.num_classes)
    pvalue, stat, dof = chi_square_p(counts, q * draws)
    expect(pvalue > 1e-4, f"sample {p.kind}: chi-square {stat:.1f} on {dof} dof, p = {pvalue:.2g}")
    # Draws are iid and in random order: the first and second halves agree.
    half = draws // 2
    expect(abs(np.mean(ids[:half] < p.num_classes // 2) - np.mean(ids[half:] < p.num_classes // 2))
           < 0.05, f"sample {p.kind}: draw order is not random")
    # Same seed, same draws; many queries at once give per-query log q.
    batch = 64
    many = p.inputs(batch, seed=4)
    no_truth = np.zeros((batch, 0), np.int64)
    ids_a, lq_a, _ = check_ok(h.gpu_sample(p, many, 33, no_truth, seed=5), "sample batch")
    ids_b, _, _ = check_ok(h.gpu_sample(p, many, 33, no_truth, seed=5), "sample batch")
    expect(np.array_equal(ids_a, ids_b), f"sample {p.kind}: not reproducible for a fixed seed")
    cpu = h.cpu_log_prob(p, many, ids_a)
    err = float(np.abs(lq_a - cpu).max())
    expect(err < 2e-4, f"sample {p.kind}: batch log q differs from the C++ core by {err:.3g}")


def check_updates(h, p):
    """Touched rows (several per leaf, so paths share nodes) updated in place
    and as (node_ids, deltas): both equal to a rebuild / the C++ core."""
    rng = np.random.default_rng(7)
    ids = np.unique(np.concatenate([np.arange(0, min(p.leaf_size * 2, p.num_classes)),
                                    rng.integers(0, p.num_classes, 40)])).astype(np.int64)
    rng.shuffle(ids)
    new_rows = p.rows.copy()
    new_rows[ids] += (0.2 * rng.standard_normal((len(ids), p.dim))).astype(np.float32)
    old, new = np.ascontiguousarray(p.rows[ids]), np.ascontiguousarray(new_rows[ids])
    (updated,) = check_ok(h.gpu_apply_updates(p, p.nodes, ids, old, new), "apply updates")
    rebuilt = h.cpu_build(p, new_rows)
    scale = np.abs(rebuilt).max(axis=1, keepdims=True) + 1e-300
    err = float((np.abs(updated - rebuilt) / scale).max())
    expect(err < 1e-4, f"update {p.kind}: in-place update differs from a rebuild by {err:.3g}")
    gpu_ids, gpu_deltas = check_ok(h.gpu_update_deltas(p, ids, old, new), "update deltas")
    cpu_ids, cpu_deltas = h.cpu_update_deltas(p, ids, old, new)
    expect(np.array_equal(gpu_ids, cpu_ids), f"update {p.kind}: node ids differ from the C++ core")
    scale = np.abs(cpu_deltas).max() + 1e-300
    err = float(np.abs(gpu_deltas - cpu_deltas).max() / scale)
    expect(err < 1e-4, f"update {p.kind}: node deltas differ from the C++ core by {err:.3g}")


def malformed_cases(p):
    """(name, call(h) -> (code, message, ...), expected substring) for bad
    sizes and values: every one must come back as InvalidArgument (code 1)."""
    inputs = p.inputs(4)
    truth = np.zeros((4, 1), np.int64)
    bad_truth = truth.copy()
    bad_truth[2, 0] = p.num_classes
    neg_truth = truth.copy()
    neg_truth[1, 0] = -1
    nan_inputs = inputs.copy()
    nan_inputs[3, 1] = np.nan
    nan_rows = p.rows.copy()
    nan_row = min(p.leaf_size + 1, p.num_classes - 1)
    nan_rows[nan_row, 0] = np.inf
    ids = np.array([1, 2], np.int64)
    rows2 = np.ascontiguousarray(p.rows[:2])
    nan_rows2 = rows2.copy()
    nan_rows2[1, 0] = np.nan
    bad_ids = np.array([1, p.num_classes + 3], np.int64)
    nan_embeddings = Problem(p.kind, p.num_classes, p.d, p.leaf_size, max(p.num_omega, 1),
                             p.biases is not None)
    nan_embeddings.nodes = p.nodes
    nan_embeddings.embeddings[:, 0] = np.nan  # every leaf a query can reach
    omega_kind = p.num_omega > 0
    nan_omega = p.omega.copy()
    nan_omega[0, 0] = np.nan
    cases = [
        ("build leaf_size 0", lambda h: h.gpu_build(p, leaf_size=0), "leaf_size"),
        ("build num_classes 0", lambda h: h.gpu_build(p, num_classes=0), "num_classes"),
        ("build NaN row", lambda h: h.gpu_build(p, rows=nan_rows),
         f"leaf {nan_row // p.leaf_size} "),
        ("build dim 0", lambda h: h.gpu_build(p, dim=0), "columns"),
        ("sample num_sampled 0", lambda h: h.gpu_sample(p, inputs, 0, truth), "num_sampled"),
        ("sample negative batch", lambda h: h.gpu_sample(p, inputs, 3, truth, batch=-1), "batch"),
        ("sample width mismatch", lambda h: h.gpu_sample(p, inputs, 3, truth, dim=p.dim - 1), "width"),
        ("sample true id too large", lambda h: h.gpu_sample(p, inputs, 3, bad_truth), "flat index 2"),
        ("sample true id negative", lambda h: h.gpu_sample(p, inputs, 3, neg_truth), "got -1"),
        ("sample NaN input", lambda h: h.gpu_sample(p, nan_inputs, 3, truth),
         f"flat index {3 * p.d + 1}"),
        ("sample NaN embeddings", lambda h: h.gpu_sample(nan_embeddings, inputs, 3, truth), "query 0"),
        ("log_prob id too large", lambda h: h.gpu_log_prob(p, inputs, bad_truth), "classes must be in"),
        ("log_prob negative n", lambda h: h.gpu_log_prob(p, inputs, truth, n=-2), "classes"),
        ("update id too large", lambda h: h.gpu_update_deltas(p, bad_ids, rows2, rows2), "ids must be in"),
        ("update NaN row", lambda h: h.gpu_apply_updates(p, p.nodes, ids, rows2, nan_rows2), "row 1"),
        ("update negative n", lambda h: h.gpu_apply_updates(p, p.nodes, ids, rows2, rows2, n=-1), "rows"),
    ]
    if omega_kind:
        cases += [
            ("build num_omega 0", lambda h: h.gpu_build(p, num_omega=0), "omega"),
            ("build NaN omega", lambda h: h.gpu_build(p, omega=nan_omega.ctypes.data), "omega must be finite"),
        ]
    return cases, [nan_omega, nan_embeddings]  # keep arrays alive


def check_malformed(h, p):
    cases, _keep = malformed_cases(p)
    for name, call, needle in cases:
        result = call(h)
        code, message = result[0], result[1]
        expect(code == 1, f"malformed '{name}' ({p.kind}): expected InvalidArgument, got code "
                          f"{code}: {message}")
        expect(needle in message, f"malformed '{name}' ({p.kind}): message '{message}' lacks '{needle}'")
        code, message = h.check_context()
        expect(code == 0, f"malformed '{name}' ({p.kind}) left the context broken: {message}")


CHECKS = {"build": check_build, "log_prob": check_log_prob, "sample": check_sample,
          "updates": check_updates, "malformed": check_malformed}

PROBLEMS = [
    dict(kind="positive_random", bias=True),
    dict(kind="positive_random", bias=False, leaf_size=1, num_classes=100),
    dict(kind="random_fourier", bias=True, temperature=2.0),
    dict(kind="quadratic", bias=True, d=6, alpha=4.0),
    # F = 1177 features: more than one register tile of the build kernel.
    dict(kind="quadratic", bias=False, d=48, leaf_size=16, num_classes=200, alpha=0.5),
    dict(kind="gaussian_moments", bias=True),
    dict(kind="positive_random", bias=True, leaf_size=1000, num_classes=300),  # one leaf
]


def run_checks(h, only=None, problems=PROBLEMS, log=print):
    """Runs the checks (build first: the others use its node sums)."""
    failures = []
    for config in problems:
        p = Problem(**config)
        for name, check in CHECKS.items():
            if name == "build" or only is None or name in only:
                try:
                    check(h, p)
                    if only is None or name in only:
                        log(f"ok   {name:9s} {config}")
                except Failure as error:
                    failures.append(str(error))
                    log(f"FAIL {name:9s} {config}: {error}")
                    if name == "build":
                        break
    return failures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default=DEFAULT_ARCH, help="nvcc -arch (default %(default)s)")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--only", nargs="*", choices=sorted(CHECKS), help="checks to run")
    parser.add_argument("--sanitizer", action="store_true",
                        help="run the malformed cases under compute-sanitizer (memcheck)")
    args = parser.parse_args(argv)
    path = build(args.arch)
    if args.build_only:
        print(f"built {path}")
        return 0
    if args.sanitizer:
        nvcc = find_nvcc()
        sanitizer = shutil.which("compute-sanitizer") or os.path.join(
            os.path.dirname(nvcc), "compute-sanitizer")
        command = [sanitizer, "--tool", "memcheck", "--error-exitcode", "3", sys.executable,
                   "-m", "tools.cuda_harness", "--arch", args.arch, "--only", "malformed"]
        print(" ".join(command), flush=True)
        return subprocess.call(command, cwd=ROOT)
    h = Harness(path)
    if not h.gpu_available():
        print("no CUDA device: built the harness, GPU checks skipped")
        return 0
    failures = run_checks(h, args.only)
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
