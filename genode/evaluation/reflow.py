"""Straightness and few-step quality of a trained flow (Liu, Gong & Liu 2022, eq. 3, §5).

Added to `genode.evaluation.evaluate` when the eval config has an `rf` section
(configs/eval_reflow.py); every diffusion workdir (RF, k-RF, distilled, EDM, VP, …)
can be evaluated this way, since every model is a denoiser D(x̄; σ):

* `euler_rf<k>` rows: samples of k Euler steps on the grid uniform in RF time
  (`genode.reflow.rf_time_sigmas`: exact for a straight flow; one step is
  x = D(σ_max·z; σ_max)), scored with the evaluation's own metrics, beside its
  many-step rows;
* `teacher_couplings` row, for a student trained on couplings: the teacher's stored
  endpoints x (its many-step sampler, from the manifest) scored the same way;
* `straightness.json`: S(Z) = ∫₀¹ E‖(Z₁ − Z₀) − Ż_t‖² dt (eq. 3) on simulated Euler
  trajectories in RF coordinates, with E‖Z₁ − Z₀‖² and S/E‖Z₁ − Z₀‖²;
* `trajectories.png` for 2-D data: this flow's paths beside its teacher's (crossing 1-RF
  paths against straight 2-RF paths, the paper's Fig. 2).

A student trained on couplings is measured against the **original** dataset: the
couplings' manifest records the teacher's data section (`reference_experiment`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from genode import data as data_lib
from genode import images as images_lib
from genode.evaluation import sample_sets
from genode.reflow.dataset import Couplings
from genode.reflow.rf_time import rf_time_sigmas
from genode.reflow.straightness import rf_trajectory, trajectory_straightness


def reference_experiment(experiment):
  """(experiment with the original dataset, the couplings or None).

  For an experiment trained on `Couplings`, the dataset recorded in their manifest
  (the teacher's, resolved through earlier couplings) replaces them, so that every
  metric compares with the real data; other experiments are returned unchanged.
  """
  dataset = experiment.dataset
  if not isinstance(dataset, Couplings):
    return experiment, None
  params = dict(dataset.manifest["settings"]["dataset"])
  if not params.get("name"):
    raise ValueError(f"The couplings at {dataset.path!r} do not record their teacher's "
                     "dataset: the student cannot be evaluated against the data")
  params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
  reference = data_lib.get_dataset(**params)
  if tuple(reference.shape) != tuple(dataset.shape):
    raise ValueError(f"The couplings' dataset {params['name']!r} has shape "
                     f"{reference.shape}, the couplings {dataset.shape}")
  return dataclasses.replace(experiment, dataset=reference), dataset


def _euler_rf(family, weights, num_steps: int, num: int, eval_config, repeats: int = 1):
  """`repeats` sets of `num` samples of `num_steps` Euler steps on the RF-time grid, drawn
  as `sample_sets.sample_sets` draws every setting's."""
  batch = min(int(eval_config.batch_size), num)
  sigmas = rf_time_sigmas(num_steps, family.sigma_range[1])
  fn = jax.jit(lambda p, key, labels: family.sample(p, key, batch, solver="euler",
                                                    sigmas=sigmas, class_labels=labels))
  labels = family.grid_labels(batch)
  start = time.perf_counter()
  x, _ = sample_sets.sample_sets(lambda key: fn(weights, key, labels), num, batch, repeats,
                              eval_config.seed)
  seconds = time.perf_counter() - start
  return x, dict(nfe=float(num_steps), nfe_max=int(num_steps),
                 finite=bool(np.all(np.isfinite(x))), sigma_max=float(sigmas[0]),
                 sigma_min=float(sigmas[-2]), compile_s=None, sample_s=seconds,
                 samples_per_s=len(x) / max(seconds, 1e-9))


def straightness(family, weights, eval_config) -> tuple[dict, object]:
  """S(Z) of the flow's Euler trajectories (`rf.straightness_steps` steps on the RF-time
  grid, `rf.straightness_samples` noises) and the trajectory itself."""
  cfg = eval_config.rf
  num = int(cfg.straightness_samples)
  key = jax.random.fold_in(jax.random.key(int(eval_config.seed)), 31337)
  noise = jax.random.normal(key, (num,) + tuple(family.data_shape), jnp.float32)
  labels = family.grid_labels(num)
  sigma_max = family.sigma_range[1]
  steps = int(cfg.straightness_steps)
  run = jax.jit(lambda p, z, labels: rf_trajectory(family.denoiser(p, labels), z, steps,
                                                   sigma_max))
  start = time.perf_counter()
  trajectory = jax.device_get(run(weights, noise, labels))
  s = trajectory_straightness(trajectory)
  record = dict(kind="straightness", name="straightness", straightness=float(s.straightness),
                transport=float(s.transport), straightness_normalized=float(s.normalized),
                num_samples=num, num_steps=steps, solver="euler", grid="rf_time",
                sigma_max=float(sigma_max), wall_s=time.perf_counter() - start)
  return record, trajectory


def _teacher_record(couplings: Couplings, scorer, num: int, base: dict,
                    repeats: int = 1) -> dict:
  """The teacher's stored endpoints, scored like samples (its many-step quality): its first
  `repeats`·`num` pairs (fewer sets when it has fewer pairs)."""
  n = min(num, couplings.settings.num_pairs)
  sets = max(1, min(repeats, couplings.settings.num_pairs // n))
  x = couplings.pairs(np.arange(n * sets))["x"]
  manifest = couplings.manifest
  sampler = dict(manifest["settings"]["sampler"])
  nfe = (manifest.get("nfe_per_batch") or {}).get("mean")
  return dict(base, kind="samples", name="teacher_couplings", num_samples=n,
              sampler=dict(solver=sampler.get("solver"), grid=sampler.get("grid"),
                           steps=sampler.get("steps"), tol=sampler.get("rtol")),
              nfe=float(nfe) if nfe is not None else float("nan"), nfe_max=None,
              finite=bool(np.all(np.isfinite(x))), samples_per_s=None,
              teacher=couplings.teacher, couplings=couplings.path,
              metrics=scorer.repeated(x, n))


def _teacher_trajectory(couplings: Couplings, eval_config):
  """The couplings' teacher's trajectory on the same noise (None if it cannot be opened)."""
  from genode import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  teacher = couplings.teacher
  try:
    restored = workdir_lib.restore_workdir(teacher["workdir"], teacher.get("step"))
  except Exception as e:  # pylint: disable=broad-exception-caught  # optional panel
    logging.warning("No teacher panel in the trajectory plot (%s: %s)", type(e).__name__, e)
    return None
  weights = workdir_lib.select_params(restored.state, teacher.get("params", "ema"))
  return straightness(restored.experiment.family, weights, eval_config)[1]


def rf_records(experiment, weights, eval_config, out_dir: str, scorer, base: dict,
               write_json, couplings: Couplings | None = None) -> list[dict]:
  """The rows of the module docstring; writes their .json (`write_json(path, record)`)
  and .png files in `out_dir`. `scorer`: the evaluation's (samples → metrics, and its
  `repeated` for `base["repeats"]` sets)."""
  family, dataset, cfg = experiment.family, experiment.dataset, eval_config.rf
  num = int(base["num_samples"])
  repeats = int(base.get("repeats", 1))
  to_uint8 = getattr(dataset, "to_uint8", None)
  records = []
  for steps in cfg.euler_steps:
    name = f"euler_rf{int(steps)}"
    x, run = _euler_rf(family, weights, int(steps), num, eval_config, repeats)
    record = dict(base, kind="samples", name=name, sampler=dict(
        solver="euler", grid="rf_time", steps=int(steps), tol=None), **run)
    record["metrics"] = scorer.repeated(x, num)
    images_lib.save_samples(os.path.join(out_dir, name + ".png"), x[:eval_config.grid_samples],
                            to_uint8)
    write_json(os.path.join(out_dir, name + ".json"), record)
    logging.info("%s: %s", name, record["metrics"])
    records.append(record)
  if couplings is not None and cfg.teacher_row:
    record = _teacher_record(couplings, scorer, num, base, repeats)
    write_json(os.path.join(out_dir, "teacher_couplings.json"), record)
    records.append(record)
  if cfg.straightness_samples:
    record, trajectory = straightness(family, weights, eval_config)
    record = dict({k: v for k, v in base.items() if k != "num_samples"}, **record)
    write_json(os.path.join(out_dir, "straightness.json"), record)
    logging.info("Straightness S = %.4g, S/E|Z1-Z0|^2 = %.4g", record["straightness"],
                 record["straightness_normalized"])
    records.append(record)
    if len(family.data_shape) == 1 and family.data_shape[0] == 2 and cfg.trajectory_paths:
      from genode.reflow import plots  # pylint: disable=g-import-not-at-top
      panels = {}
      if couplings is not None:
        teacher = _teacher_trajectory(couplings, eval_config)
        if teacher is not None:
          panels[f"teacher ({os.path.basename(couplings.teacher['workdir'])})"] = teacher
      panels[os.path.basename(str(base.get("workdir", "this flow"))) or "this flow"] = trajectory
      plots.plot_trajectories(os.path.join(out_dir, "trajectories.png"), panels,
                              num_paths=int(cfg.trajectory_paths))
  return records


def append_report(out_dir: str, records: list[dict]) -> None:
  """Adds the straightness line to `results.md`."""
  for r in records:
    if r.get("kind") == "straightness":
      with open(os.path.join(out_dir, "results.md"), "a") as f:
        f.write(f"\nStraightness (eq. 3, {r['num_steps']} Euler steps on the RF-time grid, "
                f"{r['num_samples']} paths): S = {r['straightness']:.4g}, "
                f"E‖Z₁−Z₀‖² = {r['transport']:.4g}, S/E‖Z₁−Z₀‖² = "
                f"{r['straightness_normalized']:.4g}.\n")


def summary(records: list[dict], metric: str) -> dict:
  """{row name: metric} of the sample rows, plus "straightness": S/E‖Z₁−Z₀‖²."""
  out = {r["name"]: r["metrics"].get(metric) for r in records if r.get("kind") == "samples"}
  for r in records:
    if r.get("kind") == "straightness":
      out["straightness"] = r["straightness_normalized"]
  return out


def load_records(eval_dir: str) -> list[dict]:
  """The records written in an eval directory (`<workdir>/eval/<step>/`)."""
  records = []
  for name in sorted(os.listdir(eval_dir)):
    if name.endswith(".json"):
      with open(os.path.join(eval_dir, name)) as f:
        records.append(json.load(f))
  return records
