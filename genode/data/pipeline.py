"""Stateless batching: the batch at step k is a pure function of (seed, k).

A global batch of `batch_size` rows is defined per step; process p of P reads rows
[p·b/P, (p+1)·b/P) of it, so one process with batch b sees exactly the concatenation
of what P processes see. For a finite dataset of N examples, global row j of step k is
example `perm(seed, e)[i mod N]`, where i = k·b + j and e = ⌊i/N⌋ is its epoch: every
epoch is a fresh permutation derived from (seed, e) alone, and a batch may straddle two
epochs. Nothing is stored between calls, so a resumed run reads the same batches as an
uninterrupted one.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator

import numpy as np

# Tags that keep the random streams of different uses apart (a SeedSequence's entropy).
TAG_BATCH = 0  # (seed, TAG_BATCH, step): per-step samples of generated data
TAG_EPOCH = 1  # (seed, TAG_EPOCH, epoch): the permutation of a finite dataset
TAG_SPLIT = 2  # (seed, TAG_SPLIT, split): fixed evaluation samples of generated data
TAG_SAMPLE = 3  # (seed, TAG_SAMPLE, 0): `sample(seed, n)` of generated data


def rng(seed: int, tag: int, index: int) -> np.random.Generator:
  """A numpy Generator that depends only on (seed, tag, index), all ≥ 0."""
  if seed < 0 or index < 0:
    raise ValueError(f"seed and step/epoch must be ≥ 0, got seed={seed}, index={index}")
  return np.random.default_rng(np.random.SeedSequence([int(seed), tag, int(index)]))


def process_rows(batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> tuple[int, int]:
  """[start, stop) of this process's rows in the global batch."""
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"process_index must be in [0, {process_count}), got {process_index} "
                     f"(process_count={process_count})")
  if batch_size < 1 or batch_size % process_count:
    raise ValueError(f"batch_size {batch_size} is not a positive multiple of "
                     f"process_count {process_count}")
  per_process = batch_size // process_count
  return process_index * per_process, (process_index + 1) * per_process


def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """The order of the examples in `epoch`, a function of (seed, epoch) only."""
  return rng(seed, TAG_EPOCH, epoch).permutation(num_examples)


def example_indices(seed: int, step: int, batch_size: int, num_examples: int,
                    start: int, stop: int,
                    permutation: Callable[[int, int, int], np.ndarray] = epoch_permutation
                    ) -> np.ndarray:
  """Example indices of rows [start, stop) of the global batch at `step`, (stop−start,).

  `permutation` is `epoch_permutation` or a memoized copy of it.
  """
  if step < 0:
    raise ValueError(f"step must be ≥ 0, got {step}")
  positions = step * batch_size + np.arange(start, stop, dtype=np.int64)
  epochs, offsets = np.divmod(positions, num_examples)
  out = np.empty(len(positions), dtype=np.int64)
  for epoch in np.unique(epochs):  # one or two epochs (more only if b > N)
    rows = epochs == epoch
    out[rows] = permutation(seed, int(epoch), num_examples)[offsets[rows]]
  return out


def batches(train_batch: Callable[[int], dict], start_step: int = 0,
            prefetch: int = 2) -> Iterator[dict]:
  """Yields train_batch(start_step), train_batch(start_step + 1), …, computed `prefetch`
  steps ahead in a background thread (0: in the caller's thread).

  Example: `batches(lambda k: ds.train_batch(seed, k, 128, jax.process_index(),
  jax.process_count()), start_step=restored_step)`.
  """
  step = start_step
  if prefetch <= 0:
    while True:
      yield train_batch(step)
      step += 1
  ready: queue.Queue = queue.Queue(maxsize=prefetch)
  stop = threading.Event()

  def work():
    k = step
    while not stop.is_set():
      try:
        item = (train_batch(k), None)
      except Exception as e:  # surfaced in the consumer
        item = (None, e)
      while not stop.is_set():
        try:
          ready.put(item, timeout=0.1)
          break
        except queue.Full:
          continue
      if item[1] is not None:
        return
      k += 1

  thread = threading.Thread(target=work, daemon=True)
  thread.start()
  try:
    while True:
      batch, error = ready.get()
      if error is not None:
        raise error
      yield batch
  finally:
    stop.set()
    thread.join()
