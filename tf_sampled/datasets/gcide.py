"""GCIDE: a word-level language model with a 100k+ word vocabulary.

The text of the GNU Collaborative International Dictionary of English
(Webster's 1913 and WordNet; GPL-2+, so it is installed, not bundled:
Debian's ``dict-gcide`` puts it at ``/usr/share/dictd/gcide.dict.dz``, a
gzip-compatible dictzip file). Lowercased words ``[a-z]+('[a-z]+)*``, source
tags such as ``[1913 Webster]`` removed: 5.17M tokens, 218,745 word types; the
100k most frequent cover 97.5% of the tokens, the rest become ``<unk>``.

Task: predict each word from the `context` words before it. The token stream is
cut into chunks of 1,000 words; a seeded `val_fraction` of the chunks is held
out, and no example's context crosses a chunk boundary.

Tokenising takes about 20 s; the token stream is cached (about 25 MB) under
`base.cache_dir()`, after which loading takes a second or two.
"""

import collections
import gzip
import os
import re

import numpy as np

from tf_sampled.datasets import base

DEFAULT_PATH = "/usr/share/dictd/gcide.dict.dz"
CHUNK_TOKENS = 1000
_SOURCE_TAG = re.compile(r"(?m)^\s*\[[^\]\n]*\]\s*$")  # "[1913 Webster]" lines
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def _missing(path):
    return FileNotFoundError(
        f"GCIDE text not found at {path}. It is GPL-2+ and not bundled: install "
        "Debian's dict-gcide (`sudo apt-get install dict-gcide`), or pass path= "
        "(or set TF_SAMPLED_GCIDE) to a gcide.dict.dz.")


def _tokenize(path):
    """(words by decreasing count [W] list, counts [W], token stream [T] int32 word ids)."""
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        tokens = _WORD.findall(_SOURCE_TAG.sub("", f.read()).lower())
    counts = collections.Counter(tokens)
    words, index = base.vocabulary(counts, len(counts) + 1, reserved=())
    stream = np.fromiter((index[w] for w in tokens), np.int32, len(tokens))
    return words, np.array([counts[w] for w in words], np.int64), stream


def _cached_tokens(path):
    """`_tokenize(path)`, from a cache keyed on the file's size and time when present."""
    stat = os.stat(path)
    cache = os.path.join(base.cache_dir(),
                         f"gcide-{stat.st_size}-{int(stat.st_mtime)}.npz")
    if os.path.exists(cache):
        with np.load(cache) as f:
            return list(f["words"]), f["counts"], f["stream"]
    words, counts, stream = _tokenize(path)
    try:  # a cache we cannot write only costs time
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        np.savez(cache + ".tmp.npz", words=np.array(words), counts=counts, stream=stream)
        os.replace(cache + ".tmp.npz", cache)
    except OSError:
        pass
    return words, counts, stream


def load_gcide(vocab_size=100_000, context=6, val_fraction=0.02, seed=0, path=None,
               max_tokens=None):
    """Loads the GCIDE next-word task.

    Args:
      vocab_size: number of classes: the `vocab_size - 1` most frequent words
        and `<unk>` for the rest.
      context: words of left context per example (the input window).
      val_fraction: fraction of 1,000-word chunks held out for validation.
      seed: seed of the chunk split.
      path: the dictionary file (default $TF_SAMPLED_GCIDE or Debian's path).
      max_tokens: use only the first this many words (quick tests).

    Returns:
      A `TaskData` (`ordered`, `language_model`): x [N, context] int32 input ids
      (class id + 2; 1 starts a chunk, 0 pads), y [N] int64 class ids in
      decreasing frequency, `class_names` the words.

    Raises:
      FileNotFoundError: the dictionary is not installed (the message says how).
    """
    path = path or os.environ.get("TF_SAMPLED_GCIDE") or DEFAULT_PATH
    if not os.path.exists(path):
        raise _missing(path)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    words, counts, stream = _cached_tokens(path)
    stream = stream[:max_tokens]
    vocab_size = min(vocab_size, len(words) + 1)
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
    unk = vocab_size - 1
    labels = np.minimum(stream, unk).astype(np.int64)  # words are ranked: rare -> <unk>
    names = list(words[:unk]) + ["<unk>"]

    chunk_starts = np.arange(0, len(labels), CHUNK_TOKENS)
    is_val = np.random.default_rng(seed).random(len(chunk_starts)) < val_fraction
    x, y = base.lm_windows(labels, chunk_starts, context)
    val = np.repeat(is_val, CHUNK_TOKENS)[:len(labels)]
    return base.language_model_task(
        (x[~val], y[~val]), (x[val], y[val]), names, "gcide",
        f"GCIDE next word from {context} words, {vocab_size} classes")
