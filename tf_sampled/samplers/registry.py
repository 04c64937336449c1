"""One way to name a sampler: `tfs.samplers.get(name, ...)`.

The Keras layer's `sampler=` / `sampler_options=` and the examples build
their samplers here, so a name means the same sampler everywhere.
"""
import numbers

from tf_sampled.samplers import adversarial, base, builtin, kernel, lsh

NAMES = ("uniform", "log_uniform", "unigram", "learned_unigram", "kernel", "lsh",
         "adversarial")
# The options each name takes (keyword arguments of its constructor).
OPTIONS = {"uniform": (), "log_uniform": (), "learned_unigram": (),
           "unigram": ("counts", "distortion"),
           "kernel": ("feature_map", "leaf_size", "incremental", "prior_weight"),
           "lsh": ("num_tables", "num_hashes", "bucket_size", "family", "bin_size", "query",
                   "epsilon", "rebuild_every", "rehash_every", "seed"),
           "adversarial": ("path",)}
# Names whose sampler reads the class table (the others need only num_classes).
TABLE_NAMES = ("kernel", "lsh")
# Names whose proposal ignores the inputs (TensorFlow's samplers).
INPUT_FREE_NAMES = ("uniform", "log_uniform", "unigram", "learned_unigram")


def is_input_free(sampler):
    """Whether a sampler name or instance draws the same proposal for every input."""
    if isinstance(sampler, str):
        return sampler in INPUT_FREE_NAMES
    return isinstance(sampler, builtin._InputFreeSampler)  # pylint: disable=protected-access


def check_options(name, options):
    """Validates a sampler name and its options without building anything.

    Args:
      name: one of `NAMES`.
      options: dict of the name's options (`OPTIONS[name]`).

    Raises:
      ValueError: naming the sampler, the unknown options, or a required
        option that is missing.
    """
    if not isinstance(name, str) or name not in NAMES:
        raise ValueError(f"Unknown sampler {name!r}; expected one of {NAMES} "
                         f"or a tf_sampled.samplers.Sampler instance")
    unknown = set(options) - set(OPTIONS[name])
    if unknown:
        raise ValueError(f"sampler {name!r} takes options {list(OPTIONS[name])}, got "
                         f"unknown {sorted(unknown)}")
    if name == "unigram" and "counts" not in options:
        raise ValueError("sampler 'unigram' needs options {'counts': [num_classes "
                         "class frequencies], 'distortion': ...}")
    if name == "adversarial" and not isinstance(options.get("path"), str):
        raise ValueError("sampler 'adversarial' needs options {'path': a file written "
                         "by AdversarialSampler.save} (fitted on the inputs it is queried with)")


def get(name, embeddings=None, biases=None, num_classes=None, dim=None, **options):
    """Builds the sampler called `name`.

    Args:
      name: one of `NAMES`: "uniform", "log_uniform", "unigram" (options
        `counts`, `distortion`), "learned_unigram", "kernel" (a
        `KernelSampler`: `feature_map`, `leaf_size`, `incremental`,
        `prior_weight`), "lsh" (an `LSHSampler`: `num_tables`, `num_hashes`,
        `bucket_size`, `family`,
        `bin_size`, `query`, `epsilon`, `rebuild_every`, `rehash_every`,
        `seed`) or "adversarial" (an
        `AdversarialSampler` loaded from `path`).
      embeddings: [num_classes, dim] class embeddings (a float32 variable, read
        in place), required by "kernel" and "lsh".
      biases: optional [num_classes] class biases ("kernel" targets
        exp(h . w + b) with them).
      num_classes: the number of classes; defaults to the embeddings' rows.
        Required by the input-free samplers when no embeddings are given.
      dim: the width of the inputs the sampler is queried with, checked
        against a loaded "adversarial" sampler (defaults to the embeddings'
        columns).
      **options: the name's options (`OPTIONS[name]`).

    Returns:
      A `tf_sampled.samplers.Sampler`.

    Raises:
      ValueError: for an unknown name or option, a missing required option or
        table, or a table, count list or fitted sampler whose shape disagrees
        with num_classes / dim.
    """
    check_options(name, options)
    if embeddings is not None:
        table_classes, table_dim = base.check_table_shape(embeddings.shape)
        if num_classes is not None and num_classes != table_classes:
            raise ValueError(f"num_classes={num_classes} disagrees with the embeddings' "
                             f"{table_classes} rows")
        num_classes = table_classes
        dim = table_dim if dim is None else dim
    if name in TABLE_NAMES:
        if embeddings is None:
            raise ValueError(f"sampler {name!r} reads the class table: pass embeddings "
                             f"[num_classes, dim]")
        if name == "lsh":
            return lsh.LSHSampler(embeddings, **options)
        return kernel.KernelSampler(embeddings, biases=biases, **options)
    if name == "unigram":
        counts = options["counts"]
        if num_classes is not None and len(counts) != num_classes:
            raise ValueError(f"unigram counts have {len(counts)} entries, the sampler has "
                             f"num_classes={num_classes}")
        return builtin.Unigram(counts, options.get("distortion", 1.0))
    if name == "adversarial":
        fitted = adversarial.AdversarialSampler.load(options["path"])
        expected = (num_classes if num_classes is not None else fitted.num_classes,
                    dim if dim is not None else fitted.dim)
        if (fitted.num_classes, fitted.dim) != expected:
            raise ValueError(f"the adversarial sampler at {options['path']} was fitted for "
                             f"{fitted.num_classes} classes and inputs of dim {fitted.dim}, "
                             f"expected num_classes={expected[0]} and inputs of dim "
                             f"{expected[1]}")
        return fitted
    if not isinstance(num_classes, numbers.Integral):
        raise ValueError(f"sampler {name!r} needs num_classes (or embeddings), got "
                         f"{num_classes!r}")
    by_name = {"uniform": builtin.Uniform, "log_uniform": builtin.LogUniform,
               "learned_unigram": builtin.LearnedUnigram}
    return by_name[name](num_classes)


def name_of(sampler):
    """(name, options) that `get` rebuilds `sampler` from, for the samplers whose
    state is their configuration (uniform, log-uniform, unigram, learned
    unigram); None for the others (their state is trained or fitted)."""
    if isinstance(sampler, builtin.Unigram):
        return "unigram", {"counts": [float(c) for c in sampler.counts],
                           "distortion": sampler.distortion}
    by_type = {builtin.Uniform: "uniform", builtin.LogUniform: "log_uniform",
               builtin.LearnedUnigram: "learned_unigram"}
    if type(sampler) in by_type:
        return by_type[type(sampler)], {}
    return None
