"""Samplers for the SampledSoftmax layer: by name or instance, and back to config."""
import keras

from tf_sampled import _seeding
from tf_sampled import features as features_lib
from tf_sampled import samplers as samplers_lib

SAMPLER_NAMES = samplers_lib.registry.NAMES


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
    samplers_lib.registry.check_options(sampler, options)
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


def make_sampler(sampler, options, num_classes, dim, embeddings, bias):
    """The sampler object for a layer with the given table.

    Args:
      sampler: a name from SAMPLER_NAMES, or a `Sampler` instance (checked
        against num_classes, and dim for input-dependent samplers).
      options: name options from `check_spec`.
      num_classes, dim: the layer's table shape.
      embeddings: [num_classes, dim] Keras variable (the class embeddings).
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
    if "feature_map" in options:
        options = dict(options, feature_map=keras.saving.deserialize_keras_object(
            options["feature_map"]))
    return samplers_lib.get(sampler, embeddings=embeddings, biases=bias, num_classes=num_classes,
                            dim=dim, **options)


def spec_config(sampler, options):
    """JSON-able (name, options) for get_config."""
    if isinstance(sampler, str):
        return sampler, options
    named = samplers_lib.registry.name_of(sampler)
    if named is None:
        raise ValueError(f"Cannot serialize the sampler instance {sampler!r}: give the layer "
                         f"a sampler name ({SAMPLER_NAMES}) with sampler_options to save its "
                         f"config")
    return named
