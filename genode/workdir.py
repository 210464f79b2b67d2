"""Workdirs: the layer above `Experiment` that owns a run's directory.

A workdir holds

  config.json        the experiment config (JSON), written when training starts
  lock.json          the host and pid of the run training in it (while it runs)
  checkpoints/<k>/   orbax checkpoints of the TrainState after k steps
  metrics.jsonl      training metrics, tensorboard/ the same as TensorBoard events
  samples/step_<k>.png   sample grids written during training
  selection.json     the validation history and the selected (best) step, when the run
                     selects its checkpoint by held-out NLL (`genode.validation`)
  broken_checkpoints/<k>/  unreadable checkpoints moved aside when training resumed
  eval/<k>/          launch.evaluate's outputs

This module owns `config.json` (`prepare_workdir`: a workdir holding another experiment
is refused unless `overwrite=True`, which deletes the previous run's outputs; nothing is
deleted without it), the run's lock (`hold`: one training run per workdir), and opening
a trained run for inference (`restore_workdir`, `sample_workdir`), which needs neither
the training data files nor a training batch that divides this machine's devices.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from typing import Any, NamedTuple

from absl import logging
import jax
import ml_collections
import numpy as np

from genode import images
from genode.experiment import Experiment
from genode.train.checkpoint import (BROKEN_DIR, CHECKPOINT_DIR, CheckpointError,
                                     Checkpointer)

CONFIG_FILE = "config.json"
LOCK_FILE = "lock.json"
SELECTION_FILE = "selection.json"
# Outputs of a training run: what `overwrite=True` deletes.
TRAINING_OUTPUTS = (CONFIG_FILE, CHECKPOINT_DIR, BROKEN_DIR, "metrics.jsonl", "tensorboard",
                    "samples", SELECTION_FILE)
# Fields that may change between runs in one workdir: they change the cadence of logs,
# checkpoints and samples, never the trained model.
CADENCE_FIELDS = ("train.log_every", "train.checkpoint_every", "train.sample_every",
                  "train.keep_checkpoints", "train.validate_every", "sampler")
# May grow when the learning rate does not depend on it (optim.decay "constant").
NUM_STEPS_FIELD = "train.num_steps"


class WorkdirError(RuntimeError):
  """A workdir that cannot be used as asked (held by another run, another experiment)."""


class Restored(NamedTuple):
  """A workdir restored for inference: config, experiment, host TrainState and its step."""

  config: ml_collections.ConfigDict
  experiment: Experiment
  state: Any  # genode.train.state.TrainState, leaves are numpy arrays
  step: int


# ---------------------------------------------------------------------------
# config.json
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
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"Workdir {workdir!r} does not exist")
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"No {CONFIG_FILE} in {workdir!r}: not a genode workdir (train "
                            "one with `python -m launch.train --workdir=...`)")
  with open(path) as f:
    return config_from_dict(json.load(f))


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  os.makedirs(workdir, exist_ok=True)
  _write_json(os.path.join(workdir, CONFIG_FILE), config_to_dict(config))


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
  """Dotted names of the fields that differ between two config dicts (cadence excluded).

  A field the old config lacks is no difference when the new one has it switched off
  ("", 0, False or None): a run written before genode gained that option (e.g.
  `train.select_by`) resumes.
  """
  diffs = []
  for key in sorted(set(old) | set(new)):
    name = f"{prefix}{key}"
    if name in CADENCE_FIELDS or (key not in old and new[key] in ("", 0, False, None)):
      continue
    a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
    if isinstance(a, dict) and isinstance(b, dict):
      diffs += config_differences(a, b, name + ".")
    elif a != b:
      diffs.append(f"{name}: {a!r} -> {b!r}")
  return diffs


def _longer_run(old: dict, new: dict, diffs: list[str]) -> bool:
  """Whether the only difference is more training steps under a schedule that does not
  depend on the step count (so the longer run repeats the shorter one, then goes on).

  Raises ValueError (one line, why) if the step count grows but the schedule depends on it.
  """
  if len(diffs) != 1 or not diffs[0].startswith(NUM_STEPS_FIELD + ":"):
    return False
  if new["train"]["num_steps"] < old["train"]["num_steps"]:
    return False
  decay = new["optim"]["decay"]
  if decay != "constant":
    raise ValueError(
        f"train.num_steps {old['train']['num_steps']} -> {new['train']['num_steps']}: this "
        f"run's learning rate decays ({decay!r}) to 0 at the last step, so a longer run "
        "would have trained differently from the start; train it in a new workdir")
  return True


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict, *,
                    overwrite: bool = False, write: bool = True) -> None:
  """Makes `workdir` ready to train `config`: new, the same experiment, or overwritten.

  The same experiment includes a longer run of it when the learning-rate schedule is
  constant after warm-up (`train.num_steps` may grow). Raises ValueError if the workdir
  holds a different experiment (fields other than CADENCE_FIELDS differ) and `overwrite`
  is False. With `overwrite=True` the previous run's TRAINING_OUTPUTS are deleted.
  `write=False` (processes other than 0) checks only.
  """
  config_path = os.path.join(workdir, CONFIG_FILE)
  new = config_to_dict(config)
  if os.path.exists(config_path):
    with open(config_path) as f:
      old = json.load(f)
    diffs = config_differences(old, new)
    if diffs and not overwrite and not _longer_run(old, new, diffs):
      raise ValueError(
          f"Workdir {workdir!r} holds a different experiment ({'; '.join(diffs)}). Use "
          "another workdir, or pass overwrite=True (--overwrite) to delete its checkpoints, "
          "metrics and samples and start over.")
    if diffs and overwrite and write:
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
# One training run per workdir.
# ---------------------------------------------------------------------------


def _process_start(pid: int) -> str | None:
  """The start time of process `pid` (Linux /proc; None where unknown), so that a pid
  reused by another process is not taken for the holder."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _alive(holder: dict) -> bool:
  """Whether the lock's holder still runs (a holder on another host counts as alive)."""
  if holder.get("host") != socket.gethostname():
    return True
  pid = int(holder.get("pid", -1))
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  except (OSError, ValueError):
    return False
  start = holder.get("start")
  return start is None or start == _process_start(pid)


@contextlib.contextmanager
def hold(workdir: str):
  """Holds `workdir` for one training run: `<workdir>/lock.json` records host and pid.

  A workdir held by a live run raises WorkdirError naming the holder; a lock left by a
  run that died (its pid is gone on this host) is stale and taken over, with a warning.
  The lock is removed when the block exits.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  me = dict(host=socket.gethostname(), pid=os.getpid(), start=_process_start(os.getpid()),
            since=time.strftime("%Y-%m-%d %H:%M:%S"))
  for _ in range(2):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      holder = _read_lock(path)
      if holder is not None and _alive(holder):
        raise WorkdirError(
            f"Workdir {workdir!r} is in use by another training run (host "
            f"{holder.get('host')}, pid {holder.get('pid')}, since {holder.get('since')}); "
            f"wait for it, stop it, or delete {path} if that run is gone") from None
      logging.warning("Taking over the stale lock of a run that is gone: %s", holder)
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
      continue
    with os.fdopen(fd, "w") as f:
      json.dump(me, f)
    break
  else:
    raise WorkdirError(f"Could not take the lock {path}; another run is starting there")
  try:
    yield
  finally:
    if _read_lock(path) == me:
      os.remove(path)


def _read_lock(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError):
    return {}  # half-written or garbled: no live holder can be named


# ---------------------------------------------------------------------------
# The validation-selected step (genode.validation).
# ---------------------------------------------------------------------------


def read_selection(workdir: str) -> dict | None:
  """`<workdir>/selection.json` (history [[step, value], …], best_step, best_value, unit),
  or None when the run does not select by validation."""
  path = os.path.join(workdir, SELECTION_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def write_selection(workdir: str, record: dict | None) -> None:
  path = os.path.join(workdir, SELECTION_FILE)
  if record is None:
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)
    return
  _write_json(path, record)


def selected_step(workdir: str) -> int | None:
  """The step the run's validation selected, if any."""
  record = read_selection(workdir)
  return None if record is None else int(record["best_step"])


def default_step(workdir: str) -> int | None:
  """The step `restore_workdir(workdir)` tries first: the one validation selected when
  its checkpoint exists, else the newest (None without checkpoints)."""
  steps = Checkpointer(workdir).steps()
  if selected_step(workdir) in steps:
    return selected_step(workdir)
  return max(steps) if steps else None


# ---------------------------------------------------------------------------
# Opening a trained run for inference.
# ---------------------------------------------------------------------------


def open_experiment(workdir: str) -> Experiment:
  """The workdir's Experiment for inference: no data files, any device count."""
  return Experiment.from_config(load_config(workdir), validate=False, for_training=False)


def restore_workdir(workdir: str, step: int | None = None) -> Restored:
  """Restores a trained workdir for inference (read only: nothing in it is changed).

  Needs neither the training data files nor a batch that divides this machine's devices.

  Args:
    workdir: a directory written by `genode.loop.train`.
    step: the checkpoint to restore; None = the step selected by validation
      (`selection.json`, when the run has one and its checkpoint exists), else the newest
      readable one (falling back, with a warning, past unreadable ones).
  Returns:
    Restored(config, experiment, state, step): the saved config, its Experiment, a host
    TrainState (numpy leaves: `state.params`, `state.ema_params`, …) and its step.
  Raises:
    FileNotFoundError: no such workdir, or no config in it.
    CheckpointError: no checkpoints, `step` not among them (the message lists the
      available steps), or no readable checkpoint.
  """
  experiment = open_experiment(workdir)
  checkpointer = Checkpointer(workdir)
  steps = checkpointer.steps()
  if not steps:
    raise CheckpointError(f"No checkpoints in {checkpointer.directory} (has training saved "
                          "one yet? see train.checkpoint_every)")
  template = experiment.abstract_state()
  if step is None and selected_step(workdir) in steps:
    step = selected_step(workdir)
    logging.info("Restoring step %d of %s, selected by validation (%s)", step, workdir,
                 SELECTION_FILE)
  if step is None:
    state, step = checkpointer.restore_newest(template)
  else:
    state = checkpointer.restore(template, step)
  return Restored(config=experiment.config, experiment=experiment, state=state,
                  step=int(step))


def warm_start(experiment: Experiment, state):
  """`state` with the parameters of `config.init_from`'s run, if that is set.

  The other run's "ema" (or "raw") parameters of its newest (or `step`) checkpoint become
  both the parameters and the EMA; the optimizer state is fresh (Liu et al. 2022: each
  reflow restarts Adam and the EMA). A run whose parameters have another structure or
  shape (another architecture) is not used: training starts fresh, with a warning.
  """
  source = experiment.config.get("init_from")
  if source is None or not source.get("workdir"):
    return state
  restored = restore_workdir(source.workdir, source.get("step"))
  params = select_params(restored.state, source.get("params", "ema"))
  shapes = lambda tree: jax.tree.map(lambda x: (tuple(np.shape(x)), str(np.asarray(x).dtype)),
                                     tree)
  if (jax.tree.structure(params) != jax.tree.structure(state.params)
      or shapes(params) != shapes(jax.device_get(state.params))):
    logging.warning("init_from %s: its parameters do not fit this model (another "
                    "architecture); training from scratch.", source.workdir)
    return state
  logging.info("Starting from the %s parameters of %s at step %d", source.get("params", "ema"),
               source.workdir, restored.step)
  params = jax.tree.map(np.asarray, params)
  return state.replace(params=params, ema_params=jax.tree.map(np.copy, params),
                       opt_state=experiment.optimizer.init(params))


def select_params(state, params: str = "ema"):
  """The "ema" or "raw" parameters of a TrainState; ValueError for another name."""
  if params not in PARAMS:
    raise ValueError(f"Unknown params {params!r}; valid: {list(PARAMS)}")
  return state.ema_params if params == "ema" else state.params


PARAMS = ("ema", "raw")


def sample_workdir(workdir: str, *, step: int | None = None, params: str = "ema",
                   num_samples: int | None = None, seed: int = 0, out: str | None = None,
                   force: bool = False, **sampler) -> dict:
  """Samples a trained workdir's checkpoint; writes `<out>.png` (a grid) and `<out>.npz`.

  `sampler` overrides the family's sampler (diffusion: solver, grid, steps, sigmas,
  guidance_scale, and the solver's options); unset ones come from the workdir's config.
  grid "optimized" (an override or the config's) is the workdir's stored grid for the
  solver and steps (`genode.schedule_store.load_grid`; `force` takes one fitted to another
  checkpoint step or formulation).
  `params` is "ema" or "raw"; `out` defaults to `<workdir>/samples/<step>_<params>_<…>`.
  Names are checked (ValueError listing valid ones) before anything is restored or
  compiled. Returns a record: paths, step, sampler settings, NFE, finite.
  """
  if params not in PARAMS:
    raise ValueError(f"Unknown params {params!r}; valid: {list(PARAMS)}")
  experiment = open_experiment(workdir)
  family = experiment.family
  sampler = resolve_optimized_grid(workdir, family, sampler, step, force=force)
  settings = family.sampler_overrides(**sampler)  # unknown names → ValueError
  num_samples = num_samples or experiment.config.sampler.num_samples
  run = family.make_sampler(num_samples, **settings.kwargs)
  restored = restore_workdir(workdir, step)
  weights = select_params(restored.state, params)
  labels = family.grid_labels(num_samples)
  x, info = run(weights, jax.random.key(seed), labels)
  x = jax.device_get(x)
  if out is None:
    out = os.path.join(workdir, "samples",
                       f"{restored.step}_{params}_{settings.label}_seed{seed}")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  images.save_samples(out + ".png", x, getattr(experiment.dataset, "to_uint8", None))
  arrays = {"x": x} if labels is None else {"x": x, "label": jax.device_get(labels)}
  np.savez(out + ".npz", **arrays)
  return dict(png=out + ".png", npz=out + ".npz", step=restored.step, params=params,
              **settings.record, num_samples=num_samples, seed=seed, nfe=int(info.nfe),
              finite=bool(info.finite))


def resolve_optimized_grid(workdir: str, family, sampler: dict, step: int | None = None, *,
                           force: bool = False) -> dict:
  """`sampler` overrides with grid "optimized" resolved to the workdir's stored σ's.

  The grid is "optimized" if asked for, or if the config's is and no other grid or σ's
  are asked for. ValueError (one line) for a missing grid (listing the stored ones), or
  one fitted to another checkpoint step or formulation unless `force`.
  """
  from genode import schedule_store  # pylint: disable=g-import-not-at-top
  spec = getattr(family, "sampler", None)
  if getattr(spec, "grid", None) is None:  # a family without σ grids (flows, CNFs)
    return sampler
  asked = sampler.get("grid")
  if asked is None and sampler.get("sigmas") is None and (
      spec.sigmas is None or sampler.get("steps") is not None):
    asked = spec.grid
  if asked != schedule_store.OPTIMIZED:
    return sampler
  if sampler.get("sigmas") is not None:
    raise ValueError("Pass either --grid=optimized or --sigmas, not both")
  solver = sampler.get("solver") or spec.solver
  steps = sampler.get("steps") or spec.steps
  record = schedule_store.load_grid(
      workdir, solver, steps, checkpoint_step=default_step(workdir) if step is None else step, formulation=schedule_store.formulation_record(family), force=force)
  return dict(sampler, solver=solver, grid=schedule_store.OPTIMIZED, steps=None,
              sigmas=record["sigmas"])


def _write_json(path: str, value) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2, sort_keys=True)
  os.replace(tmp, path)
