"""Optimized σ grids of a workdir: fitted to its checkpoint, stored beside it, loaded by name.

    <workdir>/schedules/<solver>_<steps>.json

One file per (solver, steps), written by `genode.schedule_fit.optimize_workdir` (`python
-m launch.optimize_schedule`): the grid (`sigmas`, n positive σ's then 0), how it was found
(`genode.sampling.schedules.optimize_sigmas`: objective, its value before and after on
the training noises and on held-out ones, iterations, seed, time), and what it belongs
to: the checkpoint step and the formulation (its repr) and sampling coordinates.
`load_grid` (the grid named "optimized" in `launch.sample` and `launch.evaluate`)
refuses, in one line, a missing grid (listing the workdir's grids) and a grid for
another checkpoint step or formulation unless `force=True`. Nothing is written until the
optimization has finished, so a refused or failed run changes no file.
"""

from __future__ import annotations

import json
import os

from genode.sampling import as_sigmas

SCHEDULE_DIR = "schedules"
OPTIMIZED = "optimized"  # the grid name that loads a stored grid


def grid_path(workdir: str, solver: str, steps: int) -> str:
  return os.path.join(workdir, SCHEDULE_DIR, f"{solver}_{int(steps)}.json")


def stored_grids(workdir: str) -> list[tuple[str, int]]:
  """(solver, steps) of every stored grid, sorted."""
  directory = os.path.join(workdir, SCHEDULE_DIR)
  if not os.path.isdir(directory):
    return []
  found = []
  for name in os.listdir(directory):
    stem, ext = os.path.splitext(name)
    solver, _, steps = stem.rpartition("_")
    if ext == ".json" and solver and steps.isdigit():
      found.append((solver, int(steps)))
  return sorted(found)


def save_grid(workdir: str, record: dict) -> str:
  """Writes `record` (with solver, steps, sigmas) atomically; returns its path."""
  path = grid_path(workdir, record["solver"], record["steps"])
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(record, f, indent=2, sort_keys=True)
  os.replace(tmp, path)
  return path


def load_grid(workdir: str, solver: str, steps: int, *, checkpoint_step: int | None = None,
              formulation: str | None = None, force: bool = False) -> dict:
  """The stored record of (solver, steps); its `sigmas` are checked (`as_sigmas`).

  ValueError (one line) if there is none (naming the stored ones), or if it was fitted to
  another checkpoint step or formulation than the given ones, unless `force`.
  """
  path = grid_path(workdir, solver, steps)
  if not os.path.exists(path):
    have = [f"{s} steps={n}" for s, n in stored_grids(workdir)]
    raise ValueError(
        f"No optimized grid for solver {solver!r} with steps={steps} in {workdir!r}; it has "
        f"{have or 'none'} (make one with `python -m launch.optimize_schedule "
        f"--workdir={workdir} --solver={solver} --steps={steps}`)")
  with open(path) as f:
    record = json.load(f)
  mismatches = []
  if checkpoint_step is not None and record.get("checkpoint_step") != checkpoint_step:
    mismatches.append(f"checkpoint step {record.get('checkpoint_step')} (sampling step "
                      f"{checkpoint_step})")
  if formulation is not None and record.get("formulation") != formulation:
    mismatches.append(f"formulation {record.get('formulation')} (this run's: {formulation})")
  if mismatches and not force:
    raise ValueError(f"The optimized grid {path} was fitted to another "
                     f"{' and '.join(mismatches)}; re-optimize it, or pass --force to use it "
                     "anyway")
  record["sigmas"] = as_sigmas(record["sigmas"])
  return record


def formulation_record(family) -> str:
  """What a grid belongs to besides the checkpoint: the formulation and the coordinates."""
  return f"{family.formulation!r}, coordinates={family.sampler.coordinates}"
