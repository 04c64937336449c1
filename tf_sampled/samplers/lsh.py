"""The LSH sampler (Daghaghi et al., ICML 2021) with an exact proposal."""
import math
import numbers

import tensorflow as tf

from tf_sampled import _ops
from tf_sampled import _seeding
from tf_sampled.samplers import base

FAMILIES = ("simhash", "dwta")
QUERIES = ("embedding", "label")
DEFAULT_NUM_TABLES = 16
DEFAULT_BUCKET_SIZE = 64
DEFAULT_EPSILON = 0.05
# Codes are int32 bucket numbers; the default K keeps a table's buckets small.
_MAX_CODE_BITS = 30
_MAX_DEFAULT_CODE_BITS = 16


def default_num_hashes(num_classes, bucket_size, family="simhash", bin_size=8):
    """K such that buckets hold about bucket_size / 2 classes on average.

    Args:
      num_classes: C.
      bucket_size: slots per bucket.
      family: "simhash" (1 bit per hash) or "dwta" (log2(bin_size) bits).
      bin_size: DWTA coordinates per hash.

    Returns:
      int K >= 1, with at most 16 code bits.
    """
    bits = math.ceil(math.log2(max(2.0 * num_classes / bucket_size, 2.0)))
    bits = min(max(bits, 1), _MAX_DEFAULT_CODE_BITS)
    per_hash = 1 if family == "simhash" else int(math.log2(bin_size))
    return max(1, bits // per_hash)


class LSHSampler(base.Sampler):
    """Negatives from locality-sensitive hash tables over the class embeddings.

    The embeddings are hashed into `num_tables` (L) tables of 2^code_bits
    buckets, `num_hashes` (K) hashes per table, SimHash (signed random
    projections) or DWTA (densified winner-take-all); a bucket holds at most
    `bucket_size` class ids (a uniform random subset when more classes share
    its code). A query is hashed the same way. One draw:

      with probability epsilon, a uniform class; else a uniform table l and a
      uniform member of the query's bucket in it (a uniform class if empty).

    So q(i | query) = (eps + (1 - eps) E / L) / C + (1 - eps) / L * sum over
    the tables whose query bucket holds i of 1 / |bucket|, E the number of
    the query's empty buckets: every class has probability >= eps / C, and the
    op returns this q exactly (also for the true classes), for the tables as
    they are, stale or not. Sampling costs K L dim for hashing the query and
    O(L) per draw, independent of C.

    Queries (the paper's two proposals): "embedding" hashes the input h
    (LSH-Embedding: classes with a large h . w); "label" hashes the true
    class's embedding w_y (LSH-Label: classes similar to the target; needs
    `true_classes` in every call; the first true class is the query).

    State (non-trainable variables, checkpointed with the sampler):
      hash_params: [L K, dim] SimHash directions, or [L K, bin_size] DWTA
        coordinate indices (as floats).
      buckets: [L 2^code_bits, bucket_size] int32 members (ascending, -1 pad).
      counts: [L 2^code_bits] int32 members per bucket.
      codes: [num_classes, L] int32 code of each class in each table as of
        its last insertion (4 L bytes per class).
      version: int64, how many times the hash functions were redrawn.

    Args:
      embeddings: [num_classes, dim] class embeddings: a float32 `tf.Variable`
        (read in place, never copied), or a tensor (copied into a variable).
      num_tables: L.
      num_hashes: K; default `default_num_hashes(C, bucket_size)` (buckets
        half full on average, at most 16 code bits).
      bucket_size: slots per bucket.
      family: "simhash" or "dwta".
      bin_size: DWTA coordinates per hash (a power of two).
      query: "embedding" or "label".
      epsilon: uniform share of the proposal, in (0, 1].
      rebuild_every: steps between full rebuilds in `maintain` (None: never).
      rehash_every: steps between new hash functions (and a rebuild) in
        `maintain` (None: never).
      seed: int seed (>= 0) of the hash functions and of the bucket subsets.
        None: drawn from Python's `random` (which `keras.utils.set_random_seed`
        seeds), kept as `self.seed`; restoring a checkpoint of this sampler
        into a new one exactly needs the same seed (the hash functions and
        tables are variables, but later re-insertions and `rehash` draw from
        the seed).
      name: module name.
    """

    def __init__(self, embeddings, num_tables=DEFAULT_NUM_TABLES, num_hashes=None,
                 bucket_size=DEFAULT_BUCKET_SIZE, family="simhash", bin_size=8,
                 query="embedding", epsilon=DEFAULT_EPSILON, rebuild_every=None,
                 rehash_every=None, seed=None, name=None):
        shape = embeddings.shape
        base.check_table_shape(shape)
        if shape[0] > 2**31 - 1:
            raise ValueError(f"embeddings must have at most 2^31 - 1 rows, got {shape[0]}")
        super().__init__(int(shape[0]), name=name)
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
        if query not in QUERIES:
            raise ValueError(f"query must be one of {QUERIES}, got {query!r}")
        self.family, self.query = family, query
        self.num_tables = base.check_count("num_tables", num_tables)
        self.bucket_size = base.check_count("bucket_size", bucket_size)
        self.bin_size = base.check_count("bin_size", bin_size)
        if family == "dwta" and (bin_size < 2 or bin_size & (bin_size - 1)):
            raise ValueError(f"bin_size must be a power of two >= 2, got {bin_size}")
        if num_hashes is None:
            num_hashes = default_num_hashes(self.num_classes, bucket_size, family, bin_size)
        self.num_hashes = base.check_count("num_hashes", num_hashes)
        if self.code_bits > _MAX_CODE_BITS:
            raise ValueError(
                f"num_hashes={num_hashes} is too large for the hash width: codes of "
                f"{self.code_bits} bits, at most {_MAX_CODE_BITS}")
        if (isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real)
                or not 0 < epsilon <= 1):
            raise ValueError(f"epsilon must be in (0, 1], got {epsilon!r}")
        self.epsilon = float(epsilon)
        for key, value in (("rebuild_every", rebuild_every), ("rehash_every", rehash_every)):
            if value is not None:
                base.check_count(key, value)
        self.rebuild_every, self.rehash_every = rebuild_every, rehash_every
        self.embeddings = embeddings
        self.dim = int(shape[1])
        self.seed = _seeding.seed_or_draw(seed)
        self._hash_attrs = dict(family=family, num_tables=self.num_tables,
                                num_hashes=self.num_hashes, bin_size=self.bin_size)
        self._library = _ops.load_ops()
        with self.name_scope:
            self._table = base.as_float32_variable(embeddings, "embeddings")
            self.version = tf.Variable(tf.constant(0, tf.int64), trainable=False,
                                       name="version")
            self.hash_params = tf.Variable(self._draw_hash_params(0), trainable=False,
                                           name="hash_params")
            buckets, counts, codes = self._build()
            self.buckets = tf.Variable(buckets, trainable=False, name="buckets")
            self.counts = tf.Variable(counts, trainable=False, name="counts")
            self.codes = tf.Variable(codes, trainable=False, name="codes")

    @property
    def code_bits(self):
        per_hash = 1 if self.family == "simhash" else int(math.log2(self.bin_size))
        return self.num_hashes * per_hash

    @property
    def num_buckets(self):
        """Buckets per table, 2^code_bits."""
        return 2**self.code_bits

    def memory_bytes(self):
        """Bytes of state: {"buckets": buckets and counts, "codes": codes}."""
        rows = self.num_tables * self.num_buckets
        return {"buckets": 4 * rows * (self.bucket_size + 1),
                "codes": 4 * self.num_classes * self.num_tables}

    def _draw_hash_params(self, version):
        """[L K, dim] or [L K, bin_size] float32 hash functions number `version`."""
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(version, tf.int64)])
        rows = self.num_tables * self.num_hashes
        if self.family == "simhash":
            return tf.random.stateless_normal([rows, self.dim], seed=seed)
        # bin_size distinct coordinates per hash (with repeats only when
        # bin_size > dim), as a random permutation's prefix.
        keys = tf.random.stateless_uniform([rows, max(self.dim, self.bin_size)], seed=seed)
        coords = tf.argsort(keys, axis=1)[:, :self.bin_size] % self.dim
        return tf.cast(coords, tf.float32)

    def _build(self):
        return self._library.tf_sampled_lsh_build(
            embeddings=self._table.handle, hash_params=self.hash_params,
            bucket_size=self.bucket_size, seed=self.seed, seed2=1, **self._hash_attrs)

    def _queries(self, inputs, true_classes, batch=None):
        """[batch, dim] float32 vectors to hash: h, or w of the first true class."""
        if self.query == "label":
            if true_classes is None:
                raise ValueError("an LSHSampler with query='label' needs true_classes "
                                 "(the true class's embedding is the query)")
            labels = base.as_class_matrix(true_classes, "true_classes", batch)
            # Ids are checked by the op; clipping keeps the gather's own
            # (less precise) error from coming first.
            ids = tf.clip_by_value(labels[:, 0], 0, self.num_classes - 1)
            return tf.gather(self._table, ids)
        return base.as_query_matrix(inputs, self.num_classes, self.dim)

    def _table_args(self):
        return dict(buckets=self.buckets.handle, counts=self.counts.handle,
                    codes=self.codes.handle, hash_params=self.hash_params,
                    **self._hash_attrs)

    def sample(self, inputs, num_sampled, true_classes=None, seed=None):
        base.check_count("num_sampled", num_sampled)
        queries = self._queries(inputs, true_classes)
        batch = queries.shape[0]
        if true_classes is None:
            true_classes = tf.zeros([tf.shape(queries)[0], 0], tf.int64)
        true_classes = base.as_class_matrix(true_classes, "true_classes", batch)
        seed1, seed2, counter = self.stream.next(seed)
        ids, log_q, true_log_q = self._library.tf_sampled_lsh_sample(
            queries=queries, true_classes=true_classes, counter=counter,
            num_sampled=num_sampled, epsilon=self.epsilon, seed=seed1, seed2=seed2,
            **self._table_args())
        return base.SampledCandidates(ids, log_q, true_log_q)

    def log_prob(self, inputs, classes, true_classes=None):
        """log q(classes[b, k] | query b) as float32 [batch, n].

        Args:
          inputs: [batch, dim] inputs h (query="embedding").
          classes: [batch, n] (or [batch]) int class ids.
          true_classes: [batch, num_true] true classes (query="label": the
            first one's embedding is the query).
        """
        queries = self._queries(inputs, true_classes)
        classes = base.as_class_matrix(classes, "classes", queries.shape[0])
        return self._library.tf_sampled_lsh_log_prob(
            queries=queries, classes=classes, epsilon=self.epsilon, **self._table_args())

    def candidate_sampler(self, true_classes, num_true, num_sampled, unique, range_max,
                          seed=None, name=None, inputs=None):
        self._check_shared_args(num_true, num_sampled, unique, range_max)
        if self.query == "embedding" and inputs is None:
            raise ValueError("LSHSampler.candidate_sampler needs `inputs` [batch, dim] "
                             "(query='embedding')")
        queries = self._queries(inputs, true_classes)
        true_classes = self._shared_true_classes(true_classes, num_true, queries.shape[0])
        with tf.name_scope(name or "lsh_candidate_sampler"):
            seed1, seed2, counter = self.stream.next(seed)
            return self._library.tf_sampled_lsh_candidate_sampler(
                queries=queries, true_classes=true_classes, counter=counter, num_true=num_true,
                num_sampled=num_sampled, unique=bool(unique), range_max=range_max,
                epsilon=self.epsilon, seed=seed1, seed2=seed2, **self._table_args())

    @property
    def refreshes_ids(self):
        return True

    def refresh(self, ids=None):
        """Brings the tables up to date with the embeddings.

        Args:
          ids: None for a full rebuild (hashes all C rows, K L dim C
            multiply-adds), or the class ids whose rows changed (any shape,
            duplicates allowed): each leaves the bucket of its old code and
            joins the bucket of its new one (a full bucket evicts a random
            member), O(len(ids) (K L dim + L bucket_size)).
        """
        if ids is None:
            # Build first: a failed build (a NaN row) leaves the state as it was.
            buckets, counts, codes = self._build()
            self.buckets.assign(buckets)
            self.counts.assign(counts)
            self.codes.assign(codes)
            return
        ids = tf.convert_to_tensor(ids)
        if not ids.dtype.is_integer:
            raise ValueError(f"ids must be integer class ids, got dtype {ids.dtype.name}")
        unique_ids, new_codes, bucket_ids, rows, counts = self._library.tf_sampled_lsh_update(
            embeddings=self._table.handle, ids=tf.reshape(tf.cast(ids, tf.int64), [-1]),
            seed=self.seed, seed2=2, **self._table_args())
        self.codes.scatter_update(tf.IndexedSlices(new_codes, unique_ids))
        self.buckets.scatter_update(tf.IndexedSlices(rows, bucket_ids))
        self.counts.scatter_update(tf.IndexedSlices(counts, bucket_ids))

    def rehash(self):
        """Draws new hash functions and rebuilds the tables with them."""
        self.version.assign_add(1)
        self.hash_params.assign(self._draw_hash_params(self.version))
        self.refresh()

    def maintain(self, step, ids=None):
        """The schedule of the paper: call once per training step, after the update.

        New hash functions every `rehash_every` steps, else a full rebuild
        every `rebuild_every` steps, else re-insertion of `ids` (the rows the
        step touched; None: nothing). Works eagerly and in `tf.function`.

        Args:
          step: int scalar (Python or tensor), the step just taken (from 1).
          ids: optional class ids whose rows the step changed.
        """
        step = tf.cast(step, tf.int64)

        def every(n):
            return tf.constant(False) if n is None else tf.equal(step % n, 0)

        def reinsert():
            if ids is not None:
                self.refresh(ids)
            return tf.constant(0)

        def rebuild():
            self.refresh()
            return tf.constant(0)

        def rehash():
            self.rehash()
            return tf.constant(0)

        tf.cond(every(self.rehash_every), rehash,
                lambda: tf.cond(every(self.rebuild_every), rebuild, reinsert))
