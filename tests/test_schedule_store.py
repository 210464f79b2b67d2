"""Optimized grids of a workdir: written by optimize_workdir, loaded by grid="optimized"."""

import json
import os

import numpy as np
import pytest

from configs import toy2d_edm
from genode import loop
from genode import schedule_fit
from genode import schedule_store
from genode import workdir as workdir_lib
from tests.test_launch import launch


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A toy2d workdir (checkpoints at steps 2 and 4) with an optimized dpmpp_2m 4-step grid."""
  workdir = str(tmp_path_factory.mktemp("store") / "run")
  config = toy2d_edm.get_config("runlocal")
  config.train.update(num_steps=4, checkpoint_every=2, sample_every=0, keep_checkpoints=10)
  loop.train(config, workdir)
  record = schedule_fit.optimize_workdir(workdir, "dpmpp_2m", 4, num_train=16,
                                           num_holdout=8, num_iterations=3,
                                           reference_tol=1e-3)
  return workdir, record


def _files(workdir):
  return sorted((p, os.path.getmtime(os.path.join(d, p))) for d, _, ps in os.walk(workdir)
                for p in ps)


def test_the_record_says_what_it_is(trained):
  workdir, record = trained
  assert record["path"] == schedule_store.grid_path(workdir, "dpmpp_2m", 4)
  with open(record["path"]) as f:
    stored = json.load(f)
  assert stored["solver"] == "dpmpp_2m" and stored["steps"] == 4 and stored["nfe"] == 4
  assert stored["checkpoint_step"] == 4 and stored["objective"] == "mse"
  assert stored["formulation"] == schedule_store.formulation_record(
      workdir_lib.open_experiment(workdir).family)
  sigmas = np.asarray(stored["sigmas"])
  assert sigmas.shape == (5,) and sigmas[-1] == 0 and np.all(np.diff(sigmas) < 0)
  for key in ("objective_before", "objective_after", "holdout_before", "holdout_after",
              "wall_seconds", "cpu_seconds"):
    assert np.isfinite(stored[key]), key
  assert schedule_store.stored_grids(workdir) == [("dpmpp_2m", 4)]


def test_optimized_grid_samples_as_its_sigma_list(trained, tmp_path):
  workdir, record = trained
  optimized = workdir_lib.sample_workdir(workdir, solver="dpmpp_2m", grid="optimized",
                                         steps=4, num_samples=6, out=str(tmp_path / "o"))
  explicit = workdir_lib.sample_workdir(workdir, solver="dpmpp_2m", sigmas=record["sigmas"],
                                        num_samples=6, out=str(tmp_path / "e"))
  np.testing.assert_array_equal(np.load(optimized["npz"])["x"], np.load(explicit["npz"])["x"])
  assert optimized["grid"] == "optimized" and optimized["sigmas"] == record["sigmas"]
  assert optimized["nfe"] == 4 and optimized["steps"] == 4


def test_config_grid_optimized_loads_it(trained, tmp_path):
  workdir, record = trained
  family = workdir_lib.open_experiment(workdir).family
  import dataclasses  # pylint: disable=g-import-not-at-top
  spec = dataclasses.replace(family.sampler, solver="dpmpp_2m", grid="optimized", steps=4)
  family = dataclasses.replace(family, sampler=spec)
  resolved = workdir_lib.resolve_optimized_grid(workdir, family, {})
  np.testing.assert_array_equal(resolved["sigmas"], record["sigmas"])
  with pytest.raises(ValueError, match="stored in a workdir"):
    family.sampler_sigmas()


def test_refusals_change_nothing(trained):
  workdir, _ = trained
  before = _files(workdir)
  with pytest.raises(ValueError, match=r"No optimized grid for solver 'heun' with steps=4.*"
                     r"\['dpmpp_2m steps=4'\]"):
    workdir_lib.sample_workdir(workdir, solver="heun", grid="optimized", steps=4)
  with pytest.raises(ValueError, match="another checkpoint step 4 .sampling step 2.*--force"):
    workdir_lib.sample_workdir(workdir, step=2, solver="dpmpp_2m", grid="optimized", steps=4)
  with pytest.raises(ValueError, match="another formulation"):
    schedule_store.load_grid(workdir, "dpmpp_2m", 4, formulation="VP()")
  with pytest.raises(ValueError, match="valid solvers"):
    schedule_fit.optimize_workdir(workdir, "lms", 4)
  with pytest.raises(ValueError, match="valid objectives"):
    schedule_fit.optimize_workdir(workdir, "euler", 4, objective="kl")
  assert _files(workdir) == before
  forced = schedule_store.load_grid(workdir, "dpmpp_2m", 4, checkpoint_step=2, force=True)
  assert forced["checkpoint_step"] == 4


@pytest.mark.slow
def test_launchers_one_line_errors(trained):
  workdir, record = trained
  before = _files(workdir)
  status, stderr = launch("sample", f"--workdir={workdir}", "--solver=euler", "--steps=3",
                          "--grid=optimized")
  assert status == 1 and "Traceback" not in stderr
  assert "error: No optimized grid for solver 'euler' with steps=3" in stderr
  status, stderr = launch("optimize_schedule", f"--workdir={workdir}", "--solver=lms",
                          "--steps=3")
  assert status == 1 and "error: Cannot optimize a grid for solver 'lms'" in stderr
  assert _files(workdir) == before


def test_evaluate_adds_the_optimized_grid_beside_karras(trained):
  from configs import eval as eval_config_lib  # pylint: disable=g-import-not-at-top
  from genode.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  workdir, record = trained
  config = eval_config_lib.get_config("runlocal")
  config.update(solvers=("dpmpp_2m", "euler"), steps=(4,), adaptive_solvers=(),
                metrics=("mmd",), num_samples=16, batch_size=16, optimized_grids=True)
  records = evaluate.evaluate_workdir(workdir, config)
  names = [r["name"] for r in records]
  assert names == ["dpmpp_2m_karras4", "dpmpp_2m_optimized4", "euler_karras4"]  # euler: none
  optimized = records[1]
  assert optimized["sampler"]["grid"] == "optimized" and optimized["nfe"] == 4
  assert optimized["sampler"]["sigmas"] == record["sigmas"]
  with open(os.path.join(workdir, "eval", "4", "results.md")) as f:
    assert "dpmpp_2m_optimized4" in f.read()


def test_training_with_the_optimized_grid_is_refused_before_it_starts(tmp_path):
  config = toy2d_edm.get_config("runlocal")
  config.sampler.grid = "optimized"
  workdir = str(tmp_path / "run")
  with pytest.raises(ValueError, match="'optimized' grid is stored in a workdir"):
    loop.train(config, workdir)
  assert not os.path.exists(workdir)  # refused before the workdir is touched


def test_klub_grid_of_a_workdir(trained):
  """objective="klub": AYS's bound on training-split rows; no reference solve, no file
  written with write=False."""
  workdir, _ = trained
  before = _files(workdir)
  record = schedule_fit.optimize_workdir(workdir, "euler", 3, objective="klub", num_train=16,
                                           num_holdout=8, num_iterations=2, write=False)
  assert record["objective"] == "klub" and record["data"] == "training split"
  assert record["reference_seconds"] == 0 and "path" not in record
  assert 0 < record["objective_after"] <= record["objective_before"]  # the best iterate
  assert np.isfinite(record["holdout_before"]) and np.isfinite(record["holdout_after"])
  sigmas = np.asarray(record["sigmas"])
  assert sigmas.shape == (4,) and sigmas[-1] == 0 and np.all(np.diff(sigmas) < 0)
  assert _files(workdir) == before
