"""Checkpoints: the orbax `CheckpointManager` of a workdir's `checkpoints/` folder.

`Checkpointer(workdir)` saves TrainStates under `<workdir>/checkpoints/<k>/` and restores
them newest first, each attempt with a fresh manager (orbax's `latest_step()` does not
verify a checkpoint, and a broken step can poison a manager); an unreadable one is
skipped with one warning (and, when training resumes, moved to
`<workdir>/broken_checkpoints/`). The workdir itself (config, lock, inference restore)
is `genode.workdir`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging as py_logging
import os
import shutil

from absl import logging
import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"
BROKEN_DIR = "broken_checkpoints"


def quiet_orbax_logs() -> None:
  """Drops orbax's INFO logs (dozens per save) from absl's logger; warnings stay."""
  logger = logging.get_absl_logger()
  if not any(isinstance(f, _OrbaxInfoFilter) for f in logger.filters):
    logger.addFilter(_OrbaxInfoFilter())


class _OrbaxInfoFilter:

  def filter(self, record) -> bool:
    return record.levelno >= py_logging.WARNING or (
        f"{os.sep}orbax{os.sep}" not in record.pathname)


class CheckpointError(RuntimeError):
  """No usable checkpoint (none saved, a missing step, or none readable)."""


@dataclasses.dataclass
class _LatestAndProtected:
  """Orbax preservation policy: the newest `n` checkpoints (all if None), and every step in
  `protected` (a set the owner updates, e.g. the step selected by validation)."""

  n: int | None
  protected: set

  def should_preserve(self, checkpoints, *, context):
    del context
    count = len(checkpoints)
    latest = [self.n is None or i >= count - self.n for i in range(count)]
    return [keep or int(c.step) in self.protected for keep, c in zip(latest, checkpoints)]


class Checkpointer:
  """Saves TrainStates under `<workdir>/checkpoints` and restores them newest first.

  Saving is asynchronous (the training loop goes on while orbax writes); `wait()` blocks
  until the last save is committed. Every process of a multi-process run must call `save`.
  """

  def __init__(self, workdir: str, *, max_to_keep: int | None = None,
               async_save: bool = True):
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    self.workdir = workdir
    self._max_to_keep = max_to_keep
    self._async = async_save
    self._manager: ocp.CheckpointManager | None = None
    # Steps kept whatever `max_to_keep` says (the loop's validation-selected step).
    self.protected: set[int] = set()
    quiet_orbax_logs()

  def _new_manager(self, create: bool = False) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        create=create, enable_async_checkpointing=self._async,
        preservation_policy=_LatestAndProtected(self._max_to_keep, self.protected))
    return ocp.CheckpointManager(self.directory, options=options)

  def steps(self) -> list[int]:
    """Committed checkpoint steps, ascending (read from disk, not verified)."""
    if not os.path.isdir(self.directory):
      return []
    manager = ocp.CheckpointManager(self.directory)
    try:
      return sorted(manager.all_steps())
    finally:
      manager.close()

  def save(self, state, step: int | None = None) -> None:
    """Saves a (host or single-copy) TrainState at `step` (default: `state.step`)."""
    if self._manager is None:
      self._manager = self._new_manager(create=True)
    step = int(np.asarray(jax.device_get(state.step))) if step is None else step
    tree = flax.serialization.to_state_dict(state)
    self._manager.save(step, args=ocp.args.PyTreeSave(tree), force=True)

  def wait(self) -> None:
    if self._manager is not None:
      self._manager.wait_until_finished()

  def close(self) -> None:
    if self._manager is not None:
      self._manager.wait_until_finished()
      self._manager.close()
      self._manager = None

  def restore(self, template, step: int):
    """The TrainState saved at `step`, as numpy leaves, in the structure of `template`.

    `template` is a TrainState of arrays or `jax.ShapeDtypeStruct`s. Raises CheckpointError
    naming the available steps if `step` is not there; orbax's error if it is unreadable.
    """
    steps = self.steps()
    if step not in steps:
      raise CheckpointError(f"No checkpoint at step {step} in {self.directory}; available "
                            f"steps: {steps}")
    target = flax.serialization.to_state_dict(template)
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
    manager = self._new_manager()  # fresh per attempt: a broken step can poison a manager
    with _quiet_asyncio():
      try:
        tree = manager.restore(step, args=ocp.args.PyTreeRestore(item=target,
                                                                 restore_args=restore_args))
      finally:
        manager.close()
    _check_shapes(target, tree, step)
    return flax.serialization.from_state_dict(template, tree)

  def restore_newest(self, template, *, move_broken: bool = False):
    """(state, step) of the newest readable checkpoint, or None if there is none.

    Unreadable checkpoints are skipped with a warning; `move_broken=True` (the training
    loop) moves them to `<workdir>/broken_checkpoints/` so that new saves can take their
    step. Raises CheckpointError if checkpoints exist but none can be read.
    """
    steps = self.steps()
    errors = []
    for step in reversed(steps):
      try:
        return self.restore(template, step), step
      except Exception as e:  # pylint: disable=broad-exception-caught
        errors.append(f"step {step}: {type(e).__name__}: {e}")
        logging.warning("Checkpoint %s/%d is unreadable (%s: %s); trying an older one.",
                        self.directory, step, type(e).__name__, e)
        if move_broken:
          self._move_aside(step)
    if steps:
      raise CheckpointError(f"No readable checkpoint in {self.directory}:\n  " +
                            "\n  ".join(errors))
    return None

  def _move_aside(self, step: int) -> None:
    source = os.path.join(self.directory, str(step))
    target = os.path.join(self.workdir, BROKEN_DIR, str(step))
    if os.path.exists(target):
      shutil.rmtree(target)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.move(source, target)
    logging.warning("Moved the unreadable checkpoint %s to %s", source, target)


@contextlib.contextmanager
def _quiet_asyncio():
  """Silences asyncio's own error logs while a restore runs and is cleaned up.

  A failed orbax restore leaves tasks of its event loop behind; when they are collected
  asyncio logs "Event loop is closed" tracebacks for each. The failure itself is
  reported once, by `restore_newest`'s warning (or the raised error).
  """
  logger = py_logging.getLogger("asyncio")
  level = logger.level
  logger.setLevel(py_logging.CRITICAL)
  try:
    yield
  finally:
    gc.collect()  # the leftover tasks are collected (and would log) here, still silenced
    logger.setLevel(level)


def _check_shapes(target, restored, step):
  bad = []

  def check(path, t, r):
    if tuple(t.shape) != tuple(np.shape(r)):
      bad.append(f"{jax.tree_util.keystr(path)}: saved {np.shape(r)}, expected {t.shape}")

  jax.tree_util.tree_map_with_path(check, target, restored)
  if bad:
    raise CheckpointError(f"Checkpoint {step} does not match the experiment: " + "; ".join(bad))
