"""The fuzz's calls to the kernel-tree ops, the fused loss and the sparse
optimizer steps (run by child_scripts.fuzz; tests/test_bad_input.py)."""
import numpy as np

import tf_sampled as tfs
from child_scripts.fuzz_args import HUGE_COUNTS, FuzzArgs, fuzz_counter

I64_MAX = 2**63 - 1
HUGE = list(HUGE_COUNTS)


def _built(feature_map):
    try:
        tfs.features.get(feature_map)
    except ValueError:
        return False
    return True


FEATURE_MAPS = [name for name in ("quadratic", "random_fourier", "positive_random",
                                  "gaussian_moments") if _built(name)]
RANDOM_MAPS = ("random_fourier", "positive_random")
BAD_FLOATS = [np.nan, np.inf, -np.inf, 3e38, -3e38]


class Fuzz(FuzzArgs):
    """Calls on a small random table (setup) and its tree; see child_scripts.fuzz."""

    OPS = [("build", "tf_sampled_kernel_tree_build"),
           ("update", "tf_sampled_kernel_tree_update"),
           ("refresh_rows", "tf_sampled_kernel_tree_refresh_rows"),
           ("sample", "tf_sampled_kernel_tree_sample"),
           ("log_prob", "tf_sampled_kernel_tree_log_prob"),
           ("candidate_sampler", "tf_sampled_kernel_tree_candidate_sampler"),
           ("loss", "tf_sampled_sampled_softmax_loss"),
           ("resource_loss", "tf_sampled_resource_sampled_softmax_loss"),
           ("loss_grad", "tf_sampled_sampled_softmax_loss_grad"),
           ("sparse_sgd", "tf_sampled_sparse_apply_sgd"),
           ("sparse_lazy_adam", "tf_sampled_sparse_apply_lazy_adam"),
           ("sparse_adagrad", "tf_sampled_sparse_apply_adagrad")]
    PROBABILITIES = [0.05, 0.15, 0.3, 0.5]
    DESCRIBE_VALUES = True

    def __init__(self, rng, lib):
        super().__init__(rng, bad_ints=())
        self.lib = lib

    def check_output(self, name, out, s):
        """The fused loss's gradient names each class once, in order."""
        if name == "loss_grad":  # distinct ids, ascending
            ids = out[0].numpy()
            if np.any(np.diff(ids) <= 0):
                return "loss_grad returned unsorted or repeated ids"
        return None

    def randn(self, shape):
        return self.rng.standard_normal(shape).astype(np.float32)

    def bad_shape(self, shape):
        """A small shape near `shape`: a dim changed, added or dropped."""
        rng, pick = self.rng, self.pick
        shape = list(shape)
        how = pick(["dim", "dim", "add", "drop", "scalar", "zero"])
        if how == "dim" and shape:
            i = int(rng.integers(len(shape)))
            shape[i] = pick([0, 1, shape[i] + 1, max(shape[i] - 1, 0), int(rng.integers(0, 6))])
        elif how == "add" and len(shape) < 4:
            shape.insert(int(rng.integers(len(shape) + 1)), int(rng.integers(0, 3)))
        elif how == "drop" and shape:
            shape.pop(int(rng.integers(len(shape))))
        elif how == "scalar":
            shape = []
        elif shape:
            shape[int(rng.integers(len(shape)))] = 0
        return shape

    def float_arg(self, value, dtype=np.float32):
        """A malformed version of the valid array `value`."""
        value = np.asarray(value, dtype)
        how = self.pick(["shape", "nonfinite", "nonfinite", "dtype", "empty"])
        if how == "shape":
            return np.asarray(self.rng.standard_normal(self.bad_shape(value.shape)), dtype)
        if how == "nonfinite":
            value = value.copy()
            if value.size:
                value.flat[int(self.rng.integers(value.size))] = self.pick(BAD_FLOATS)
            return value
        if how == "dtype":
            return value.astype(self.pick([np.float64, np.float32, np.int32, np.int64]))
        return np.zeros([0] + list(value.shape[1:]), dtype)

    def id_arg(self, value, num_classes):
        """A malformed version of the valid class ids `value`."""
        value = np.asarray(value, np.int64)
        how = self.pick(["value", "value", "value", "shape", "dtype"])
        if how == "value":
            value = value.copy()
            if value.size:
                value.flat[int(self.rng.integers(value.size))] = self.pick(
                    [-1, num_classes, num_classes + 1, -(2**63), I64_MAX, 2**40, -7])
            return value
        if how == "shape":
            return self.rng.integers(-2, num_classes + 2,
                                     size=self.bad_shape(value.shape)).astype(np.int64)
        return value.astype(self.pick([np.int32, np.float32, np.uint8]))

    def maybe_bad(self, p, valid, bad):
        """`valid`, or with probability p bad()."""
        return bad() if self.chance(p) else valid

    def attrs(self, s, rows=False):
        pick, chance = self.pick, self.chance
        a = {"feature_map": s["fmap"], "alpha": float(pick([1.0, 100.0])),
             "temperature": float(pick([0.5, 1.0])), "leaf_size": s["leaf"]}
        if rows:  # build and update: whether the last column of rows is a bias
            a["has_bias"] = s["has_biases"] if chance(0.9) else not s["has_biases"]
        if chance(0.15):
            a["leaf_size"] = pick([0, -1, -(2**63), 100] + HUGE)
        if chance(0.1):
            a["temperature"] = pick([0.0, -1.0, np.nan, np.inf, 1e-30, 1e30])
        if chance(0.1):
            a["alpha"] = pick([0.0, -1.0, np.nan, np.inf, 1e-30, 1e30])
        if chance(0.05):
            a["feature_map"] = pick(["bogus", "", "Quadratic"])
        return a

    def setup(self):
        """A small valid table and its tree."""
        rng, randn = self.rng, self.randn
        c, d, m = int(rng.integers(1, 10)), int(rng.integers(1, 5)), int(rng.integers(1, 5))
        fmap = self.pick(FEATURE_MAPS)
        has_biases = bool(self.chance(0.5))
        fmap_obj = tfs.features.get(fmap)
        width = (fmap_obj.feature_dim(d + has_biases, has_biases)
                 if hasattr(fmap_obj, "feature_dim") else d + has_biases)
        leaf = int(rng.integers(1, 5))
        emb = randn((c, d))
        biases = randn((c,)) if has_biases else np.zeros([0], np.float32)
        omega = (randn((m, width)) if fmap in RANDOM_MAPS or self.chance(0.5)
                 else np.zeros([0, width], np.float32))
        rows = np.concatenate([emb, biases[:, None]], 1) if has_biases else emb
        nodes = self.lib.tf_sampled_kernel_tree_build(
            rows=rows, omega=omega, feature_map=fmap, leaf_size=leaf,
            has_bias=has_biases).numpy()
        return dict(c=c, d=d, fmap=fmap, leaf=leaf, emb=emb, biases=biases, omega=omega,
                    has_biases=has_biases, rows=rows, nodes=nodes,
                    inputs=randn((int(rng.integers(0, 4)), d)))

    def tree_args(self, s, p):
        maybe, float_arg = self.maybe_bad, self.float_arg
        nodes = s["nodes"]
        if self.chance(p):
            how = self.pick(["shape", "nonfinite", "dtype", "negative"])
            if how == "shape":
                nodes = self.rng.standard_normal(self.bad_shape(nodes.shape))
            elif how == "nonfinite":
                nodes = float_arg(nodes, np.float64)
            elif how == "dtype":
                nodes = nodes.astype(np.float32)
            else:
                nodes = -np.abs(nodes) * 1e300
        return dict(
            nodes=nodes,
            embeddings=maybe(p, s["emb"], lambda: float_arg(s["emb"])),
            biases=maybe(p, s["biases"], lambda: float_arg(
                s["biases"] if s["biases"].size else self.randn((s["c"],)))),
            omega=maybe(p, s["omega"], lambda: float_arg(s["omega"])),
            inputs=maybe(p, s["inputs"], lambda: float_arg(s["inputs"])),
        )

    def seeds(self):
        """seed and seed2 attributes, sometimes out of range."""
        if self.chance(0.1):
            return dict(seed=int(self.pick([-1, I64_MAX, -(2**63)])),
                        seed2=int(self.rng.integers(-5, 5)))
        return dict(seed=int(self.rng.integers(0, 100)), seed2=int(self.rng.integers(0, 100)))

    def num_sampled_attr(self):
        if self.chance(0.2):
            return self.pick([0, -1, -(2**63)] + HUGE)
        return int(self.rng.integers(1, 7))

    def call_build(self, s, p):
        maybe, float_arg = self.maybe_bad, self.float_arg
        return dict(rows=maybe(p, s["rows"], lambda: float_arg(s["rows"])),
                    omega=maybe(p, s["omega"], lambda: float_arg(s["omega"])),
                    **self.attrs(s, rows=True))

    def call_update(self, s, p):
        maybe, float_arg, id_arg = self.maybe_bad, self.float_arg, self.id_arg
        ids = self.rng.integers(0, s["c"], size=int(self.rng.integers(0, 4))).astype(np.int64)
        old, new = s["rows"][ids], self.randn(s["rows"][ids].shape)
        num_classes = np.int64(s["c"])
        if self.chance(p):
            num_classes = self.pick([np.int64(0), np.int64(-1), np.int64(I64_MAX),
                                     np.int64(2**62), np.array([s["c"]], np.int64),
                                     np.int32(s["c"])])
        return dict(ids=maybe(p, ids, lambda: id_arg(ids, s["c"])),
                    old_rows=maybe(p, old, lambda: float_arg(old)),
                    new_rows=maybe(p, new, lambda: float_arg(new)),
                    omega=maybe(p, s["omega"], lambda: float_arg(s["omega"])),
                    num_classes=num_classes, **self.attrs(s, rows=True))

    def call_refresh_rows(self, s, p):
        maybe = self.maybe_bad
        ids = self.rng.integers(0, s["c"], size=int(self.rng.integers(0, 4))).astype(np.int64)
        args = self.tree_args(s, p)
        del args["inputs"]
        return dict(rows=maybe(p, s["rows"], lambda: self.float_arg(s["rows"])),
                    ids=maybe(p, ids, lambda: self.id_arg(ids, s["c"])), **args,
                    **self.attrs(s))

    def prior_weight(self, p):
        """The log-uniform share of the proposal: in [0, 1], or sometimes not."""
        if self.chance(p):
            return float(self.pick([-0.5, 1.5, float("nan"), float("inf"), -float("inf")]))
        return float(self.pick([0.0, 0.5, 1.0, self.rng.random()]))

    def call_sample(self, s, p):
        truth = self.rng.integers(0, s["c"], size=(len(s["inputs"]), int(self.rng.integers(0, 3))))
        return dict(true_classes=self.maybe_bad(p, truth, lambda: self.id_arg(truth, s["c"])),
                    counter=fuzz_counter(self.rng, p), num_sampled=self.num_sampled_attr(),
                    prior_weight=self.prior_weight(p), **self.seeds(), **self.tree_args(s, p),
                    **self.attrs(s))

    def call_log_prob(self, s, p):
        classes = self.rng.integers(0, s["c"],
                                    size=(len(s["inputs"]), int(self.rng.integers(0, 4))))
        return dict(classes=self.maybe_bad(p, classes, lambda: self.id_arg(classes, s["c"])),
                    prior_weight=self.prior_weight(p), **self.tree_args(s, p), **self.attrs(s))

    def call_candidate_sampler(self, s, p):
        rng, pick, chance = self.rng, self.pick, self.chance
        num_true = int(rng.integers(1, 3))
        truth = rng.integers(0, s["c"], size=(len(s["inputs"]), num_true))
        unique = bool(chance(0.5))
        num_sampled = self.num_sampled_attr()
        if unique and chance(0.3):
            num_sampled = s["c"] + int(rng.integers(1, 3))  # > range_max
        elif unique and s["c"] < num_sampled < 2**40:
            num_sampled = s["c"]
        range_max = s["c"]
        if chance(p):
            range_max = pick([0, -1, s["c"] + 1, max(s["c"] - 1, 1), 2**62, I64_MAX])
        if chance(p):
            num_true = pick([0, -1, num_true + 1, 2**62])
        return dict(true_classes=self.maybe_bad(p, truth, lambda: self.id_arg(truth, s["c"])),
                    counter=fuzz_counter(rng, p), num_true=num_true, num_sampled=num_sampled,
                    unique=unique, range_max=range_max, prior_weight=self.prior_weight(p),
                    **self.seeds(), **self.tree_args(s, p), **self.attrs(s))

    def loss_columns(self, s):
        batch = len(s["inputs"])
        labels = self.rng.integers(0, s["c"], size=(batch, int(self.rng.integers(1, 3))))
        sampled = self.rng.integers(0, s["c"], size=(batch, int(self.rng.integers(1, 4))))
        return labels, sampled

    def call_loss(self, s, p):
        maybe, float_arg, id_arg = self.maybe_bad, self.float_arg, self.id_arg
        labels, sampled = self.loss_columns(s)
        slc, tlc = self.randn(sampled.shape), self.randn(labels.shape)
        return dict(inputs=maybe(p, s["inputs"], lambda: float_arg(s["inputs"])),
                    weights=maybe(p, s["emb"], lambda: float_arg(s["emb"])),
                    biases=maybe(p, s["biases"], lambda: float_arg(
                        s["biases"] if s["biases"].size else self.randn((s["c"],)))),
                    labels=maybe(p, labels, lambda: id_arg(labels, s["c"])),
                    sampled=maybe(p, sampled, lambda: id_arg(sampled, s["c"])),
                    sampled_log_count=maybe(p, slc, lambda: float_arg(slc)),
                    true_log_count=maybe(p, tlc, lambda: float_arg(tlc)),
                    remove_accidental_hits=bool(self.chance(0.5)),
                    subtract_log_q_true=bool(self.chance(0.5)))

    def call_resource_loss(self, s, p):
        kwargs = self.call_loss(s, p)
        kwargs["has_biases"] = s["has_biases"] if self.chance(0.9) else not s["has_biases"]
        return kwargs

    def call_loss_grad(self, s, p):
        maybe, float_arg, id_arg = self.maybe_bad, self.float_arg, self.id_arg
        labels, sampled = self.loss_columns(s)
        batch, columns = len(s["inputs"]), labels.shape[1] + sampled.shape[1]
        loss_grad, logit_grads = self.randn((batch,)), self.randn((batch, columns))
        return dict(loss_grad=maybe(p, loss_grad, lambda: float_arg(loss_grad)),
                    logit_grads=maybe(p, logit_grads, lambda: float_arg(logit_grads)),
                    inputs=maybe(p, s["inputs"], lambda: float_arg(s["inputs"])),
                    labels=maybe(p, labels, lambda: id_arg(labels, s["c"])),
                    sampled=maybe(p, sampled, lambda: id_arg(sampled, s["c"])))

    def call_sparse_apply(self, s, p, slots, scalars):
        rng, pick, maybe = self.rng, self.pick, self.maybe_bad
        shape = pick([(s["c"], s["d"]), (s["c"],), (s["c"], s["d"], 2)])
        n = int(rng.integers(0, 5))
        ids = rng.integers(0, s["c"], size=n).astype(pick([np.int64, np.int32]))
        grads = self.randn((n,) + shape[1:])
        kwargs = {}
        for name in ("var",) + slots:
            value = np.abs(self.randn(shape))
            kwargs[name] = maybe(p, value, lambda: self.float_arg(value))
        kwargs["indices"] = maybe(p, ids, lambda: self.id_arg(ids, s["c"]))
        kwargs["grads"] = maybe(p, grads, lambda: self.float_arg(grads))
        for name in scalars:
            kwargs[name] = maybe(p, np.float32(rng.random()), lambda: pick(
                [np.float32(np.nan), np.float32(-np.inf), np.array([0.1], np.float32),
                 np.float64(0.1), np.zeros([0], np.float32)]))
        return kwargs

    def call_sparse_sgd(self, s, p):
        return self.call_sparse_apply(s, p, (), ("lr",))

    def call_sparse_lazy_adam(self, s, p):
        return self.call_sparse_apply(s, p, ("m", "v"), ("lr", "beta1", "beta2", "epsilon"))

    def call_sparse_adagrad(self, s, p):
        return self.call_sparse_apply(s, p, ("accumulator",), ("lr", "epsilon"))
