"""The SampledSoftmax Keras output layer."""
import math

import keras
import tensorflow as tf

from tf_sampled import nn
from tf_sampled import samplers as samplers_lib
from tf_sampled.layers import chunked
from tf_sampled.layers import metrics as metrics_lib
from tf_sampled.layers import noise as noise_lib
from tf_sampled.layers import refresh as refresh_lib
from tf_sampled.layers import sampler_spec
from tf_sampled.samplers import base

_OUTPUTS = ("logits", "probabilities")
# num_sampled=None: S of batch-shared negatives (scored by one [batch, dim] x
# [dim, S] matmul, so a large S costs little) and of per-example ones (B x S
# gathered dot products). Measured at equal wall-clock on WordNet and GCIDE:
# benchmarks/RESULTS.md, "Equal wall-clock".
DEFAULT_SHARED_NUM_SAMPLED = 1024
DEFAULT_NUM_SAMPLED = 64
_LABEL_SHAPES = "labels must have shape [batch] or [batch, 1] (one class per example)"


def check_label_shape(shape, batch=None):
    """ValueError naming the shape unless `shape` is [batch] or [batch, 1].

    Args:
      shape: a `tf.TensorShape`, or a tuple (an array's), of known rank.
      batch: the inputs' rows, if known.
    """
    shape = tf.TensorShape(shape)
    if not (shape.rank == 1 or (shape.rank == 2 and shape[1] in (1, None))):
        raise ValueError(f"{_LABEL_SHAPES}, got {shape}")
    if batch is not None and shape[0] is not None and shape[0] != batch:
        raise ValueError(f"labels must have {batch} rows like the inputs, got shape {shape}")


def _check_labels(labels, inputs):
    """int64 [batch, 1] labels, or ValueError naming dtype and shape.

    [batch] and [batch, 1] are both accepted, also by one traced function
    (Keras relaxes a function that saw both to labels of unknown rank: their
    shape is then checked when the step runs, an InvalidArgumentError naming
    it).
    """
    labels = tf.convert_to_tensor(labels)
    if not labels.dtype.is_integer:
        raise ValueError(f"labels must hold integer class ids, got dtype {labels.dtype.name} "
                         f"(shape {labels.shape})")
    if labels.shape.rank is not None:
        check_label_shape(labels.shape, inputs.shape[0])
    if labels.shape.rank is None or not labels.shape[1:].is_fully_defined():
        shape, rank = tf.shape(labels), tf.rank(labels)
        # size == batch and one column: [batch] or [batch, 1].
        ok = tf.reduce_all([tf.greater_equal(rank, 1), tf.less_equal(rank, 2),
                            tf.equal(tf.reduce_prod(shape[1:]), 1),
                            tf.equal(tf.size(labels), tf.shape(inputs)[0])])
        check = tf.debugging.Assert(ok, [f"{_LABEL_SHAPES} and as many rows as the inputs "
                                         f"{inputs.shape}, got shape", shape])
        with tf.control_dependencies([check]):
            labels = tf.identity(labels)
    return tf.reshape(tf.cast(labels, tf.int64), [-1, 1])


@keras.saving.register_keras_serializable(package="tf_sampled")
class SampledSoftmax(keras.layers.Layer):
    """Softmax output layer over many classes, trained with sampled negatives.

    The layer owns the class embeddings `embeddings` [num_classes, dim] and
    `bias` [num_classes]; logits are inputs @ embeddings^T + bias. Calling it
    (inference, `model.predict`, a served SavedModel) gives the full softmax
    with plain TensorFlow ops only. Training goes through `sampled_loss`
    (which `tf_sampled.layers.SampledSoftmaxModel.fit` calls): S negatives per
    example (or shared by the batch) from the sampler and a sampled loss,
    never a [batch, num_classes] tensor; `update_sampler` then brings the
    sampler's state up to date with the rows the optimizer changed.

    Two losses:
    - "sampled_softmax": the log-q corrected `tf_sampled.nn.sampled_softmax_loss`
      (any sampler); the logits are the model's scores as they are.
    - "negative_sampling": the logistic loss of Bamler & Mandt (2020),
      `tf_sampled.nn.negative_sampling_loss`, against negatives drawn iid from
      the sampler's noise p_n(.|x). Its logits converge to log p(y|x) -
      log p_n(y|x) + const(x), so the layer's scores (call, top_k,
      probabilities, the full-softmax evaluation, an exported SavedModel) are
      logits + log p_n(y|x), computed for all classes with plain TensorFlow
      ops. Allowed samplers: "adversarial" (per-example negatives; the
      paper's method, p_n fitted to the data), "uniform", "log_uniform",
      "unigram", "learned_unigram" (the paper's baselines; log p_n is a
      per-class constant: -log C, Zipf, the counts, the counts learned so
      far) or instances of their classes. The kernel and LSH
      samplers follow the table being trained, whose log p_n is no fixed
      noise to correct by: they raise a ValueError, as do batch-shared
      negatives with the adversarial sampler (they come from the batch's
      mixture) or with unique=True (not iid draws), and
      remove_accidental_hits=True (it moves the optimum).

    Args:
      num_classes: C, number of classes.
      num_sampled: S, negatives per example (per batch with shared
        negatives); must be < num_classes. None: 1024 shared negatives, 64
        per-example ones (at most num_classes - 1).
      sampler: "uniform", "log_uniform" (ids sorted by decreasing frequency),
        "unigram" (sampler_options counts, distortion), "learned_unigram",
        "kernel" (a `KernelSampler` over this layer's table; sampler_options
        feature_map, leaf_size, incremental), "lsh" (an `LSHSampler` over the
        class embeddings; sampler_options num_tables, num_hashes,
        bucket_size, family, bin_size, query, epsilon, seed: the hash
        functions' seed, drawn from Python's `random` when not given and kept
        in the config), "adversarial" (an `AdversarialSampler` loaded
        from sampler_options path, a file written by its `save`, fitted on
        the inputs this layer receives), or a `tf_sampled.samplers.Sampler`
        instance for num_classes classes (and inputs of the layer's dim).
      sampler_options: dict of options for a sampler given by name.
      shared_negatives: draw one set of S negatives for the whole batch
        (TensorFlow's candidate-sampler contract) instead of S per example.
        None: shared for the samplers that ignore the inputs ("uniform",
        "log_uniform", "unigram", "learned_unigram" and their instances)
        with loss="sampled_softmax", where per-example draws would only cost
        more; per-example otherwise. The default layer,
        `SampledSoftmax(num_classes)`, therefore trains as
        `tf.nn.sampled_softmax_loss` with log-uniform negatives at S = 1024,
        the configuration that reached a given validation loss soonest on
        the tasks measured (benchmarks/RESULTS.md, "Equal wall-clock").
      unique: with shared negatives, draw S distinct classes (TensorFlow's
        `unique=True`); must be False for shared negative sampling.
      remove_accidental_hits: drop a sampled negative equal to the true class.
        None: True with the sampled softmax, False with negative sampling
        (True raises a ValueError there).
      subtract_log_q_true: also correct the true logit by log(S q(true)).
        Sampled softmax only; None: True.
      output: "logits" or "probabilities" (what calling the layer returns:
        the scores, or their softmax).
      top_k: None, or k: calling the layer returns {"scores": [batch, k],
        "ids": [batch, k] int64} (the k best classes by score, as logits or
        probabilities) instead of [batch, C].
      refresh_touched: after each step refresh the sampler on the rows the step
        touched (true classes and negatives).
      refresh_every: None, or N: rebuild the sampler's state from the whole
        table every N steps.
      refresh_slice: None, or K: refresh K more rows per step in a rolling
        window over the table.
      eval_top_k: ks of the top-k accuracies `SampledSoftmaxModel.evaluate`
        reports.
      eval_chunk_size: classes per chunk in the full-softmax evaluation.
      ess_rows: examples of each batch whose importance-weight ESS is tracked
        (the signal costs ess_rows * S row reads, not batch * S).
      use_bias: whether the layer has class biases.
      embeddings_initializer: initializer of the class embeddings; defaults to a
        truncated normal with stddev 1 / sqrt(dim).
      bias_initializer: initializer of the biases.
      seed: op seed of the sampler's draws. The draws are a function of the
        seed and the sampler's stream counter (saved with the model), so the
        same seed gives the same samples, also in a restored model. None: the
        sampler's own stream, started at random when it is built (Python's
        `random`, which `keras.utils.set_random_seed` seeds) and saved with it.
      loss: "sampled_softmax" or "negative_sampling" (see above).
      negative_sampling_regularizer: lambda >= 0 of the paper's optional
        regulariser lambda [(xi_y + log p_n(y|x))^2 + sum_s (xi_s +
        log p_n(s|x))^2]; must be 0 with the sampled softmax.
      **kwargs: `keras.layers.Layer` arguments (name, dtype, ...). The dtype
        policy must keep float32 variables ("float32", "mixed_float16",
        "mixed_bfloat16"); inputs of any float dtype are cast (Keras' autocast
        in calls, float32 in training and evaluation).
    """

    def __init__(self, num_classes, num_sampled=None, sampler="log_uniform",
                 sampler_options=None, shared_negatives=None, unique=True,
                 remove_accidental_hits=None, subtract_log_q_true=None, output="logits",
                 top_k=None, refresh_touched=True, refresh_every=None, refresh_slice=None,
                 eval_top_k=(1, 5), eval_chunk_size=chunked.DEFAULT_CHUNK_SIZE, ess_rows=32,
                 use_bias=True, embeddings_initializer=None, bias_initializer="zeros", seed=None,
                 loss="sampled_softmax", negative_sampling_regularizer=0.0, **kwargs):
        super().__init__(**kwargs)
        if self.dtype_policy.variable_dtype != "float32":
            raise ValueError(
                f"SampledSoftmax keeps its class table in float32 (the samplers read it in "
                f"place), got dtype={self.dtype_policy.name!r} (variables of dtype "
                f"{self.dtype_policy.variable_dtype}): pass dtype='float32' or a mixed "
                f"policy such as 'mixed_float16' (inputs of any float dtype are cast)")
        # The sampling ops have no XLA kernels: Keras must not jit-compile a
        # model holding this layer (it falls back to jit_compile=False).
        # Set after Layer.__init__, which sets it to True.
        self.supports_jit = False
        self.num_classes = base.check_count("num_classes", num_classes)
        self._sampler_spec, self.sampler_options = sampler_spec.check_spec(
            sampler, sampler_options)
        if shared_negatives is None:
            shared_negatives = (loss == "sampled_softmax" and
                                samplers_lib.registry.is_input_free(self._sampler_spec))
        self.shared_negatives = bool(shared_negatives)
        if num_sampled is None:
            default = DEFAULT_SHARED_NUM_SAMPLED if self.shared_negatives \
                else DEFAULT_NUM_SAMPLED
            num_sampled = max(1, min(default, num_classes - 1))
        self.num_sampled = base.check_count("num_sampled", num_sampled)
        if num_sampled >= num_classes:
            raise ValueError(f"num_sampled ({num_sampled}) must be < num_classes "
                             f"({num_classes}); use a full softmax for so few classes")
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")
        if top_k is not None:
            base.check_count("top_k", top_k, maximum=num_classes)
        refresh_lib.check_schedule(refresh_every, refresh_slice)
        self.eval_top_k = tuple(base.check_count("eval_top_k", k, maximum=num_classes)
                                for k in eval_top_k)
        self.eval_chunk_size = base.check_count("eval_chunk_size", eval_chunk_size)
        self.ess_rows = base.check_count("ess_rows", ess_rows)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an int or None, got {seed!r}")
        self.unique = bool(unique)
        self.loss_kind = loss
        (self.remove_accidental_hits, self.subtract_log_q_true,
         self.negative_sampling_regularizer) = noise_lib.check_options(
             loss, self._sampler_spec, self.shared_negatives, self.unique,
             remove_accidental_hits, subtract_log_q_true, negative_sampling_regularizer)
        self.output_kind = output
        self.top_k = top_k
        self.refresh_touched = bool(refresh_touched)
        self.refresh_every = refresh_every
        self.refresh_slice = refresh_slice
        self.use_bias = bool(use_bias)
        self.embeddings_initializer = (keras.initializers.get(embeddings_initializer)
                                       if embeddings_initializer is not None else None)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.seed = seed
        self.sampler = None
        # log p_n(y|x), added to the logits of a layer trained by negative sampling.
        self._noise = None
        self.input_spec = keras.layers.InputSpec(min_ndim=2, max_ndim=2)

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim is None:
            raise ValueError(f"SampledSoftmax needs a known input dim, got input shape "
                             f"{input_shape}")
        initializer = self.embeddings_initializer or keras.initializers.TruncatedNormal(
            stddev=1.0 / math.sqrt(dim))
        self.embeddings = self.add_weight(shape=(self.num_classes, dim),
                                          initializer=initializer, name="embeddings")
        self.bias = (self.add_weight(shape=(self.num_classes,),
                                     initializer=self.bias_initializer, name="bias")
                     if self.use_bias else None)
        # Refresh schedule position (saved with the weights).
        self.refresh_step = self.add_weight(shape=(), dtype="int64", initializer="zeros",
                                            trainable=False, name="refresh_step")
        self.refresh_cursor = self.add_weight(shape=(), dtype="int64", initializer="zeros",
                                              trainable=False, name="refresh_cursor")
        self.sampler = sampler_spec.make_sampler(
            self._sampler_spec, self.sampler_options, self.num_classes, dim, self.embeddings,
            self.bias)
        if self.loss_kind == "negative_sampling":
            self._noise = noise_lib.correction_for(self.sampler)
        self.input_spec = keras.layers.InputSpec(ndim=2, axes={-1: dim})

    # ---- inference: the full softmax, plain TensorFlow ops only ----

    def call(self, inputs):
        """Full scores or probabilities ([batch, C]), or the top-k of them.

        The scores are the logits inputs @ embeddings^T + bias, plus log p_n(y|x)
        with loss="negative_sampling".

        Args:
          inputs: [batch, dim] float.

        Returns:
          [batch, num_classes] float, or with top_k {"scores": [batch, k],
          "ids": [batch, k] int64}.
        """
        logits = tf.matmul(inputs, tf.cast(self.embeddings, inputs.dtype), transpose_b=True)
        if self.bias is not None:
            logits += tf.cast(self.bias, inputs.dtype)
        if self._noise is not None:
            # [batch or 1, C], broadcast over the batch for input-free noise.
            logits += tf.cast(self._noise.all(tf.cast(inputs, tf.float32)), inputs.dtype)
        scores = tf.nn.softmax(logits) if self.output_kind == "probabilities" else logits
        if self.top_k is None:
            return scores
        values, ids = tf.math.top_k(scores, k=self.top_k)
        return {"scores": values, "ids": tf.cast(ids, tf.int64)}

    def compute_output_spec(self, inputs):
        batch = inputs.shape[0]
        if self.top_k is None:
            return keras.KerasTensor((batch, self.num_classes), dtype=self.compute_dtype)
        return {"scores": keras.KerasTensor((batch, self.top_k), dtype=self.compute_dtype),
                "ids": keras.KerasTensor((batch, self.top_k), dtype="int64")}

    # ---- training ----

    def _table(self):
        # The tf.Variables themselves: gathers read rows in place (a dense
        # read of a sparsely updated variable copies the whole table).
        return self.embeddings.value, (self.bias.value if self.bias is not None else None)

    def _check_inputs(self, inputs):
        inputs = tf.convert_to_tensor(inputs)
        if not inputs.dtype.is_floating:
            raise ValueError(f"inputs must be floating point, got dtype {inputs.dtype.name}")
        if not self.built:
            self.build(inputs.shape)
        dim = self.embeddings.shape[1]
        if inputs.shape.rank != 2 or inputs.shape[1] != dim:
            raise ValueError(f"inputs must have shape [batch, {dim}], got {inputs.shape}")
        return tf.cast(inputs, tf.float32)

    def _check_label_range(self, labels):
        """labels, once asserted to lie in [0, num_classes).

        The returned tensor depends on the assertions, so no gather or sampler
        reads a bad id first (with a message that does not name labels).
        """
        checks = [
            tf.debugging.assert_non_negative(
                labels, message=f"labels must be >= 0 (num_classes={self.num_classes})"),
            tf.debugging.assert_less(
                labels, tf.constant(self.num_classes, tf.int64),
                message=f"labels must be < num_classes={self.num_classes}")]
        with tf.control_dependencies([c for c in checks if c is not None]):
            return tf.identity(labels)

    def sampled_loss(self, inputs, labels):
        """Sampled losses of a batch, and what the step needs afterwards.

        The log-q corrected sampled softmax, or with loss="negative_sampling"
        the logistic loss of Bamler & Mandt (`tf_sampled.nn.negative_sampling_loss`).

        Args:
          inputs: [batch, dim] float layer inputs h.
          labels: [batch] or [batch, 1] int true classes in [0, num_classes).

        Returns:
          (losses [batch] float32, touched int64 [batch * (S + 1)] or
          [batch + S] ids whose rows get a gradient, ess [min(batch,
          ess_rows)] float32 importance-weight ESS / S of the negatives).
        """
        inputs = self._check_inputs(inputs)
        labels = self._check_label_range(_check_labels(labels, inputs))
        weights, biases = self._table()
        if self.shared_negatives:
            sampled = self.sampler.candidate_sampler(
                labels, 1, self.num_sampled, self.unique, self.num_classes, seed=self.seed,
                inputs=inputs)
            # Log expected counts, log(S q) without `unique`: the importance
            # weights up to the constant S, which the ESS fraction ignores.
            ids, log_proposal = sampled[0], tf.math.log(sampled[2])
        else:
            sampled = self.sampler.sample(inputs, self.num_sampled, true_classes=labels,
                                          seed=self.seed)
            ids, log_proposal = sampled.ids, sampled.log_q
        if self.loss_kind == "negative_sampling":
            losses = nn.negative_sampling_loss(
                weights, biases, labels, inputs, sampled,
                regularizer=self.negative_sampling_regularizer,
                remove_accidental_hits=self.remove_accidental_hits)
        else:
            losses = nn.sampled_softmax_loss(
                weights, biases, labels, inputs, sampled,
                remove_accidental_hits=self.remove_accidental_hits,
                subtract_log_q_true=self.subtract_log_q_true)
        touched = tf.concat([tf.reshape(labels, [-1]), tf.reshape(ids, [-1])], 0)
        return losses, touched, self._ess(inputs, labels, ids, log_proposal)

    def _ess(self, inputs, labels, ids, log_proposal):
        """ESS / S of the first ess_rows examples' negatives (no gradient)."""
        weights, biases = self._table()
        rows = tf.minimum(tf.shape(inputs)[0], self.ess_rows)
        inputs, labels = tf.stop_gradient(inputs[:rows]), labels[:rows]
        if ids.shape.rank == 1:  # shared by the batch: S rows read once, one matmul
            logits = tf.matmul(inputs, tf.gather(weights, ids), transpose_b=True)
            ids = tf.tile(ids[None, :], [rows, 1])
            log_proposal = tf.tile(log_proposal[None, :], [rows, 1])
        else:
            ids, log_proposal = ids[:rows], log_proposal[:rows]
            logits = tf.einsum("bd,bsd->bs", inputs, tf.gather(weights, ids))
        if biases is not None:
            logits += tf.gather(biases, ids)
        if self._noise is not None:
            # The model's distribution is exp(xi + log p_n) and the proposal
            # p_n: the importance weights are exp(xi).
            log_proposal = tf.zeros_like(log_proposal)
        valid = tf.not_equal(ids, labels) if self.remove_accidental_hits else None
        return tf.stop_gradient(metrics_lib.importance_ess(logits, log_proposal, valid))

    def update_sampler(self, touched):
        """Refreshes the sampler after the optimizer step (the layer's schedule).

        Args:
          touched: int64 ids whose rows the step's gradient touched (from
            `sampled_loss`).
        """
        # Every replica holds its own copy of the sampler's state: all of
        # them refresh the union of the rows any replica touched (the table
        # itself is synchronised), so the copies stay identical.
        touched = base.gather_across_replicas(touched)
        refresh_lib.refresh_after_step(
            self.sampler, touched, self.refresh_step, self.refresh_cursor,
            refresh_touched=self.refresh_touched, refresh_every=self.refresh_every,
            refresh_slice=self.refresh_slice)

    # ---- evaluation ----

    def full_softmax_stats(self, inputs, labels):
        """Full-softmax cross-entropy [batch] and true-class rank [batch] int64.

        Computed in chunks of eval_chunk_size classes (memory O(batch * chunk)),
        on the scores `call` gives (with loss="negative_sampling", logits +
        log p_n(y|x)).

        Args:
          inputs: [batch, dim] float.
          labels: [batch] or [batch, 1] int.
        """
        inputs = self._check_inputs(inputs)
        labels = self._check_label_range(_check_labels(labels, inputs))
        weights, biases = self._table()
        return chunked.full_softmax_stats(weights, biases, labels, inputs,
                                          self.eval_chunk_size, chunks=self._noise)

    # ---- persistence ----

    def _sampler_state(self):
        """The sampler's own variables (not the layer's table it reads)."""
        if self.sampler is None:
            return []
        table = {id(v) for v in self._table() if v is not None}
        return [v for v in self.sampler.variables if id(v) not in table]

    def save_own_variables(self, store):
        super().save_own_variables(store)
        for i, variable in enumerate(self._sampler_state()):
            store[f"sampler_{i}"] = variable.numpy()

    def load_own_variables(self, store):
        own = self._trainable_variables + self._non_trainable_variables
        state = self._sampler_state()
        expected = len(own) + len(state)
        if len(store.keys()) != expected:
            raise ValueError(f"Layer {self.name!r} expects {len(own)} weights and "
                             f"{len(state)} sampler variables, the saved file has "
                             f"{len(store.keys())} entries ({sorted(store.keys())})")
        for i, variable in enumerate(own):
            variable.assign(store[f"{i}"])
        for i, variable in enumerate(state):
            variable.assign(store[f"sampler_{i}"])

    def get_config(self):
        sampler, options = sampler_spec.spec_config(self._sampler_spec, self.sampler_options)
        return dict(
            super().get_config(), num_classes=self.num_classes, num_sampled=self.num_sampled,
            sampler=sampler, sampler_options=options, shared_negatives=self.shared_negatives,
            unique=self.unique, remove_accidental_hits=self.remove_accidental_hits,
            subtract_log_q_true=self.subtract_log_q_true, output=self.output_kind,
            top_k=self.top_k, refresh_touched=self.refresh_touched,
            refresh_every=self.refresh_every, refresh_slice=self.refresh_slice,
            eval_top_k=list(self.eval_top_k), eval_chunk_size=self.eval_chunk_size,
            ess_rows=self.ess_rows, use_bias=self.use_bias,
            embeddings_initializer=(
                keras.initializers.serialize(self.embeddings_initializer)
                if self.embeddings_initializer is not None else None),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            seed=self.seed, loss=self.loss_kind,
            negative_sampling_regularizer=self.negative_sampling_regularizer)
