"""The one shape every task of `tf_sampled.datasets` comes in, and shared helpers.

Numpy only: the loaders are usable without TensorFlow.
"""

import dataclasses
import os
from typing import Optional

import numpy as np

PAD_ID = 0  # input token 0 is padding in every task


@dataclasses.dataclass(frozen=True)
class TaskData:
    """A split classification task: token-id inputs -> one class per example.

    Class ids are in decreasing training frequency (id 0 the most frequent),
    the order `tf.random.log_uniform_candidate_sampler` assumes.
    """
    x_train: np.ndarray  # [N_train, max_len] int32 input token ids, 0 = <pad>
    y_train: np.ndarray  # [N_train] int64 class ids
    x_val: np.ndarray  # [N_val, max_len] int32
    y_val: np.ndarray  # [N_val] int64
    vocab_size: int  # input token ids are in [0, vocab_size)
    num_classes: int
    class_counts: np.ndarray  # [num_classes] int64, frequencies in the train split
    class_names: Optional[list] = None  # [num_classes] str (None: too many to list)
    vocab: Optional[list] = None  # [vocab_size] str, the input tokens
    name: str = ""
    description: str = ""  # one line for logs and plot titles
    ordered: bool = False  # inputs are a window where position matters (not a bag)
    language_model: bool = False  # classes are the next word: report perplexity


def frequency_order(labels, num_classes):
    """(new id of each old class [num_classes] int64, counts in the new order).

    Sorts classes by decreasing count (ties: lower old id first).
    """
    counts = np.bincount(labels, minlength=num_classes)
    order = np.argsort(-counts, kind="stable")  # new id -> old id
    new_id = np.empty(num_classes, np.int64)
    new_id[order] = np.arange(num_classes)
    return new_id, counts[order].astype(np.int64)


def cache_dir():
    """Where loaders keep processed copies: $TF_SAMPLED_CACHE or ~/.cache/tf_sampled."""
    return os.environ.get("TF_SAMPLED_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tf_sampled")


def lm_windows(ids, doc_starts, context, chunk=1 << 20):
    """Next-word examples: each token predicted from the `context` tokens before it.

    Args:
      ids: [T] int class ids of all documents, concatenated.
      doc_starts: [D] int offsets of the documents in `ids` (sorted, first 0).
      context: tokens of left context per example.
      chunk: examples built at once (bounds the [chunk, context] temporaries).

    Returns:
      (x [T, context] int32, y [T] int64): input token ids are class id + 2, 1
      marks the start of a document and 0 pads before it, so no example sees
      across a document boundary.
    """
    ids = np.asarray(ids, np.int64)
    doc_starts = np.asarray(doc_starts, np.int64)
    x = np.empty((len(ids), context), np.int32)
    offsets = np.arange(-context, 0)
    for lo in range(0, len(ids), chunk):
        t = np.arange(lo, min(lo + chunk, len(ids)))
        start = doc_starts[np.searchsorted(doc_starts, t, side="right") - 1]
        pos = t[:, None] + offsets  # [n, context] positions of the context words
        rel = pos - start[:, None]
        x[lo:lo + len(t)] = np.where(rel >= 0, ids[np.maximum(pos, 0)] + 2,
                                     np.where(rel == -1, 1, PAD_ID))
    return x, ids.copy()


def vocabulary(counts_by_word, vocab_size, reserved=("<unk>",)):
    """The `vocab_size - len(reserved)` most frequent words, then the reserved ones.

    Args:
      counts_by_word: {word: count}.
      vocab_size: classes in the result, reserved tokens included.

    Returns:
      (words [vocab_size] list, {word: id}): ids in decreasing count (ties:
      alphabetical), reserved tokens last (their ids are fixed up by
      `frequency_order` once their counts are known).
    """
    if vocab_size <= len(reserved):
        raise ValueError(f"vocab_size must be > {len(reserved)}, got {vocab_size}")
    ranked = sorted(counts_by_word.items(), key=lambda kv: (-kv[1], kv[0]))
    words = [w for w, _ in ranked[:vocab_size - len(reserved)]] + list(reserved)
    return words, {w: i for i, w in enumerate(words)}


def language_model_task(train, val, words, name, description):
    """A `TaskData` from `lm_windows` examples, classes put in frequency order.

    Args:
      train, val: (x, y) pairs from `lm_windows` over class ids of `words`.
      words: [num_classes] the class names, in the ids `train` and `val` use.
    """
    num_classes = len(words)
    new_id, class_counts = frequency_order(train[1], num_classes)
    # Inputs are class ids + 2 (0 pad, 1 start): they move with the classes.
    input_map = np.concatenate([[PAD_ID, 1], new_id + 2]).astype(np.int32)
    names = [words[i] for i in np.argsort(new_id)]
    return TaskData(
        x_train=input_map[train[0]], y_train=new_id[train[1]],
        x_val=input_map[val[0]], y_val=new_id[val[1]],
        vocab_size=num_classes + 2, num_classes=num_classes, class_counts=class_counts,
        class_names=names, vocab=["<pad>", "<s>"] + names, name=name,
        description=description, ordered=True, language_model=True)
