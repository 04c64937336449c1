"""Default seeds of the package's random choices: they follow Keras' seeding.

Every choice made without an explicit seed (a feature map's projections, an
LSH sampler's hash functions, a sample stream's start) draws its seed here,
from Python's `random`, as Keras draws its own default seeds
(`keras.random.make_default_seed`); `keras.utils.set_random_seed` seeds it.
So a run repeats exactly in another process after the same
`set_random_seed`, and unseeded objects built in one process still differ.
"""
import random

import numpy as np

# 62 bits: a stream offset stays far from wrapping the int64 position.
_SEED_BITS = 62


def draw_seed():
    """A fresh non-negative seed (< 2^62) from Python's `random`."""
    return random.getrandbits(_SEED_BITS)


def seed_or_draw(seed, name="seed"):
    """`seed` as an int >= 0 when given, else a fresh `draw_seed()`.

    Raises:
      ValueError naming `name` when seed is not a non-negative integer or None.
    """
    if seed is None:
        return draw_seed()
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{name} must be a non-negative integer or None, got {seed!r}")
    return int(seed)
