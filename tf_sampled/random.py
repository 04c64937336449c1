"""Drop-in candidate samplers with `tf.random.*_candidate_sampler`'s signature.

Each returns TensorFlow's triple (sampled_candidates [S] int64,
true_expected_count [batch, num_true] float32, sampled_expected_count [S]
float32), so it plugs into `tf.nn.sampled_softmax_loss(..., sampled_values=...)`
unchanged. One sample set is shared by the batch; it is drawn from the batch's
mixture proposal. Per-example negatives (`sampler.sample`) carry most of the
quality gain; this mode is for existing code.
"""
from tf_sampled.samplers.adversarial import AdversarialSampler
from tf_sampled.samplers.kernel import KernelSampler
from tf_sampled.samplers.lsh import LSHSampler


def _shared_candidates(kind, sampler, true_classes, num_true, num_sampled, unique, range_max,
                       seed, name, inputs, **options):
    """`sampler.candidate_sampler(...)` after checking that it is a `kind`."""
    if not isinstance(sampler, kind):
        raise ValueError(f"sampler must be a tf_sampled.samplers.{kind.__name__}, got "
                         f"{sampler!r}")
    return sampler.candidate_sampler(true_classes, num_true, num_sampled, unique, range_max,
                                     seed=seed, name=name, inputs=inputs, **options)


def kernel_candidate_sampler(true_classes, num_true, num_sampled, unique, range_max,
                             seed=None, name=None, *, inputs, sampler, prior_weight=None):
    """Batch-shared candidates from a `KernelSampler`.

    The proposal is q(i) = a p_lu(i) + (1 - a) q_tree(i) with a =
    prior_weight: p_lu(i) = log((i + 2) / (i + 1)) / log(range_max + 1) is
    TensorFlow's log-uniform (ids sorted by decreasing frequency, as
    `log_uniform_candidate_sampler` assumes), q_tree the kernel tree's batch
    mixture (leaves from the exact mixture of the inputs' leaf
    distributions, classes inside a leaf from the kernel of the mean input).
    Binomial(S, a) of the draws come from p_lu, the rest from q_tree, in
    random order; the expected counts are exact for q.

    Args:
      true_classes: [batch, num_true] int64 target classes.
      num_true: int, columns of `true_classes`.
      num_sampled: int, S.
      unique: bool; draw until S distinct classes (expected counts then use
        num_tries, as TensorFlow's samplers do).
      range_max: int, must equal the sampler's number of classes.
      seed: optional int seed: with the sampler's stream counter, same seed and
        counter give the same candidates (None: the sampler's own stream).
      name: optional name scope.
      inputs: [batch, dim] queries (the layer input h).
      sampler: the `tf_sampled.samplers.KernelSampler`.
      prior_weight: a, a number in [0, 1]: the log-uniform share of the
        proposal (0: the tree alone; 1: exactly log-uniform); None: the
        sampler's `prior_weight` (default 0.5, which measured best of 0,
        0.25 and 0.5 at equal training time).

    Returns:
      (sampled_candidates [S], true_expected_count [batch, num_true],
      sampled_expected_count [S]).

    Raises:
      ValueError: `sampler` is not a KernelSampler, prior_weight is not a
        number in [0, 1], or an argument breaks the candidate-sampler
        contract.
    """
    return _shared_candidates(KernelSampler, sampler, true_classes, num_true, num_sampled, unique,
                              range_max, seed, name, inputs, prior_weight=prior_weight)


def lsh_candidate_sampler(true_classes, num_true, num_sampled, unique, range_max,
                          seed=None, name=None, *, inputs, sampler):
    """Batch-shared candidates from an `LSHSampler`.

    The candidates are drawn from the mixture (1/batch) sum_b q(. | query_b)
    of the batch's LSH proposals, and the expected counts are exact for it.

    Args:
      true_classes: [batch, num_true] int64 target classes.
      num_true: int, columns of `true_classes`.
      num_sampled: int, S.
      unique: bool; draw until S distinct classes (expected counts then use
        num_tries, as TensorFlow's samplers do).
      range_max: int, must equal the sampler's number of classes.
      seed: optional int seed: with the sampler's stream counter, same seed and
        counter give the same candidates (None: the sampler's own stream).
      name: optional name scope.
      inputs: [batch, dim] queries h (ignored, may be None, for an LSHSampler
        with query="label", whose queries are the true classes' embeddings).
      sampler: the `tf_sampled.samplers.LSHSampler`.

    Returns:
      (sampled_candidates [S], true_expected_count [batch, num_true],
      sampled_expected_count [S]).
    """
    return _shared_candidates(LSHSampler, sampler, true_classes, num_true, num_sampled, unique,
                              range_max, seed, name, inputs)


def adversarial_candidate_sampler(true_classes, num_true, num_sampled, unique, range_max,
                                  seed=None, name=None, *, inputs, sampler):
    """Batch-shared candidates from an `AdversarialSampler`.

    The candidates are drawn from the batch mixture (1/batch) sum_b
    p_n(. | inputs[b]) of the auxiliary model (a row picked uniformly, then its
    tree descended), and the expected counts are exact for that mixture
    (O(batch (num_sampled + batch num_true) k log C) to compute).

    Args:
      true_classes: [batch, num_true] int64 target classes.
      num_true: int, columns of `true_classes`.
      num_sampled: int, S.
      unique: bool; draw until S distinct classes (expected counts then use
        num_tries, as TensorFlow's samplers do).
      range_max: int, must equal the sampler's number of classes.
      seed: optional op seed.
      name: optional name scope.
      inputs: [batch, dim] inputs x the auxiliary model was fitted on.
      sampler: the `tf_sampled.samplers.AdversarialSampler`.

    Returns:
      (sampled_candidates [S], true_expected_count [batch, num_true],
      sampled_expected_count [S]).
    """
    return _shared_candidates(AdversarialSampler, sampler, true_classes, num_true, num_sampled,
                              unique, range_max, seed, name, inputs)
