"""Fitting σ grids to a workdir's checkpoint or a closed-form denoiser (launch.optimize_schedule).

`optimize_workdir` restores the checkpoint, runs `genode.sampling.schedules.optimize_sigmas`
on its denoiser and stores the record with `genode.schedule_store.save_grid` (only at the
end: a refused or failed run writes nothing). Objectives: those of `optimize_sigmas`, and
"feature": the data-space objective on the dataset's feature-net features
(`genode.evaluation.feature_net`, digits and MNIST). "klub" (AYS's KL upper bound) is
estimated on rows of the TRAINING split (`training_rows`: training batch 0 of the seed),
never on the test split that the evaluation scores. `optimize_closed_form` does the same
for the sampler benchmark's closed-form problems (`genode.gaussians`), in float64.
"""

from __future__ import annotations

import json
import os
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from genode import schedule_store
from genode import workdir as workdir_lib
from genode.evaluation import feature_net as feature_net_lib
from genode.sampling import schedules

OBJECTIVES = schedules.OBJECTIVES + ("feature",)  # "feature": MSE of feature-net features


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def feature_map(dataset):
  """x (B, H, W, C) in [−1, 1] → the dataset's feature-net features (B, F), traceable."""
  name = getattr(dataset, "name", "?")
  spec = feature_net_lib.get_feature_net_spec(name)

  def split(which):  # the evaluation's conversion: 8-bit images → [−1, 1]
    images, labels = dataset.arrays(which)
    return images.astype(np.float32) / np.float32(127.5) - np.float32(1.0), labels

  (train_x, train_y), (test_x, test_y) = split("train"), split("test")
  net = feature_net_lib.load_or_train_feature_net(name, spec, train_x, train_y, test_x, test_y)
  module, params = spec.module, net.params
  return lambda x: module.apply({"params": params}, x)[1]


def optimize_denoiser(denoiser, shape, solver: str, steps: int, *, sigma_min: float,
                      sigma_max: float, objective: str = "mse", feature_fn=None,
                      num_train: int = 256, num_holdout: int = 256, seed: int = 0,
                      num_iterations: int = 100, learning_rate: float = 0.05,
                      batch_size: int | None = None, reference_tol: float = 1e-5,
                      reference=None, dtype=None, data=None, klub_nodes: int = 4) -> dict:
  """`optimize_sigmas` for D(x; σ) on x of `shape` (no batch axis); the record to store.

  Training and held-out noises come from independent keys of `seed`; the record holds
  the grid, the objective before/after (training and held-out), wall and CPU seconds.
  "klub" needs `data`: num_train + num_holdout training-split rows (the last num_holdout
  held out).
  """
  if objective not in OBJECTIVES:
    raise ValueError(f"Unknown objective {objective!r}; valid objectives: {list(OBJECTIVES)}")
  if objective == "feature" and feature_fn is None:
    raise ValueError("objective 'feature' needs a feature network (image datasets with one: "
                     "digits, mnist)")
  klub = {}
  if objective == "klub":
    if data is None or len(data) != num_train + num_holdout:
      raise ValueError(f"objective 'klub' needs data: {num_train} + {num_holdout} "
                       "training-split rows")
    klub, reference = dict(data=data, klub_nodes=klub_nodes), None
  wall, cpu = time.perf_counter(), _cpu_seconds()
  result = schedules.optimize_sigmas(
      denoiser, jax.random.key(seed), steps, solver, sigma_min=sigma_min, sigma_max=sigma_max,
      shape=(num_train,) + tuple(shape), holdout=num_holdout, reference=reference, **klub,
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
      **({"klub_nodes": klub_nodes, "data": "training split"} if klub else {}),
      optimize_seconds=result.seconds, reference_seconds=result.reference_seconds,
      wall_seconds=time.perf_counter() - wall, cpu_seconds=_cpu_seconds() - cpu)


def optimize_workdir(workdir: str, solver: str, steps: int, *, step: int | None = None,
                     params: str = "ema", objective: str = "mse", write: bool = True,
                     **kwargs) -> dict:
  """Fits the (solver, steps) grid to a workdir's checkpoint; writes it (see module doc).

  kwargs go to `optimize_denoiser` (num_train, num_holdout, seed, num_iterations, …).
  Names are checked before anything is restored; the file is written only at the end.
  """
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
  if objective == "klub":
    kwargs["data"] = training_rows(experiment.dataset, kwargs.get("num_train", 256)
                                   + kwargs.get("num_holdout", 256), kwargs.get("seed", 0))
  restored = workdir_lib.restore_workdir(workdir, step)
  weights = jax.tree.map(jnp.asarray, workdir_lib.select_params(restored.state, params))
  sigma_min, sigma_max = family.sigma_range
  record = optimize_denoiser(family.denoiser(weights), family.data_shape, solver, steps,
                             sigma_min=sigma_min, sigma_max=sigma_max, objective=objective,
                             feature_fn=feature_fn, **kwargs)
  record.update(checkpoint_step=restored.step, params=params,
                formulation=schedule_store.formulation_record(family),
                workdir=os.path.abspath(workdir))
  if write:
    record["path"] = schedule_store.save_grid(workdir, record)
  return record


def training_rows(dataset, num: int, seed: int) -> np.ndarray:
  """`num` distinct rows of the TRAINING split (training batch 0 of `seed`), in model space."""
  return np.asarray(dataset.train_batch(seed, 0, num)["x"])


def _check_solver(solver: str) -> None:
  if solver not in schedules.TRACED_SOLVERS:
    hint = (" (`lms` computes its coefficients in NumPy from a concrete grid: not "
            "differentiable; `lms_data` is)" if solver == "lms" else "")
    raise ValueError(f"Cannot optimize a grid for solver {solver!r}{hint}; valid solvers: "
                     f"{list(schedules.TRACED_SOLVERS)}")


# -- closed-form denoisers (genode.gaussians), for the benchmark ------------------------

CLOSED_FORM = ("gaussian64", "ring")


def closed_form_distribution(name: str, seed: int = 0):
  """The data distribution of a sampler-benchmark problem: `Gaussian.random(key(seed), 64)`
  or the 2-D ring mixture (`genode.gaussians`; each has `.denoiser` and `.sample`)."""
  from genode import gaussians  # pylint: disable=g-import-not-at-top
  if name == "gaussian64":
    return gaussians.Gaussian.random(jax.random.key(seed), 64)
  if name == "ring":
    return gaussians.GaussianMixture.ring()
  raise ValueError(f"Unknown closed-form problem {name!r}; valid: {list(CLOSED_FORM)}")


def closed_form_problem(name: str, sigma_min: float = 0.002, sigma_max: float = 80.0,
                        seed: int = 0):
  """(D(x; σ), exact x_T ↦ x(σ_min), shape) of the sampler benchmark's problems: the
  `Gaussian.random(key(seed), 64)` (closed-form flow) or the 2-D ring (Dopri5, tol 1e-10)."""
  from genode.sampling import sample  # pylint: disable=g-import-not-at-top
  distribution = closed_form_distribution(name, seed)
  if name == "gaussian64":
    return (jax.jit(distribution.denoiser),
            lambda x: distribution.flow(x, sigma_max, sigma_min), (64,))
  denoiser = jax.jit(distribution.denoiser)

  def flow(x):
    out, info = sample(denoiser, x, np.asarray([sigma_max, sigma_min]), "dopri5",
                       rtol=1e-10, atol=1e-10, max_steps=100_000)
    if not bool(info.finite):
      raise RuntimeError("The ring's Dopri5 reference failed")
    return out

  return denoiser, flow, (2,)


def closed_form_data(name: str, num: int, seed: int = 0) -> jax.Array:
  """`num` data samples of a closed-form problem (for "klub"), from key(seed + 1)."""
  return closed_form_distribution(name).sample(jax.random.key(seed + 1), num)


def optimize_closed_form(name: str, solver: str, steps: int, out: str, *,
                         objective: str = "mse", **kwargs) -> dict:
  """`optimize_denoiser` on a closed-form problem in float64; writes the record to `out`."""
  _check_solver(solver)
  if objective == "feature":
    raise ValueError("objective 'feature' needs an image workdir; valid objectives for "
                     f"closed-form problems: {list(schedules.OBJECTIVES)}")
  with jax.enable_x64(True):
    denoiser, flow, shape = closed_form_problem(name)
    if objective == "klub":
      kwargs["data"] = closed_form_data(name, kwargs.get("num_train", 256)
                                        + kwargs.get("num_holdout", 256), kwargs.get("seed", 0))
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
