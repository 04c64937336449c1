"""Keeping a sampler's state up to date with the class table it proposes from."""
import tensorflow as tf

from tf_sampled.samplers import base


def check_schedule(refresh_every, refresh_slice):
    """Validates the schedule arguments (None or a positive int each)."""
    if refresh_every is not None:
        base.check_count("refresh_every", refresh_every)
    if refresh_slice is not None:
        base.check_count("refresh_slice", refresh_slice)


def refresh_after_step(sampler, touched, step, cursor, *, refresh_touched, refresh_every,
                       refresh_slice):
    """One optimizer step's worth of sampler refresh.

    Call it after the optimizer has updated the table. Rows the step touched
    are refreshed incrementally (with a sparse optimizer these are the only
    rows that changed); rows that changed without a gradient (moments of a
    dense optimizer, weight decay) catch up on the schedule: a full rebuild
    every `refresh_every` steps and/or a rolling slice of `refresh_slice` rows
    per step (the whole table every num_classes / refresh_slice steps).

    Args:
      sampler: a `Sampler`; when its `refreshes_ids` is False (a kernel
        sampler without the row snapshot) only full rebuilds apply.
      touched: int64 class ids of any shape (duplicates allowed).
      step: int64 scalar variable, steps refreshed so far (incremented here).
      cursor: int64 scalar variable, the first row of the next rolling slice.
      refresh_touched: refresh the touched rows.
      refresh_every: None or N: full rebuild when the step count is a multiple of N.
      refresh_slice: None or K: rows refreshed per step in a rolling window.
    """
    incremental = sampler.refreshes_ids
    if refresh_touched and incremental:
        sampler.refresh(touched)
    step_count = step.assign_add(1)
    if refresh_slice and incremental:
        num_classes = sampler.num_classes
        ids = (cursor + tf.range(min(refresh_slice, num_classes), dtype=tf.int64)) % num_classes
        sampler.refresh(ids)
        cursor.assign((cursor + refresh_slice) % num_classes)
    if refresh_every:
        def rebuild():
            sampler.refresh()
            return tf.constant(True)
        tf.cond(tf.equal(step_count % refresh_every, 0), rebuild, lambda: tf.constant(False))
