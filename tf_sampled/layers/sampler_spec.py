"""Samplers for the SampledSoftmax layer: by name or instance, and back to config."""
import keras

from tf_sampled import _seeding
from tf_sampled import features as features_lib
from tf_sampled import samplers as samplers_lib

SAMPLER_NAMES = ("uniform", "log_uniform", "unigram", "learned_unigram", "kernel", "lsh",
                 "adversarial")
_OPTIONS = {"uniform": (), "log_uniform": (), "learned_unigram": (),
            "unigram": ("counts", "distortion"),
            "kernel": ("feature_map", "leaf_size", "incremental"),
            "lsh": ("num_tables", "num_hashes", "bucket_size", "family", "bin_size", "query",
                    "epsilon", "seed"),
            "adversarial": ("path",)}


def check_spec(sampler, options):
    """Validates a sampler name (with its options) or instance at construction.

    Returns:
      (sampler, options) with options a dict (feature_map as a config dict).
    """
    options = dict(options or {})
    if isinstance(sampler, samplers_lib.Sampler):
        if options:
            raise ValueError(f"sampler_options apply to a sampler given by name, got "
                             f"options {sorted(options)} with the instance {sampler!r}")
        return sampler, options
    if not isinstance(sampler, str) or sampler not in SAMPLER_NAMES:
        raise ValueError(f"Unknown sampler {sampler!r}; expected one of {SAMPLER_NAMES} "
                         f"or a tf_sampled.samplers.Sampler instance")
    unknown = set(options) - set(_OPTIONS[sampler])
    if unknown:
        raise ValueError(f"sampler {sampler!r} takes options {list(_OPTIONS[sampler])}, got "
                         f"unknown {sorted(unknown)}")
    if sampler == "unigram" and "counts" not in options:
        raise ValueError("sampler 'unigram' needs sampler_options={'counts': [num_classes "
                         "class frequencies], 'distortion': ...}")
    if sampler == "adversarial" and not isinstance(options.get("path"), str):
        raise ValueError("sampler 'adversarial' needs sampler_options={'path': a file written "
                         "by AdversarialSampler.save} (fitted on this layer's inputs)")
    if "feature_map" in options:
        fmap = features_lib.get(options["feature_map"])
        options["feature_map"] = keras.saving.serialize_keras_object(fmap)
    if "counts" in options:
        options["counts"] = [float(c) for c in options["counts"]]
    if sampler == "lsh" and options.get("seed") is None:
        # Drawn now (Keras' seeding) and kept in the config: a restored layer
        # hashes, fills and re-inserts with the same seed.
        options["seed"] = _seeding.draw_seed()
    return sampler, options


def make_sampler(sampler, options, num_classes, dim, kernel, bias):
    """The sampler object for a layer with the given table.

    Args:
      sampler: a name from SAMPLER_NAMES, or a `Sampler` instance (checked
        against num_classes, and dim for input-dependent samplers).
      options: name options from `check_spec`.
      num_classes, dim: the layer's table shape.
      kernel: [num_classes, dim] Keras variable (the class embeddings).
      bias: [num_classes] Keras variable, or None.
    """
    if isinstance(sampler, samplers_lib.Sampler):
        if sampler.num_classes != num_classes:
            raise ValueError(f"sampler {sampler!r} was built for {sampler.num_classes} classes, "
                             f"the layer has num_classes={num_classes}")
        sampler_dim = getattr(sampler, "dim", dim)
        if sampler_dim != dim:
            raise ValueError(f"sampler {sampler!r} was built for inputs of dim {sampler_dim}, "
                             f"the layer's inputs have dim {dim}")
        return sampler
    if sampler == "uniform":
        return samplers_lib.Uniform(num_classes)
    if sampler == "log_uniform":
        return samplers_lib.LogUniform(num_classes)
    if sampler == "learned_unigram":
        return samplers_lib.LearnedUnigram(num_classes)
    if sampler == "unigram":
        if len(options["counts"]) != num_classes:
            raise ValueError(f"unigram counts have {len(options['counts'])} entries, the layer "
                             f"has num_classes={num_classes}")
        return samplers_lib.Unigram(options["counts"], options.get("distortion", 1.0))
    if sampler == "lsh":
        return samplers_lib.LSHSampler(kernel, **options)
    if sampler == "adversarial":
        fitted = samplers_lib.AdversarialSampler.load(options["path"])
        if (fitted.num_classes, fitted.dim) != (num_classes, dim):
            raise ValueError(f"the adversarial sampler at {options['path']} was fitted for "
                             f"{fitted.num_classes} classes and inputs of dim {fitted.dim}, the "
                             f"layer has num_classes={num_classes} and inputs of dim {dim}")
        return fitted
    kernel_options = dict(options)
    if "feature_map" in kernel_options:
        kernel_options["feature_map"] = keras.saving.deserialize_keras_object(
            kernel_options["feature_map"])
    return samplers_lib.KernelSampler(kernel, biases=bias, **kernel_options)


def spec_config(sampler, options):
    """JSON-able (name, options) for get_config."""
    if isinstance(sampler, str):
        return sampler, options
    if isinstance(sampler, samplers_lib.Unigram):
        return "unigram", {"counts": [float(c) for c in sampler.counts],
                           "distortion": sampler.distortion}
    by_type = {samplers_lib.Uniform: "uniform", samplers_lib.LogUniform: "log_uniform",
               samplers_lib.LearnedUnigram: "learned_unigram"}
    if type(sampler) in by_type:
        return by_type[type(sampler)], {}
    raise ValueError(f"Cannot serialize the sampler instance {sampler!r}: give the layer a "
                     f"sampler name ({SAMPLER_NAMES}) with sampler_options to save its config")
