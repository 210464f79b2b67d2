"""Optimized σ grids of a workdir: fitted to its checkpoint, stored beside it, loaded by name.

    <workdir>/schedules/<solver>_<steps>.json

One file per (solver, steps), written by `optimize_workdir` (`python -m
launch.optimize_schedule`): the grid (`sigmas`, n positive σ's then 0), how it was found
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
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from genode.sampling import schedules

SCHEDULE_DIR = "schedules"
OPTIMIZED = "optimized"  # the grid name that loads a stored grid
OBJECTIVES = schedules.OBJECTIVES + ("feature",)  # "feature": MSE of feature-net features


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
  from genode.sampling import as_sigmas  # pylint: disable=g-import-not-at-top
  record["sigmas"] = as_sigmas(record["sigmas"])
  return record


def formulation_record(family) -> str:
  """What a grid belongs to besides the checkpoint: the formulation and the coordinates."""
  return f"{family.formulation!r}, coordinates={family.sampler.coordinates}"


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def feature_map(dataset):
  """x (B, H, W, C) in [−1, 1] → the dataset's feature-net features (B, F), traceable."""
  from genode.evaluation import evaluate as evaluate_lib  # pylint: disable=g-import-not-at-top
  from genode.evaluation import feature_net as feature_net_lib  # pylint: disable=g-import-not-at-top
  name = getattr(dataset, "name", "?")
  spec = feature_net_lib.get_feature_net_spec(name)
  train_x, train_y = evaluate_lib._image_split(dataset, "train")  # pylint: disable=protected-access
  test_x, test_y = evaluate_lib._image_split(dataset, "test")  # pylint: disable=protected-access
  net = feature_net_lib.load_or_train_feature_net(name, spec, train_x, train_y, test_x, test_y)
  module, params = spec.module, net.params
  return lambda x: module.apply({"params": params}, x)[1]


def optimize_denoiser(denoiser, shape, solver: str, steps: int, *, sigma_min: float,
                      sigma_max: float, objective: str = "mse", feature_fn=None,
                      num_train: int = 256, num_holdout: int = 256, seed: int = 0,
                      num_iterations: int = 100, learning_rate: float = 0.05,
                      batch_size: int | None = None, reference_tol: float = 1e-5,
                      reference=None, dtype=None) -> dict:
  """`optimize_sigmas` for D(x; σ) on x of `shape` (no batch axis); the record to store.

  Training and held-out noises come from independent keys of `seed`; the record holds
  the grid, the objective before/after (training and held-out), wall and CPU seconds.
  """
  if objective not in OBJECTIVES:
    raise ValueError(f"Unknown objective {objective!r}; valid objectives: {list(OBJECTIVES)}")
  if objective == "feature" and feature_fn is None:
    raise ValueError("objective 'feature' needs a feature network (image datasets with one: "
                     "digits, mnist)")
  wall, cpu = time.perf_counter(), _cpu_seconds()
  result = schedules.optimize_sigmas(
      denoiser, jax.random.key(seed), steps, solver, sigma_min=sigma_min, sigma_max=sigma_max,
      shape=(num_train,) + tuple(shape), holdout=num_holdout, reference=reference,
      reference_tol=reference_tol, objective="mse" if objective == "feature" else objective,
      feature_fn=feature_fn if objective == "feature" else None,
      num_iterations=num_iterations, learning_rate=learning_rate, batch_size=batch_size,
      seed=seed, dtype=dtype)
  return dict(
      solver=solver, steps=int(steps), nfe=result.nfe,
      sigmas=[float(s) for s in result.sigmas],
      initial_sigmas=[float(s) for s in result.initial_sigmas], objective=objective,
      objective_before=result.train_before, objective_after=result.train_after,
      holdout_before=result.holdout_before, holdout_after=result.holdout_after,
      num_train=num_train, num_holdout=num_holdout, seed=seed, num_iterations=num_iterations,
      learning_rate=learning_rate, batch_size=batch_size, reference_tol=reference_tol,
      optimize_seconds=result.seconds, reference_seconds=result.reference_seconds,
      wall_seconds=time.perf_counter() - wall, cpu_seconds=_cpu_seconds() - cpu)


def optimize_workdir(workdir: str, solver: str, steps: int, *, step: int | None = None,
                     params: str = "ema", objective: str = "mse", write: bool = True,
                     **kwargs) -> dict:
  """Fits the (solver, steps) grid to a workdir's checkpoint; writes it (see module doc).

  kwargs go to `optimize_denoiser` (num_train, num_holdout, seed, num_iterations, …).
  Names are checked before anything is restored; the file is written only at the end.
  """
  from genode import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  _check_solver(solver)
  if objective not in OBJECTIVES:
    raise ValueError(f"Unknown objective {objective!r}; valid objectives: {list(OBJECTIVES)}")
  if params not in workdir_lib.PARAMS:
    raise ValueError(f"Unknown params {params!r}; valid: {list(workdir_lib.PARAMS)}")
  experiment = workdir_lib.open_experiment(workdir)
  family = experiment.family
  if not hasattr(family, "denoiser") or not hasattr(family, "sigma_range"):
    raise ValueError(f"Workdir {workdir!r} holds a {family.describe()}: schedules are fitted "
                     "to a denoiser D(x; σ) (the diffusion family)")
  if family.sampler.coordinates != "sigma":
    raise ValueError("optimize_schedule fits grids for sampler.coordinates='sigma' only")
  feature_fn = feature_map(experiment.dataset) if objective == "feature" else None
  restored = workdir_lib.restore_workdir(workdir, step)
  weights = jax.tree.map(jnp.asarray, workdir_lib.select_params(restored.state, params))
  sigma_min, sigma_max = family.sigma_range
  record = optimize_denoiser(family.denoiser(weights), family.data_shape, solver, steps,
                             sigma_min=sigma_min, sigma_max=sigma_max, objective=objective,
                             feature_fn=feature_fn, **kwargs)
  record.update(checkpoint_step=restored.step, params=params,
                formulation=formulation_record(family), workdir=os.path.abspath(workdir))
  if write:
    record["path"] = save_grid(workdir, record)
  return record


def _check_solver(solver: str) -> None:
  if solver not in schedules.TRACED_SOLVERS:
    hint = (" (`lms` computes its coefficients in NumPy from a concrete grid: not "
            "differentiable; `lms_data` is)" if solver == "lms" else "")
    raise ValueError(f"Cannot optimize a grid for solver {solver!r}{hint}; valid solvers: "
                     f"{list(schedules.TRACED_SOLVERS)}")


def resolve_checkpoint_step(workdir: str, step: int | None) -> int | None:
  """The step `restore_workdir(workdir, step)` will try first (the newest if None)."""
  from genode.train.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
  if step is not None:
    return step
  steps = Checkpointer(workdir).steps()
  return max(steps) if steps else None


# -- closed-form denoisers (genode.gaussians), for the benchmark ------------------------

CLOSED_FORM = ("gaussian64", "ring")


def closed_form_problem(name: str, sigma_min: float = 0.002, sigma_max: float = 80.0,
                        seed: int = 0):
  """(D(x; σ), exact x_T ↦ x(σ_min), shape) of the sampler benchmark's problems: the
  `Gaussian.random(key(seed), 64)` (closed-form flow) or the 2-D ring (Dopri5, tol 1e-10)."""
  from genode import gaussians  # pylint: disable=g-import-not-at-top
  from genode.sampling import sample  # pylint: disable=g-import-not-at-top
  if name == "gaussian64":
    gaussian = gaussians.Gaussian.random(jax.random.key(seed), 64)
    return (jax.jit(gaussian.denoiser), lambda x: gaussian.flow(x, sigma_max, sigma_min),
            (64,))
  if name == "ring":
    denoiser = jax.jit(gaussians.GaussianMixture.ring().denoiser)

    def flow(x):
      out, info = sample(denoiser, x, np.asarray([sigma_max, sigma_min]), "dopri5",
                         rtol=1e-10, atol=1e-10, max_steps=100_000)
      if not bool(info.finite):
        raise RuntimeError("The ring's Dopri5 reference failed")
      return out

    return denoiser, flow, (2,)
  raise ValueError(f"Unknown closed-form problem {name!r}; valid: {list(CLOSED_FORM)}")


def optimize_closed_form(name: str, solver: str, steps: int, out: str, *,
                         objective: str = "mse", **kwargs) -> dict:
  """`optimize_denoiser` on a closed-form problem in float64; writes the record to `out`."""
  _check_solver(solver)
  if objective == "feature":
    raise ValueError("objective 'feature' needs an image workdir; valid objectives for "
                     f"closed-form problems: {list(schedules.OBJECTIVES)}")
  with jax.enable_x64(True):
    denoiser, flow, shape = closed_form_problem(name)
    record = optimize_denoiser(denoiser, shape, solver, steps, sigma_min=0.002,
                               sigma_max=80.0, objective=objective, reference=flow,
                               dtype=jnp.float64, **kwargs)
  record.update(problem=name, checkpoint_step=None, formulation="EDM σ(t) = t (closed form)")
  directory = os.path.dirname(os.path.abspath(out))
  os.makedirs(directory, exist_ok=True)
  tmp = out + ".tmp"
  with open(tmp, "w") as f:
    json.dump(record, f, indent=2, sort_keys=True)
  os.replace(tmp, out)
  record["path"] = out
  return record
