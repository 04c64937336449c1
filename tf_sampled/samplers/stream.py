"""The checkpointed random stream every sampler draws from.

A sampling call's draws are a function of (seed, seed2, counter) alone: the
sampling ops take the counter as an input (no random state lives in an op's
kernel instance) and the built-in samplers draw with stateless ops keyed by
it. The counter is a variable of the sampler, incremented by every call, so a
restored model continues the stream where the saved one stopped, and the
same seed with the same counter gives the same samples in any process.
"""
import tensorflow as tf

from tf_sampled import _seeding

# Positions are int64 >= 0 (the ops reject negative counters).
_POSITION_MASK = 2**63 - 1
# The first seed attribute of seeded calls: TensorFlow's default graph seed,
# the one `tf.random` ops use with an op seed and no global seed. Unseeded
# calls use (0, 0), so the two never share a key.
_SEEDED = 87654321


class SampleStream(tf.Module):
    """A sampler's position in its random stream.

    State (non-trainable int64 scalars, checkpointed with the sampler):
      counter: sampling calls made so far (each call reads it, then adds 1).
        Under `tf.distribute.MirroredStrategy` every replica makes the same
        calls, so the replicas' copies stay identical.
      offset: a random start drawn once at construction, for unseeded calls
        (seed=None): such a sampler draws a stream of its own, and its
        restored copy continues that stream. Drawn from Python's `random`
        (`tf_sampled._seeding`), which `keras.utils.set_random_seed` seeds.

    The global TensorFlow seed does not enter: it is a process setting, read
    when a function is traced (a restored model traced after another
    `tf.random.set_seed` would draw another stream), and its per-op seeds
    depend on the graph (eager and `tf.function` calls would differ).

    A call's stream position is the counter (plus the offset when unseeded);
    with R > 1 replicas in sync it is counter * R + replica id, so replicas
    draw different samples (as different devices of one batch should) and a
    run on R replicas repeats exactly on R replicas.
    """

    def __init__(self, name="sample_stream"):
        super().__init__(name=name)
        with self.name_scope:
            self.counter = tf.Variable(tf.constant(0, tf.int64), trainable=False,
                                       name="counter")
            self.offset = tf.Variable(tf.constant(_seeding.draw_seed(), tf.int64),
                                      trainable=False, name="offset")

    def next(self, seed=None):
        """Seeds and position of one sampling call; advances the counter.

        Args:
          seed: optional int seed: the same seed and counter give the same
            samples; None: this sampler's own stream (from its offset).

        Returns:
          (seed1, seed2, position): the ops' seed and seed2 attributes (ints)
          and an int64 scalar tensor >= 0, their `counter` input.
        """
        seed1, seed2 = (_SEEDED, int(seed) % 2**63) if seed is not None else (0, 0)
        count = self.counter.read_value()
        with tf.control_dependencies([count]):
            self.counter.assign_add(1)
        position = count
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            position = (position * replica.num_replicas_in_sync
                        + tf.cast(replica.replica_id_in_sync_group, tf.int64))
        if seed is None:
            position += self.offset
        # Wraps (after 2^63 calls, or from a huge offset) into the valid range.
        position = tf.bitwise.bitwise_and(position, tf.constant(_POSITION_MASK, tf.int64))
        return seed1, seed2, position


def stateless_key(seed1, seed2, position):
    """The [2] int64 seed of stateless random ops for one call of a stream.

    Args:
      seed1, seed2: ints, from `SampleStream.next`.
      position: int64 scalar tensor, from `SampleStream.next`.
    """
    return tf.random.experimental.stateless_fold_in(
        tf.constant([seed1, seed2], tf.int64), position)
