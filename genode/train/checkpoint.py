"""Checkpoints and workdirs: orbax `CheckpointManager` + the experiment's config.

A workdir holds

  config.json        the experiment config (JSON), written when training starts
  checkpoints/<k>/   orbax checkpoints of the TrainState after k steps
  metrics.jsonl      training metrics, tensorboard/ the same as TensorBoard events
  samples/step_<k>.png   sample grids written during training
  broken_checkpoints/<k>/  unreadable checkpoints moved aside when training resumed

Resume is automatic: checkpoints are restored newest first, each attempt with a fresh
manager (orbax's `latest_step()` does not verify a checkpoint, and a broken step can
poison a manager); an unreadable one is skipped with a warning. A workdir holding a
different config is refused unless `overwrite=True`, which deletes the training outputs
above and starts over; nothing is deleted without it.
"""

from __future__ import annotations

import json
import logging as py_logging
import os
import shutil
from typing import Any, NamedTuple

from absl import logging
import flax.serialization
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
BROKEN_DIR = "broken_checkpoints"
# Outputs of a training run: what `overwrite=True` deletes.
TRAINING_OUTPUTS = (CONFIG_FILE, CHECKPOINT_DIR, BROKEN_DIR, "metrics.jsonl", "tensorboard",
                    "samples")
# Fields that may change between runs in one workdir: they change the cadence of logs,
# checkpoints and samples, never the trained model.
CADENCE_FIELDS = ("train.log_every", "train.checkpoint_every", "train.sample_every",
                  "train.keep_checkpoints", "sampler")


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


class Restored(NamedTuple):
  """A workdir restored for evaluation: config, experiment, host TrainState and its step."""

  config: ml_collections.ConfigDict
  experiment: Any  # genode.experiment.Experiment
  state: Any  # genode.train.state.TrainState, leaves are numpy arrays
  step: int


# ---------------------------------------------------------------------------
# Configs in workdirs.
# ---------------------------------------------------------------------------


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
  """The config as plain JSON types (tuples become lists)."""
  return json.loads(config.to_json())


def config_from_dict(values: dict) -> ml_collections.ConfigDict:
  """Inverse of `config_to_dict` (JSON lists become tuples, as configs write them)."""

  def convert(value):
    if isinstance(value, dict):
      return ml_collections.ConfigDict({k: convert(v) for k, v in value.items()})
    if isinstance(value, list):
      return tuple(convert(v) for v in value)
    return value

  return convert(values)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config saved in `<workdir>/config.json`."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"No {CONFIG_FILE} in {workdir!r}: not a genode workdir (train "
                            "one with `python -m launch.train --workdir=...`)")
  with open(path) as f:
    return config_from_dict(json.load(f))


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  os.makedirs(workdir, exist_ok=True)
  tmp = os.path.join(workdir, CONFIG_FILE + ".tmp")
  with open(tmp, "w") as f:
    json.dump(config_to_dict(config), f, indent=2, sort_keys=True)
  os.replace(tmp, os.path.join(workdir, CONFIG_FILE))


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
  """Dotted names of the fields that differ between two config dicts (cadence excluded)."""
  diffs = []
  for key in sorted(set(old) | set(new)):
    name = f"{prefix}{key}"
    if name in CADENCE_FIELDS:
      continue
    a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
    if isinstance(a, dict) and isinstance(b, dict):
      diffs += config_differences(a, b, name + ".")
    elif a != b:
      diffs.append(f"{name}: {a!r} -> {b!r}")
  return diffs


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict, *,
                    overwrite: bool = False, write: bool = True) -> None:
  """Makes `workdir` ready to train `config`: new, the same experiment, or overwritten.

  Raises ValueError if the workdir holds a different experiment (fields other than
  CADENCE_FIELDS differ) and `overwrite` is False. With `overwrite=True` the previous
  run's TRAINING_OUTPUTS are deleted. `write=False` (processes other than 0) checks only.
  """
  config_path = os.path.join(workdir, CONFIG_FILE)
  new = config_to_dict(config)
  if os.path.exists(config_path):
    with open(config_path) as f:
      old = json.load(f)
    diffs = config_differences(old, new)
    if diffs and not overwrite:
      raise ValueError(
          f"Workdir {workdir!r} holds a different experiment ({'; '.join(diffs)}). Use "
          "another workdir, or pass overwrite=True (--overwrite) to delete its checkpoints, "
          "metrics and samples and start over.")
    if diffs and write:
      removed = _remove_outputs(workdir)
      logging.warning("Overwriting workdir %s: deleted %s", workdir, removed)
  elif os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR)) and not overwrite:
    raise ValueError(f"Workdir {workdir!r} has checkpoints but no {CONFIG_FILE}; refusing to "
                     "resume an unknown experiment (pass overwrite=True to start over)")
  elif overwrite and write:
    _remove_outputs(workdir)
  if write:
    save_config(workdir, config)


def _remove_outputs(workdir: str) -> list[str]:
  removed = []
  for name in TRAINING_OUTPUTS:
    path = os.path.join(workdir, name)
    if os.path.isdir(path):
      shutil.rmtree(path)
    elif os.path.exists(path):
      os.remove(path)
    else:
      continue
    removed.append(name)
  return removed


# ---------------------------------------------------------------------------
# Checkpoints.
# ---------------------------------------------------------------------------


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
    quiet_orbax_logs()

  def _new_manager(self, create: bool = False) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=self._max_to_keep, create=create,
                                           enable_async_checkpointing=self._async)
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


def _check_shapes(target, restored, step):
  bad = []

  def check(path, t, r):
    if tuple(t.shape) != tuple(np.shape(r)):
      bad.append(f"{jax.tree_util.keystr(path)}: saved {np.shape(r)}, expected {t.shape}")

  jax.tree_util.tree_map_with_path(check, target, restored)
  if bad:
    raise CheckpointError(f"Checkpoint {step} does not match the experiment: " + "; ".join(bad))


def restore_workdir(workdir: str, step: int | None = None) -> Restored:
  """Restores a trained workdir for evaluation (read only: nothing in it is changed).

  Args:
    workdir: a directory written by `genode.train.loop.train`.
    step: the checkpoint to restore; None = the newest readable one (falling back, with
      a warning, past unreadable ones).
  Returns:
    Restored(config, experiment, state, step): the saved config, its Experiment, a host
    TrainState (numpy leaves: `state.params`, `state.ema_params`, …) and its step.
  Raises:
    FileNotFoundError: no such workdir, or no config in it.
    CheckpointError: no checkpoints, `step` not among them (the message lists the
      available steps), or no readable checkpoint.
  """
  from genode.experiment import Experiment  # pylint: disable=g-import-not-at-top

  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"Workdir {workdir!r} does not exist")
  config = load_config(workdir)
  checkpointer = Checkpointer(workdir)
  steps = checkpointer.steps()
  if not steps:
    raise CheckpointError(f"No checkpoints in {checkpointer.directory} (has training saved "
                          "one yet? see train.checkpoint_every)")
  experiment = Experiment.from_config(config, validate=False)
  template = experiment.abstract_state()
  if step is None:
    state, step = checkpointer.restore_newest(template)
  else:
    state = checkpointer.restore(template, step)
  return Restored(config=config, experiment=experiment, state=state, step=int(step))
