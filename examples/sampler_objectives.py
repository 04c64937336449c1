"""The model and the training objectives that examples/compare_samplers.py compares.

Every objective trains the same model: an encoder of the input tokens (mean
of word embeddings for a bag of words, their concatenation for an ordered
window such as a language model's context) -> Dense(128, tanh) = h, and the
package's output layer `tfs.layers.SampledSoftmax` over the classes, logits
= h @ W^T + b (W = its embeddings [C, 128], b = its bias [C]).

The objectives in `LAYER_OBJECTIVES` are trained by that layer itself
(`SampledSoftmax.sampled_loss` and `update_sampler`, what
`tfs.layers.SampledSoftmaxModel.fit` runs), so their results are the
layer's that users get. The others train the layer's table with their own
loss: TensorFlow's samplers and the drop-in candidate samplers through
tf.nn.sampled_softmax_loss (what existing tf.nn code does), the full
softmax, LSH with its rebuild and rehash schedule, and the adversarial tree
queried with fixed features of x (the layer queries its sampler with h).

Each objective draws its own number of negatives S, written `name@S`
(`log_uniform@1024`, `kernel@16`; `parse_objective`): a user holds
wall-clock equal, not S, and raising S in unchanged tf.nn code is the
cheapest move they have. The package's samplers are built by name with
`tfs.samplers.get`, as the Keras layer's `sampler=` builds them.

Objectives (`OBJECTIVES`):
  full                   full softmax cross-entropy (the reference)
  layer                  tfs.layers.SampledSoftmax(num_classes) with no sampler
                         arguments, the package's recommended configuration
                         (batch-shared log-uniform negatives, S = 1024 unless
                         `layer@S`), trained by the layer
  uniform, log_uniform,  tf.nn.sampled_softmax_loss with TensorFlow's
  unigram                uniform / log-uniform / fixed unigram (train counts)
                         candidate samplers (batch-shared, unique)
  kernel[_MAP][_shared]  tfs.samplers.KernelSampler with feature map MAP:
                         (none) positive random features, `fourier` random
                         Fourier, `quadratic` Blanc & Rendle's, `moments`
                         GaussianMoments; per-example negatives (the
                         sampler's default proposal a p_lu + (1 - a)
                         q_tree(.|h), prior_weight a = 0.5) through
                         tfs.nn.sampled_softmax_loss (the fused op), or with
                         `_shared` batch-shared ones through
                         tfs.random.kernel_candidate_sampler as a drop-in
                         sampled_values for tf.nn.sampled_softmax_loss
                         (its default proposal: a p_lu + (1 - a) q_tree,
                         TensorFlow's log-uniform mixed into the tree's,
                         prior_weight a = 0.5)
  kernel_tree            the per-example kernel sampler (positive random
                         features) without TensorFlow's log-uniform mixed
                         into each example's proposal (prior_weight a = 0;
                         the kernel objectives use the sampler's default,
                         a = 0.5)
  kernel_tree_shared,    kernel_shared with prior_weight a = 0 (the tree's
  kernel_prior25_shared, proposal alone), 0.25 and 0.75 (a = 1 would be
  kernel_prior75_shared  exactly log_uniform)
  lsh, lsh_label,        tfs.samplers.LSHSampler: LSH-Embedding (tables over
  lsh_shared             W queried with h), LSH-Label (queried with w_y),
                         batch-shared via tfs.random.lsh_candidate_sampler
  adversarial            tfs.samplers.AdversarialSampler (Bamler & Mandt): an
                         auxiliary tree fitted once, before training, on fixed
                         features of the inputs (`aux_features`: the example
                         passes a frozen copy of the initialised encoder) and
                         queried with them; per-example negatives with their
                         exact log p_n, trained by the sampled softmax (log q
                         correction)
  adversarial_ns,        the negative-sampling (logistic) loss of Bamler &
  uniform_ns, unigram_ns Mandt, tfs.nn.negative_sampling_loss, with S iid
                         per-example negatives from the adversarial tree
                         (as `adversarial`), tfs.samplers.Uniform, or
                         tfs.samplers.Unigram (train counts + 1); evaluated
                         on the scores logits + log p_n(y|x) (their Thm. 1,
                         `noise_correction`)
"""

import dataclasses
import functools

import keras
import tensorflow as tf

import tf_sampled as tfs
from tf_sampled.layers import noise as noise_lib

KERNEL_MAPS = ("", "_fourier", "_quadratic", "_moments")
KERNEL_OBJECTIVES = tuple(f"kernel{m}{s}" for s in ("", "_shared") for m in KERNEL_MAPS)
# kernel_shared with TensorFlow's log-uniform mixed into the proposal:
# objective -> prior_weight a (tfs.random.kernel_candidate_sampler).
PRIOR_SHARED_OBJECTIVES = {"kernel_tree_shared": 0.0, "kernel_prior25_shared": 0.25,
                           "kernel_prior75_shared": 0.75}
LSH_OBJECTIVES = ("lsh", "lsh_label", "lsh_shared")
# Objectives whose sampler is the auxiliary tree, fitted on frozen features of x.
ADVERSARIAL_OBJECTIVES = ("adversarial", "adversarial_ns")
# Trained by negative sampling: their scores are logits + log p_n(y|x).
NS_OBJECTIVES = ("uniform_ns", "unigram_ns", "adversarial_ns")
# Trained by the SampledSoftmax layer itself (see the module docstring).
# The per-example kernel sampler with another log-uniform share than the
# default: objective -> prior_weight.
PRIOR_OBJECTIVES = {"kernel_tree": 0.0}
LAYER_OBJECTIVES = ("layer",) + tuple(f"kernel{m}" for m in KERNEL_MAPS) + \
    tuple(PRIOR_OBJECTIVES) + ("uniform_ns", "unigram_ns")
OBJECTIVES = ("full", "layer", "uniform", "log_uniform", "unigram") + KERNEL_OBJECTIVES + \
    tuple(PRIOR_OBJECTIVES) + \
    tuple(PRIOR_SHARED_OBJECTIVES) + LSH_OBJECTIVES + ("adversarial",) + NS_OBJECTIVES
# TensorFlow's own samplers through tf.nn.sampled_softmax_loss: the baselines
# that a package objective must beat at equal wall-clock.
BUILTIN_OBJECTIVES = ("uniform", "log_uniform", "unigram")
# The built-in configurations a sweep tries (each S < the task's classes).
# Objectives a study adds (benchmarks/pooled_negatives.py): name ->
# factory(W, b, num_sampled, seed, batch_size) -> (loss_fn, sampler), the
# sampler refreshed by a full `refresh()` on the trainer's schedule.
STUDY_OBJECTIVES = {}
SWEEP = tuple(f"{name}@{size}" for name in ("log_uniform", "unigram")
              for size in (16, 64, 256, 1024, 4096))
EMBED_DIM, HIDDEN_DIM, MAX_LEN = 64, 128, 32
OPTIMIZERS = {"adam": keras.optimizers.Adam, "lazy_adam": tfs.optimizers.LazyAdam}


@dataclasses.dataclass(frozen=True)
class Objective:
    """An objective and its negatives per example: `name@S` on the command line."""
    name: str
    num_sampled: int  # 0 for the full softmax

    @property
    def label(self):
        return self.name if self.name == "full" else f"{self.name}@{self.num_sampled}"

    @property
    def builtin(self):
        return self.name in BUILTIN_OBJECTIVES


def parse_objective(spec, num_sampled, num_classes):
    """`name` or `name@S` -> Objective (S defaults to `num_sampled`; `layer`'s to the layer's).

    Raises:
      ValueError: naming the spec, if the name is unknown, S is not a positive
        integer, S is given to the full softmax, or S >= num_classes (the
        built-in samplers draw S distinct classes; every objective gets the
        same rule).
    """
    name, at, size = str(spec).strip().partition("@")
    if name not in OBJECTIVES and name not in STUDY_OBJECTIVES:
        raise ValueError(f"Unknown objective {name!r} in {spec!r}; choose from "
                         f"{OBJECTIVES + tuple(STUDY_OBJECTIVES)}, "
                         f"optionally with @S (e.g. log_uniform@1024).")
    if name == "full":
        if at:
            raise ValueError(f"objective {spec!r}: the full softmax takes no @S")
        return Objective("full", 0)
    if at and not size.isdigit():
        raise ValueError(f"objective {spec!r}: S after '@' must be a positive integer, "
                         f"got {size!r}")
    if at:
        size = int(size)
    elif name == "layer":
        size = tfs.layers.SampledSoftmax(num_classes).num_sampled
    else:
        size = int(num_sampled)
    if not 1 <= size < num_classes:
        raise ValueError(f"objective {spec!r}: S = {size} must be in [1, {num_classes}) for "
                         f"a task with {num_classes} classes")
    return Objective(name, size)


def head_options(objective, num_sampled, class_counts, seed, leaf_size=None,
                 num_features=128, refresh_every=None):
    """`tfs.layers.SampledSoftmax` arguments of an objective in LAYER_OBJECTIVES, else None.

    `layer`: the layer's defaults (only num_sampled and the seed given).
    The per-example kernel objectives: sampler "kernel" with the objective's
    feature map, rebuilt from the whole table every `refresh_every` steps;
    uniform_ns / unigram_ns: the negative-sampling loss with noise "uniform"
    or "unigram" (add-one train counts: a class unseen in training keeps a
    finite log p_n, so its corrected score and the validation CE stay finite).
    """
    if objective not in LAYER_OBJECTIVES:
        return None
    if objective == "layer":
        return dict(num_sampled=num_sampled, seed=seed)
    options = dict(num_sampled=num_sampled, seed=seed, refresh_touched=False)
    if objective.startswith("kernel"):
        prior_weight = PRIOR_OBJECTIVES.get(objective)
        fmap = "" if prior_weight is not None else objective[len("kernel"):]
        sampler_options = {"feature_map": _feature_map(fmap, num_features, seed)}
        if prior_weight is not None:
            sampler_options["prior_weight"] = prior_weight
        if leaf_size is not None:
            sampler_options["leaf_size"] = leaf_size
        return dict(options, sampler="kernel", sampler_options=sampler_options,
                    refresh_every=refresh_every)
    if objective == "uniform_ns":
        return dict(options, sampler="uniform", loss="negative_sampling")
    return dict(options, sampler="unigram", sampler_options={"counts": class_counts + 1},
                loss="negative_sampling")


def build_model(data, seed, learning_rate=2e-3, optimizer="adam", head=None):
    """(encoder, head, W, b, trainable variables, optimizer) of one run on `data` (a TaskData).

    head: `tfs.layers.SampledSoftmax` arguments (`head_options`) for an
      objective the layer trains; None: a layer that only holds the class
      table (its sampler unused).
    W, b: the head's embeddings [C, 128] and bias [C] as TensorFlow variables.
    optimizer: "adam" (Keras' Adam: every step updates every row of W) or
      "lazy_adam" (tfs.optimizers.LazyAdam: only the rows a step touches, so a
      sampled step stays O(rows touched) at 100k+ classes).
    """
    keras.utils.set_random_seed(seed)  # Python, NumPy and TensorFlow seeds.
    pool = keras.layers.Flatten() if data.ordered else keras.layers.GlobalAveragePooling1D()
    encoder = keras.Sequential([
        # A bag of words is 0-padded (mean over the real tokens); a window is not.
        keras.layers.Embedding(data.vocab_size, EMBED_DIM, mask_zero=not data.ordered),
        pool,
        keras.layers.Dense(HIDDEN_DIM, activation="tanh"),
    ])
    encoder.build((None, data.x_train.shape[1]))
    init = keras.initializers.TruncatedNormal(stddev=HIDDEN_DIM**-0.5, seed=seed)
    head = tfs.layers.SampledSoftmax(
        data.num_classes, embeddings_initializer=init,
        **(head or dict(num_sampled=1, sampler="uniform")))
    head.build((None, HIDDEN_DIM))
    W, b = head.embeddings.value, head.bias.value
    variables = encoder.trainable_variables + [W, b]
    opt = OPTIMIZERS[optimizer](learning_rate)
    opt.build(variables)
    return encoder, head, W, b, variables, opt


def make_train_step(loss_fn, encoder, variables, optimizer, max_len=None):
    """A tf.function (x [B, max_len] int32, y [B] int64) -> mean loss, one optimizer step.

    A loss_fn with `update_sampler` (the layer's, `_layer_loss`) returns
    (losses, touched ids), and its sampler is brought up to date after the
    optimizer step, as `SampledSoftmaxModel.train_step` does.
    """
    update_sampler = getattr(loss_fn, "update_sampler", None)

    @tf.function(input_signature=[tf.TensorSpec([None, max_len], tf.int32),
                                  tf.TensorSpec([None], tf.int64)])
    def train_step(x, y):
        with tf.GradientTape() as tape:
            h = encoder(x, training=True)
            # Objectives whose sampler reads fixed features of x take x too.
            losses = loss_fn(h, y, x) if getattr(loss_fn, "takes_inputs", False) \
                else loss_fn(h, y)
            if update_sampler is not None:
                losses, touched = losses
            loss = tf.reduce_mean(losses)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        if update_sampler is not None:
            update_sampler(touched)
        return loss
    return train_step


def _layer_loss(head):
    """loss_fn(h, labels) -> (losses [B], touched ids) of the SampledSoftmax layer."""
    def loss_fn(h, labels):
        losses, touched, _ = head.sampled_loss(h, labels)
        return losses, touched
    loss_fn.update_sampler = head.update_sampler
    return loss_fn


def _tf_nn_loss(W, b, num_sampled, seed, candidate_sampler, sampler=None, **kwargs):
    """tf.nn.sampled_softmax_loss with a candidate sampler of TensorFlow's signature.

    sampler: for tf_sampled's drop-in candidate samplers, which also take the
    batch's inputs (keyword-only `inputs`, `sampler`).
    """
    num_classes = int(W.shape[0])

    def loss_fn(h, labels):
        true = labels[:, None]
        extra = {} if sampler is None else {"inputs": h, "sampler": sampler}
        sampled = candidate_sampler(true, 1, num_sampled, True, num_classes, seed=seed,
                                    **kwargs, **extra)
        return tf.nn.sampled_softmax_loss(W, b, true, h, num_sampled, num_classes,
                                          sampled_values=sampled)
    return loss_fn


def _fit_adversarial(num_classes, featurize, x_train, y_train):
    """The auxiliary tree of Bamler & Mandt, fitted on featurize(x_train)."""
    features = tf.concat([featurize(x_train[s:s + 8192])
                          for s in range(0, len(y_train), 8192)], 0)
    return tfs.samplers.AdversarialSampler.fit(features.numpy(), y_train,
                                               num_classes=num_classes)


def _queried_loss(loss, W, b, num_sampled, seed, sampler, featurize=None):
    """loss(W, b, true, h, candidates) with `sampler`'s per-example negatives.

    featurize: None, the sampler is queried with h (input-free samplers ignore
      it); else the sampler is queried with featurize(x) and the returned
      loss_fn takes (h, labels, x).
    """
    def loss_fn(h, labels, x=None):
        # The sampler's ops have no gradient: negatives are drawn, not learned.
        true = labels[:, None]
        query = h if featurize is None else featurize(x)
        candidates = sampler.sample(query, num_sampled, true_classes=true, seed=seed)
        return loss(W, b, true, h, candidates)
    loss_fn.takes_inputs = featurize is not None
    return loss_fn


def noise_correction(objective, sampler):
    """The prediction-time correction of a negative-sampling objective, or None.

    Returns a `NoiseCorrection` (a `ClassChunks` for
    `tfs.layers.full_softmax_stats(..., chunks=)`) that adds log p_n(y|x) to
    every class's logit (Bamler & Mandt, Thm. 1), or None for the objectives
    scored by their plain logits. It is queried with full_softmax_stats'
    inputs (h); the adversarial tree reads featurize(x) instead: pass
    `correction.queried_with(featurize(x))`.
    """
    if objective not in NS_OBJECTIVES:
        return None
    return noise_lib.correction_for(sampler)


def _feature_map(name, num_features, seed):
    if name == "_fourier":
        return tfs.features.RandomFourier(num_features=num_features, temperature=1.0,
                                          seed=seed)
    if name == "_quadratic":
        return tfs.features.Quadratic()
    if name == "_moments":
        return tfs.features.GaussianMoments()
    return tfs.features.PositiveRandom(num_features=num_features, temperature=1.0,
                                       seed=seed)


def make_loss_fn(objective, W, b, num_sampled, class_counts, seed, leaf_size=None,
                 num_features=128, lsh_options=None, aux_features=None, batch_size=None,
                 head=None):
    """Returns (loss_fn(h [B, d], labels [B]) -> [B] losses, sampler or None).

    head: the model's SampledSoftmax layer (`build_model`); for an objective in
      LAYER_OBJECTIVES it must have been built with `head_options`, and the
      loss is the layer's (loss_fn then returns (losses, touched ids) and has
      `update_sampler`).
    lsh_options: LSHSampler keyword arguments for the lsh* objectives.
    aux_features: for `adversarial` and `adversarial_ns`, (featurize,
      x_train, y_train): the auxiliary model is fitted on featurize(x_train)
      [N, k] (N >= C) and queried with featurize(x); its loss_fn then takes
      (h, labels, x).
    batch_size: the training batch size (a study objective's pool may need it).
    """
    if objective in STUDY_OBJECTIVES:
        return STUDY_OBJECTIVES[objective](W, b, num_sampled, seed, batch_size)
    if objective in LAYER_OBJECTIVES:
        if head is None or head.num_sampled != num_sampled:
            raise ValueError(f"{objective!r} is trained by the SampledSoftmax layer: pass "
                             f"head=, the layer build_model made with head_options("
                             f"{objective!r}, {num_sampled}, ...)")
        return _layer_loss(head), head.sampler
    if objective == "full":
        def full_loss(h, labels):
            logits = tf.matmul(h, W, transpose_b=True) + b
            return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        return full_loss, None
    if objective == "uniform":
        return _tf_nn_loss(W, b, num_sampled, seed, tf.random.uniform_candidate_sampler), None
    if objective == "log_uniform":
        return _tf_nn_loss(W, b, num_sampled, seed,
                           tf.random.log_uniform_candidate_sampler), None
    if objective == "unigram":
        return _tf_nn_loss(W, b, num_sampled, seed,
                           tf.random.fixed_unigram_candidate_sampler,
                           unigrams=class_counts.tolist()), None
    if objective in ADVERSARIAL_OBJECTIVES:
        if aux_features is None:
            raise ValueError(f"{objective!r} needs aux_features=(featurize, x_train, "
                             "y_train) to fit its auxiliary model on")
        featurize = aux_features[0]
        sampler = _fit_adversarial(int(W.shape[0]), *aux_features)
        loss = tfs.nn.negative_sampling_loss if objective.endswith("_ns") \
            else tfs.nn.sampled_softmax_loss
        return _queried_loss(loss, W, b, num_sampled, seed, sampler, featurize), sampler
    shared = objective.endswith("_shared")
    if objective in LSH_OBJECTIVES:
        sampler = tfs.samplers.get(
            "lsh", W, query="label" if objective == "lsh_label" else "embedding", seed=seed,
            **(lsh_options or {}))
        candidate_sampler = tfs.random.lsh_candidate_sampler
    elif objective in KERNEL_OBJECTIVES or objective in PRIOR_SHARED_OBJECTIVES:
        prior_weight = PRIOR_SHARED_OBJECTIVES.get(objective)
        fmap = "" if prior_weight is not None else \
            objective[len("kernel"):-len("_shared") if shared else None]
        leaf_kwargs = {} if leaf_size is None else {"leaf_size": leaf_size}
        sampler = tfs.samplers.get("kernel", W, biases=b,
                                   feature_map=_feature_map(fmap, num_features, seed),
                                   **leaf_kwargs)
        candidate_sampler = tfs.random.kernel_candidate_sampler
        if prior_weight is not None:
            candidate_sampler = functools.partial(candidate_sampler,
                                                  prior_weight=prior_weight)
    else:
        raise ValueError(f"Unknown objective {objective!r}; choose from {OBJECTIVES}.")
    if shared:  # a drop-in replacement for tf.random.*_candidate_sampler
        return _tf_nn_loss(W, b, num_sampled, seed, candidate_sampler,
                           sampler=sampler), sampler
    return _queried_loss(tfs.nn.sampled_softmax_loss, W, b, num_sampled, seed,
                         sampler), sampler  # per-example LSH
