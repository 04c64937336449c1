"""Tasks read through TensorFlow Datasets (downloaded on first use: needs a network).

- `lm1b`: One Billion Word, the classic sampled-softmax language model
  (793k-word vocabulary in full): next word from the `context` words before
  it, within a sentence. Train on the first `max_train` sentences of `train`,
  validate on the first `max_val` of `test`.
- `movielens`: next movie to rate, from who rates it: inputs are the user's
  id, gender, age bucket, occupation and zip code (one token each), the class
  is the movie (`movielens/25m-ratings`: 62k movies). A seeded split of the
  ratings.

`pip install tensorflow-datasets`; its `data_dir` is the usual
(~/tensorflow_datasets, or `data_dir=`).
"""

import collections

import numpy as np

from tf_sampled.datasets import base


def _tfds():
    try:
        import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    except ImportError as e:
        raise ImportError("This dataset is read through TensorFlow Datasets: "
                          "`pip install tensorflow-datasets`.") from e
    return tfds


def _read(name, split, data_dir, limit):
    """The first `limit` examples of a TFDS split, as numpy dicts."""
    tfds = _tfds()
    ds = tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False)
    if limit is not None:
        ds = ds.take(limit)
    return list(tfds.as_numpy(ds))


def _split_words(examples):
    return [ex["text"].decode("utf-8", "replace").split() for ex in examples]


def load_lm1b(vocab_size=100_000, context=6, max_train=1_000_000, max_val=10_000,
              data_dir=None):
    """Loads the One Billion Word next-word task (through TFDS).

    Args:
      vocab_size: classes: the most frequent train words, `<unk>` and `</s>`.
      context: words of left context per example.
      max_train: sentences read from `train` (None: all).
      max_val: sentences read from `test` (None: all).
      data_dir: TFDS data directory.

    Returns:
      A `TaskData` (`ordered`, `language_model`) as `load_gcide`'s: input ids
      are class id + 2, 1 starts a sentence, 0 pads.
    """
    train = _split_words(_read("lm1b", "train", data_dir, max_train))
    val = _split_words(_read("lm1b", "test", data_dir, max_val))
    counts = collections.Counter(w for s in train for w in s)
    counts["</s>"] = len(train)
    vocab_size = min(vocab_size, len(counts) + 1)
    words, index = base.vocabulary(counts, vocab_size)
    unk = index["<unk>"]

    def examples(sentences):
        ids = [[index.get(w, unk) for w in s] + [index["</s>"]] for s in sentences]
        starts = np.cumsum([0] + [len(s) for s in ids[:-1]])
        return base.lm_windows(np.concatenate(ids), starts, context)

    return base.language_model_task(
        examples(train), examples(val), words, "lm1b",
        f"lm1b next word from {context} words, {vocab_size} classes")


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


MOVIELENS_FIELDS = ("user_id", "user_gender", "bucketized_user_age",
                    "user_occupation_label", "user_zip_code")


def load_movielens(config="25m-ratings", val_fraction=0.1, max_ratings=None, seed=0,
                   data_dir=None):
    """Loads the MovieLens "which movie does this user rate" task (through TFDS).

    Args:
      config: a `movielens` config with user features (`100k-ratings`,
        `1m-ratings`, `25m-ratings`: 1.7k, 3.7k, 62k movies).
      val_fraction: fraction of ratings held out (a seeded random split).
      max_ratings: read only the first this many ratings (None: all).
      seed: seed of the split.
      data_dir: TFDS data directory.

    Returns:
      A `TaskData` (`ordered`: one position per user field): x [N, 5] int32
      tokens "field=value" (0 pads, 1 = unseen value), y [N] int64 movies in
      decreasing train frequency, `class_names` the movie ids.
    """
    ratings = _read(f"movielens/{config}", "train", data_dir, max_ratings)
    n = len(ratings)
    is_val = np.zeros(n, bool)
    is_val[np.random.default_rng(seed).permutation(n)[:int(round(n * val_fraction))]] = True
    movies = sorted({r["movie_id"] for r in ratings})
    movie_index = {m: i for i, m in enumerate(movies)}
    y = np.array([movie_index[r["movie_id"]] for r in ratings], np.int64)
    # Field values seen in the train split become tokens; others map to 1.
    tokens = [[f"{f}={_text(r[f])}" for f in MOVIELENS_FIELDS] for r in ratings]
    vocab = ["<pad>", "<unseen>"] + sorted(
        {t for row, v in zip(tokens, is_val) if not v for t in row})
    token_index = {t: i for i, t in enumerate(vocab)}
    x = np.array([[token_index.get(t, 1) for t in row] for row in tokens],
                 np.int32).reshape(n, len(MOVIELENS_FIELDS))
    new_id, class_counts = base.frequency_order(y[~is_val], len(movies))
    return base.TaskData(
        x_train=x[~is_val], y_train=new_id[y[~is_val]],
        x_val=x[is_val], y_val=new_id[y[is_val]],
        vocab_size=len(vocab), num_classes=len(movies), class_counts=class_counts,
        class_names=[_text(movies[i]) for i in np.argsort(new_id)],
        vocab=vocab, name="movielens",
        description=f"MovieLens {config}: user -> movie, {len(movies)} classes",
        ordered=True)
