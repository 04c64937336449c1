"""WordNet 3.0 "definition -> parent concept": a real task with 20,206 classes.

Every noun and verb synset with a hypernym is one example: the input is its
definition (gloss, quoted usage examples removed) as word ids, the label is its
first hypernym synset. 95,322 examples, 20,206 classes, 27,566 words. Class ids
are in decreasing frequency (id 0 is the most frequent parent), the order
``tf.random.log_uniform_candidate_sampler`` assumes.

The processed data ships with the package (``tf_sampled/data/wordnet``, built by
``tools/build_wordnet_data.py``); WordNet's licence is in ``LICENSE.wordnet``
there. Loading needs numpy only.
"""

import functools
import gzip
import os

import numpy as np

from tf_sampled.datasets.base import PAD_ID, TaskData

DATA_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
    "wordnet")

UNK_ID = 1  # input token for words seen once; PAD_ID (0) pads


# The task in the common shape of tf_sampled.datasets (kept under its old name).
WordNetData = TaskData


def _read_lines(name):
    with gzip.open(os.path.join(DATA_DIR, name), "rt", encoding="utf-8") as f:
        return f.read().splitlines()


@functools.lru_cache(maxsize=1)
def _load_raw():
    """(token id strings, labels [N] int64, class names, vocabulary) of all examples."""
    vocab = _read_lines("vocab.txt.gz")
    class_names = []
    for i, line in enumerate(_read_lines("classes.tsv.gz")):
        cid, synset, _, lemmas = line.split("\t")
        if int(cid) != i:
            raise ValueError(f"{DATA_DIR}/classes.tsv.gz is corrupt: line {i} has id {cid}")
        class_names.append(f"{synset} {lemmas.split(',')[0]}")
    tokens, labels = [], []
    for line in _read_lines("examples.tsv.gz"):
        _, cid, ids = line.split("\t")
        labels.append(int(cid))
        tokens.append(ids)
    return tuple(tokens), np.asarray(labels, np.int64), tuple(class_names), tuple(
        vocab)


def _pad(token_strings, max_len):
    x = np.zeros((len(token_strings), max_len), np.int32)
    for i, s in enumerate(token_strings):
        ids = np.asarray(s.split()[:max_len], np.int32)
        x[i, :len(ids)] = ids
    return x


def load_wordnet(max_len=32, val_fraction=0.1, seed=0):
    """Loads the bundled WordNet task and splits it.

    Args:
      max_len: keep the first `max_len` tokens of each definition; shorter ones
        are padded with 0 (`<pad>`).
      val_fraction: fraction of examples held out for validation.
      seed: seed of the random split (numpy's default_rng). The same seed gives
        the same split.

    Returns:
      A `WordNetData`. Class ids are ordered by decreasing frequency over the
      whole dataset; `class_counts` counts the train split only.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    tokens, labels, class_names, vocab = _load_raw()
    n = len(labels)
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    val_idx = np.sort(perm[:n_val])
    train_idx = np.sort(perm[n_val:])
    x = _pad(tokens, max_len)
    num_classes = len(class_names)
    y_train = labels[train_idx]
    return WordNetData(
        x_train=x[train_idx],
        y_train=y_train,
        x_val=x[val_idx],
        y_val=labels[val_idx],
        vocab_size=len(vocab),
        num_classes=num_classes,
        class_counts=np.bincount(y_train, minlength=num_classes).astype(np.int64),
        class_names=list(class_names),
        vocab=list(vocab),
        name="wordnet",
        description=f"WordNet definition -> parent concept, {num_classes} classes")
