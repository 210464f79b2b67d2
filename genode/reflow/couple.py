"""Couplings from a trained workdir: `couple_workdir(teacher, out, num_pairs, ...)`.

Liu, Gong & Liu 2022, §2.3: reflow trains on the coupling (Z₀, Z₁) = (z, ODE_teacher(z))
of a trained flow, the pairs drawn from the teacher's EMA weights with an adaptive
RK45 at rtol = atol = 1e-5 (the paper's). Every genode model is a denoiser D(x̄; σ), so
the teacher can be any trained diffusion workdir (RF, EDM, VP, VE) and the sampler any
genode solver: an adaptive one (dopri5, tsit5) from σ_max to σ_min then a final denoise,
or a fixed-grid one on the teacher's grid (`family.sampler_sigmas(grid, steps)`).

The teacher's parameters are an argument of the jitted sampler (never constants baked
into it); each batch is one sampler call, dispatched without per-pair host round trips
(`genode.reflow.store.write_couplings` shards, resumes, logs pairs/s and an ETA).
The manifest records the teacher (workdir, step, params, formulation, model), the
sampler (solver, grid, σ's, tolerances), the NFE, the seed, the genode version, and the
teacher's *original* dataset (through earlier couplings, for a k-RF teacher), against
which a student is evaluated.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from genode import sampling
from genode import workdir as workdir_lib
from genode.reflow import store
from genode.reflow.dataset import Couplings

DEFAULT_BATCH_SIZE = 512
DEFAULT_SHARD_PAIRS = 8192


def is_adaptive(solver: str) -> bool:
  """Whether `solver` (a name in `genode.sampling.SOLVERS`) takes rtol/atol."""
  method = sampling.get_solver(solver)  # unknown name → ValueError listing the valid ones
  options = getattr(method, "options_type", None) or method.options
  return options is not None and "rtol" in {f.name for f in dataclasses.fields(options)}


def sizes(num_pairs: int, batch_size: int | None = None,
          shard_size: int | None = None) -> tuple[int, int]:
  """(batch_size, shard_size) defaults: a pure function of the flags (resumes agree).

  batch_size: min(512, N); shard_size: the smallest multiple of batch_size ≥ min(8192, N).
  """
  if num_pairs < 1:
    raise ValueError(f"--num_pairs must be ≥ 1, got {num_pairs}")
  batch_size = batch_size or min(DEFAULT_BATCH_SIZE, num_pairs)
  if shard_size is None:
    shard_size = -(-min(DEFAULT_SHARD_PAIRS, num_pairs) // batch_size) * batch_size
  return int(batch_size), int(shard_size)


def reference_data(experiment) -> dict:
  """The data section of the teacher's config, or, for a teacher trained on couplings,
  the original dataset recorded in those couplings' manifest (transitively)."""
  dataset = experiment.dataset
  if isinstance(dataset, Couplings):
    return dict(dataset.manifest["settings"]["dataset"])
  return {k: (list(v) if isinstance(v, tuple) else v)
          for k, v in experiment.config.data.to_dict().items()}


def fresh_seed(experiment) -> int:
  """The default seed of the noise z for a teacher's couplings: 0 for a teacher trained on
  data; for a teacher trained on couplings (a k-RF), one more than their seed.

  A k-RF was fitted on the pairs (z_i, x_i) of its couplings. Its own couplings on the same
  z_i are closer to those x_i than its map is elsewhere (digits 2-RF vs its 1-RF teacher:
  rms 0.045 on the training z, 0.058 on fresh z), so the (k+1)-RF and a distilled student
  would learn the k-RF's fit of the old pairs rather than its map. Each round therefore
  draws other noise.
  """
  dataset = experiment.dataset
  if isinstance(dataset, Couplings):
    return int(dataset.settings.seed) + 1
  return 0


def teacher_grid(family, solver: str, grid: str | None = None,
                 steps: int | None = None) -> np.ndarray:
  """σ's of the teacher's solve: (σ_max, σ_min, 0) for an adaptive solver (it integrates
  from the first to the last positive σ, then denoises), else the family's named grid."""
  if is_adaptive(solver):
    if grid is not None or steps is not None:
      raise ValueError(f"--grid/--steps are for fixed-grid solvers; {solver!r} is adaptive "
                       "(use --rtol/--atol)")
    sigma_min, sigma_max = family.sigma_range
    return np.asarray([sigma_max, sigma_min, 0.0], np.float64)
  return np.asarray(family.sampler_sigmas(grid=grid, steps=steps), np.float64)


def make_workdir_sampler(family, params, sigmas: np.ndarray, solver: str, **options):
  """`teacher_sample(z[, labels]) -> (x, SampleInfo)`: `sampling.sample(D, σ₀·z, σ's)` of
  the family's denoiser, jitted once with the parameters as an argument.

  z: (B, *shape) float32 standard normal; labels (B,) int32 for a conditional teacher.
  """
  formulation = family.formulation if family.sampler.coordinates == "native" else None

  @jax.jit
  def run(params, z, labels):
    denoiser = family.denoiser(params, labels)
    return sampling.sample(denoiser, jnp.asarray(sigmas[0], z.dtype) * z, sigmas, solver,
                           formulation=formulation, **options)

  if family.num_classes:
    return lambda z, labels: run(params, z, labels)
  return lambda z: run(params, z, None)


def couple_workdir(teacher: str, out: str, num_pairs: int, *, solver: str = "dopri5",
                   rtol: float = 1e-5, atol: float = 1e-5, grid: str | None = None,
                   steps: int | None = None, batch_size: int | None = None,
                   shard_size: int | None = None, seed: int | None = None, step: int | None = None,
                   params: str = "ema", overwrite: bool = False,
                   max_steps: int | None = None) -> store.WriteSummary:
  """Writes (or resumes) `num_pairs` couplings of the teacher workdir into `out`.

  Args:
    teacher: a trained workdir (`genode.loop.train`); its `step` checkpoint (newest
      readable by default) and its "ema" (default) or "raw" parameters.
    out: the couplings directory (see `genode.reflow.store`).
    solver: a `genode.sampling` solver; adaptive ones use rtol/atol (and max_steps),
      fixed-grid ones the teacher's grid with `grid`/`steps` overriding its sampler's.
    batch_size, shard_size, seed: see `sizes` and `store.CouplingSettings`; seed None =
      `fresh_seed` (0, or one more than the seed of the couplings a k-RF teacher was
      trained on).
    overwrite: replace couplings made with other settings (refused otherwise).
  Raises (one line, nothing changed): FileNotFoundError/CheckpointError for a teacher
  without config or checkpoint, ValueError for unknown names or other settings in `out`.
  Each process writes its shards (`jax.process_index/count`).
  """
  adaptive = is_adaptive(solver)  # names first: nothing is restored for a typo
  if params not in workdir_lib.PARAMS:
    raise ValueError(f"Unknown params {params!r}; valid: {list(workdir_lib.PARAMS)}")
  batch_size, shard_size = sizes(num_pairs, batch_size, shard_size)
  family = workdir_lib.open_experiment(teacher).family
  sigmas = teacher_grid(family, solver, grid, steps)
  options: dict[str, Any] = {}
  if adaptive:
    options = dict(rtol=float(rtol), atol=float(atol))
    if max_steps is not None:
      options["max_steps"] = int(max_steps)
  restored = workdir_lib.restore_workdir(teacher, step)
  experiment = restored.experiment
  weights = workdir_lib.select_params(restored.state, params)
  seed = fresh_seed(experiment) if seed is None else seed
  if isinstance(experiment.dataset, Couplings) and seed == experiment.dataset.settings.seed:
    logging.warning("Seed %d is the seed of the couplings the teacher was trained on: these "
                    "pairs reuse the noise it was fitted on (the default draws fresh noise)",
                    seed)
  settings = store.CouplingSettings(
      num_pairs=int(num_pairs), shard_size=shard_size, batch_size=batch_size, seed=int(seed),
      shape=tuple(family.data_shape), sigma_max=float(sigmas[0]),
      num_classes=int(family.num_classes),
      quantization_levels=int(experiment.dataset.quantization_levels),
      teacher=dict(workdir=os.path.abspath(teacher), step=restored.step, params=params,
                   family=getattr(family, "name", "?"), describe=family.describe(),
                   formulation=experiment.config.formulation.name),
      sampler=dict(solver=solver, sigmas=[float(s) for s in sigmas],
                   grid=None if adaptive else (grid or family.sampler.grid),
                   steps=None if adaptive else len(sigmas) - 1,
                   coordinates=family.sampler.coordinates, **options),
      dataset=reference_data(experiment))
  teacher_sample = make_workdir_sampler(family, weights, sigmas, solver, **options)
  return store.write_couplings(out, teacher_sample, settings,
                               process_index=jax.process_index(),
                               process_count=jax.process_count(), overwrite=overwrite)
