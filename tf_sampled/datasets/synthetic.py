"""A synthetic task with up to 10M+ classes for speed studies: a Zipfian teacher.

Classes are drawn from a bounded power law over [0, num_classes) (exponent 1:
P(k) = log((k + 2) / (k + 1)) / log(C + 1), the distribution TensorFlow's
log-uniform sampler assumes). The teacher gives every class `signature_len`
signature words, a fixed hash of (seed, class, j); an example of class y is
`max_len` words, each one of y's signature words with probability 1 - noise and
a uniform random word otherwise. So the inputs determine the class up to the
noise, and nothing of size O(num_classes * dim) is ever stored: memory is the
examples plus the [num_classes] train counts.
"""

import numpy as np

from tf_sampled.datasets import base

_FIRST_WORD = 1  # input ids start after <pad>


def _splitmix64(x):
    """A fixed, well-mixing hash of uint64 arrays (SplitMix64's finaliser)."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(0xFFFFFFFFFFFFFFFF)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def zipf_classes(rng, n, num_classes, exponent=1.0):
    """[n] int64 classes from a bounded power law by inverse CDF, O(n) memory.

    The class is floor(z) - 1 where z has density proportional to z^-exponent
    on [1, num_classes + 1).
    """
    u = rng.random(n)
    top = num_classes + 1.0
    if abs(exponent - 1.0) < 1e-9:
        z = np.exp(u * np.log(top))
    else:
        a = 1.0 - exponent
        z = (1.0 + u * (top**a - 1.0))**(1.0 / a)
    return np.clip(np.floor(z).astype(np.int64) - 1, 0, num_classes - 1)


def signature_words(classes, j, vocab_size, seed):
    """[...] int32: the j-th signature word of each class (ids in [1, vocab_size))."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps, as a hash should
        key = (np.asarray(classes, np.uint64) * np.uint64(1 << 8) + np.asarray(j, np.uint64)
               + np.uint64(seed) * np.uint64(0x632BE59BD9B4E019))
    return (_splitmix64(key) % np.uint64(vocab_size - _FIRST_WORD)).astype(np.int32) + \
        _FIRST_WORD


def _examples(rng, n, num_classes, vocab_size, max_len, signature_len, noise,
              exponent, seed):
    y = zipf_classes(rng, n, num_classes, exponent)
    j = rng.integers(0, signature_len, size=(n, max_len))
    x = signature_words(y[:, None], j, vocab_size, seed)
    random_word = rng.random((n, max_len)) < noise
    x[random_word] = rng.integers(_FIRST_WORD, vocab_size, size=int(random_word.sum()))
    return x, y


def load_synthetic(num_classes=1_000_000, num_train=200_000, num_val=10_000,
                   vocab_size=50_000, max_len=8, signature_len=4, noise=0.25,
                   exponent=1.0, seed=0):
    """Generates the synthetic task from `seed` (same seed, same data).

    Args:
      num_classes: C; 10M costs 80 MB (the train counts) beyond the examples.
      num_train: examples in the train split.
      num_val: examples in the validation split.
      vocab_size: input words, id 0 is padding (never used: inputs are full).
      max_len: words per example.
      signature_len: signature words per class (at most 256).
      noise: probability that a word is uniform instead of a signature word.
      exponent: of the power law over classes (1: log-uniform).
      seed: seeds the teacher (signatures) and the draws.

    Returns:
      A `TaskData` (a bag of words: not `ordered`); class ids are in the power
      law's order, so 0 is the most frequent in expectation, and `class_counts`
      are the train split's.
    """
    if num_classes < 1 or vocab_size < 2 or max_len < 1:
        raise ValueError("num_classes, max_len must be >= 1 and vocab_size >= 2, got "
                         f"{num_classes}, {max_len}, {vocab_size}")
    if not 1 <= signature_len <= 256 or not 0.0 <= noise <= 1.0:
        raise ValueError(f"need 1 <= signature_len <= 256 and 0 <= noise <= 1, got "
                         f"{signature_len}, {noise}")
    rng = np.random.default_rng(seed)
    args = (num_classes, vocab_size, max_len, signature_len, noise, exponent, seed)
    x_train, y_train = _examples(rng, num_train, *args)
    x_val, y_val = _examples(rng, num_val, *args)
    return base.TaskData(
        x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val,
        vocab_size=vocab_size, num_classes=num_classes,
        class_counts=np.bincount(y_train, minlength=num_classes).astype(np.int64),
        name="synthetic",
        description=f"synthetic Zipfian teacher, {num_classes} classes")
