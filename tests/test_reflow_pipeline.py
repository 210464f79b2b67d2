"""The reflow pipeline end to end: `launch.reflow couple`, k-RF/distill configs, evaluation."""

import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import _reflow_stages as reflow_stages
from configs import eval_reflow, toy2d_reflow
from genode import formulations, gaussians, loop, sampling
from genode import workdir as workdir_lib
from genode.evaluation import evaluate
from genode.evaluation import reflow as reflow_eval
from genode.experiment import Experiment
from genode.reflow import couple, ideal, objectives, store
from genode.reflow.dataset import Couplings
from tests.test_launch import assert_one_line_error, launch

COUPLE = ["couple", "--num_pairs=40", "--batch_size=8", "--shard_size=16", "--solver=heun",
          "--steps=4"]


def _files(out):
  """{relative path: bytes} of every file under `out`, the manifest's timestamps aside."""
  files = {}
  for root, _, names in os.walk(out):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        files[os.path.relpath(path, out)] = f.read()
  manifest = json.loads(files.pop(store.MANIFEST))
  for key in ("created", "updated"):
    manifest.pop(key)
  return files, manifest


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  """A 4-step toy 1-RF teacher at <root>/1rf and its couplings at <root>/pairs_1rf."""
  root = str(tmp_path_factory.mktemp("reflow"))
  config = toy2d_reflow.make("1rf", runlocal=True, root=root)
  config.train.sample_every = 0
  loop.train(config, f"{root}/1rf")
  status, stderr = launch("reflow", *COUPLE, f"--teacher={root}/1rf", f"--out={root}/pairs_1rf")
  assert status == 0, stderr[-3000:]
  assert "pairs/s, ETA" in stderr
  return root


def _student(root, stage, **train):
  config = toy2d_reflow.make(stage, runlocal=True, root=root)
  config.train.update(sample_every=0, **train)
  return config


@pytest.mark.slow
def test_couple_stores_the_teachers_sampler_output(root):
  data = Couplings(f"{root}/pairs_1rf", expected_shape=(2,),
                   teacher_workdir=f"{root}/1rf")
  manifest = data.manifest
  settings = manifest["settings"]
  assert settings["teacher"]["workdir"] == os.path.abspath(f"{root}/1rf")
  assert settings["teacher"]["step"] == 4 and settings["teacher"]["params"] == "ema"
  assert settings["sampler"]["solver"] == "heun" and settings["sampler"]["steps"] == 4
  assert settings["dataset"]["name"] == "toy2d"
  assert settings["dataset"]["distribution"] == "8gaussians"
  assert manifest["nfe_per_batch"]["mean"] == 7 and manifest["genode_version"]
  restored = workdir_lib.restore_workdir(f"{root}/1rf")
  family = restored.experiment.family
  sigmas = family.sampler_sigmas(steps=4)
  run = jax.jit(lambda p, z: sampling.sample(family.denoiser(p), sigmas[0] * z, sigmas,
                                             "heun")[0])
  pairs = data.split("train")
  for shard in range(3):
    z, _ = store.shard_inputs(data.settings, shard)
    for b in range(0, data.settings.shard_rows(shard), 8):
      rows = slice(shard * 16 + b, shard * 16 + b + 8)
      np.testing.assert_array_equal(pairs["noise"][rows], z[b:b + 8])
      np.testing.assert_allclose(pairs["x"][rows], run(restored.state.ema_params, z[b:b + 8]),
                                 rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_couple_resumes_and_refuses_bad_input(root, tmp_path):
  out = str(tmp_path / "pairs")
  args = [*COUPLE, f"--teacher={root}/1rf", f"--out={out}"]
  assert launch("reflow", *args)[0] == 0
  full = _files(out)
  import shutil  # a run killed before its last shard: the shard is missing
  shutil.rmtree(store.shard_dir(out, 2))
  status, stderr = launch("reflow", *args)
  assert status == 0 and "resuming at shard 2" in stderr, stderr[-3000:]
  assert _files(out) == full
  # other settings without --overwrite: one line, nothing changed
  status, stderr = launch("reflow", *args[:-3], "--seed=1", *args[-2:])
  assert_one_line_error(status, stderr, "holds couplings made with other settings (seed: 0 → 1)")
  assert _files(out) == full
  status, stderr = launch("reflow", *args[:-3], "--seed=1", "--overwrite", *args[-2:])
  assert status == 0, stderr[-3000:]
  reseeded = _files(out)
  assert reseeded[1]["settings"]["seed"] == 1 and reseeded[0] != full[0]
  assert launch("reflow", *args)[0] != 0  # and back: refused again, without --overwrite
  # a teacher without a checkpoint, a missing teacher, bad names and missing flags
  empty = str(tmp_path / "empty")
  workdir_lib.prepare_workdir(empty, toy2d_reflow.make("1rf", runlocal=True, root=root))
  status, stderr = launch("reflow", *COUPLE, f"--teacher={empty}", f"--out={tmp_path / 'o'}")
  assert_one_line_error(status, stderr, "No checkpoints")
  status, stderr = launch("reflow", *COUPLE, f"--teacher={tmp_path / 'no'}",
                          f"--out={tmp_path / 'o'}")
  assert_one_line_error(status, stderr, "does not exist")
  status, stderr = launch("reflow", "couple", "--solver=rk4", f"--teacher={root}/1rf",
                          f"--out={tmp_path / 'o'}", "--num_pairs=8")
  assert_one_line_error(status, stderr, "valid")
  status, stderr = launch("reflow", "couple", f"--teacher={root}/1rf")
  assert_one_line_error(status, stderr, "needs --out, --num_pairs")
  assert not os.path.exists(tmp_path / "o")


@pytest.mark.slow
def test_two_rf_and_distill_train_from_couplings_with_init_from(root, tmp_path):
  teacher = workdir_lib.restore_workdir(f"{root}/1rf").state.ema_params
  for stage in ("2rf", "distill_1rf"):
    config = _student(root, stage, num_steps=1)
    config.optim.learning_rate = 0.0  # the one step changes nothing: params = the teacher's
    state = loop.train(config, str(tmp_path / stage))
    assert int(state.step) == 1
    jax.tree.map(np.testing.assert_array_equal, state.params, teacher)
    assert np.isfinite(json.loads(open(tmp_path / stage / "metrics.jsonl").readline())["loss"])
  config = _student(root, "2rf", num_steps=2)
  state = loop.train(config, str(tmp_path / "2rf_lr"))
  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), state.params, teacher)
  assert any(jax.tree.leaves(changed))


@pytest.mark.slow
def test_couplings_of_a_k_rf_draw_fresh_noise_by_default(root, tmp_path):
  # pairs_1rf (seed 0) are the 2-RF's training pairs; its couplings with the same z would
  # be its fit of those pairs again, not its map
  config = _student(root, "2rf", num_steps=1)
  loop.train(config, str(tmp_path / "2rf"))
  args = dict(num_pairs=8, batch_size=8, shard_size=8, solver="heun", steps=2)
  couple.couple_workdir(f"{root}/1rf", str(tmp_path / "p1"), **args)
  couple.couple_workdir(str(tmp_path / "2rf"), str(tmp_path / "p2"), **args)
  seeds = [Couplings(str(tmp_path / p)).settings.seed for p in ("p1", "p2")]
  assert seeds == [0, 1]
  z1, z2 = (Couplings(str(tmp_path / p)).pairs(np.arange(8))["noise"] for p in ("p1", "p2"))
  np.testing.assert_array_equal(z1, Couplings(f"{root}/pairs_1rf").pairs(np.arange(8))["noise"])
  assert not np.any(z1 == z2)
  couple.couple_workdir(str(tmp_path / "2rf"), str(tmp_path / "p0"), seed=0, **args)
  assert Couplings(str(tmp_path / "p0")).settings.seed == 0  # an explicit seed is kept


@pytest.mark.slow
def test_students_config_is_checked_against_the_couplings(root, tmp_path):
  config = _student(root, "2rf")
  config.data.expected_shape = (8, 8, 1)
  with pytest.raises(ValueError, match=r"shape \(2,\), expected \(8, 8, 1\)"):
    Experiment.from_config(config)
  config = _student(root, "2rf")
  config.data.teacher_workdir = str(tmp_path / "someone_else")
  with pytest.raises(ValueError, match="come from another teacher"):
    Experiment.from_config(config)
  config = _student(root, "2rf")
  config.data.path = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    Experiment.from_config(config)
  config = _student(root, "distill_1rf")
  config.objective.num_steps = 0
  with pytest.raises(ValueError, match="positive integer"):
    Experiment.from_config(config)
  # as a user sees it: one line, no workdir written
  status, stderr = launch("train", "--config=configs/toy2d_reflow.py:2rf,runlocal",
                          f"--workdir={tmp_path / 'w'}",
                          f"--config.data.path={tmp_path / 'nowhere'}")
  assert_one_line_error(status, stderr, "does not exist")
  assert not os.path.exists(tmp_path / "w")
  pairs = f"--config.data.path={root}/pairs_1rf"
  for flag, pattern in ((f"--config.data.teacher_workdir={tmp_path / 'other'}",
                         "come from another teacher"),
                        ("--config.data.expected_shape=(8, 8, 1)",
                         "shape (2,), expected (8, 8, 1)"),
                        ("--config.objective.num_steps=0", "positive integer")):
    stage = "distill_1rf" if "num_steps" in flag else "2rf"
    status, stderr = launch("train", f"--config=configs/toy2d_reflow.py:{stage},runlocal",
                            f"--workdir={tmp_path / 'w'}", pairs,
                            f"--config.data.teacher_workdir={root}/1rf",
                            f"--config.init_from.workdir={root}/1rf", flag)
    assert_one_line_error(status, stderr, pattern)
    assert not os.path.exists(tmp_path / "w")


def test_distilling_into_a_family_that_cannot_take_one_step():
  from configs import digits_glow
  from genode import families
  config = digits_glow.get_config("runlocal")  # the flow family: its objectives are its own
  config.objective.name = "distill"
  with pytest.raises(ValueError, match=r"Unknown objective 'distill' for family 'flow'; "
                     r"valid objectives: \['nll'\]"):
    families.get_family(config, (8, 8, 1), 10, 256)
  with pytest.raises(ValueError, match="'glow' cannot take one step"):
    objectives.check_one_step(types.SimpleNamespace(name="glow"))
  with pytest.raises(ValueError, match="positive integer"):
    objectives.check_one_step(types.SimpleNamespace(name="diffusion"), 0)


def test_distill_loss_options_are_checked_at_the_config_layer():
  from configs import digits_reflow
  from genode import families
  config = digits_reflow.make("distill_feature", runlocal=True, root="/r")
  assert config.objective.loss == "feature" and config.data.path == "/r/pairs_2rf"
  family = families.get_family(config, (8, 8, 1), 0)
  assert family.objective_params == (("loss", "feature"), ("num_steps", 1))
  config.objective.loss = "lpips"
  with pytest.raises(ValueError, match=r"Unknown objective.loss 'lpips'; valid: \['l2', "):
    families.get_family(config, (8, 8, 1), 0)
  config.objective.loss, config.objective.feature_net = "feature", "cifar10"
  with pytest.raises(ValueError, match="No feature network for dataset 'cifar10'"):
    families.get_family(config, (8, 8, 1), 0)
  toy = toy2d_reflow.make("distill_feature", runlocal=True, root="/r")
  with pytest.raises(ValueError, match=r"takes images of shape \(8, 8, 1\).*\(2,\)"):
    families.get_family(toy, (2,), 0)
  plain = families.get_family(digits_reflow.make("distill", runlocal=True, root="/r"),
                              (8, 8, 1), 0)
  assert plain.objective_inputs() == ()
  huber = digits_reflow.make("distill_pseudo_huber", runlocal=True, root="/r")
  assert huber.objective.loss == "pseudo_huber" and huber.data.path == "/r/pairs_2rf"
  assert families.get_family(huber, (8, 8, 1), 0).objective_inputs() == ()
  huber.objective.loss = "pseudo_huber+feature"
  assert len(families.get_family(huber, (8, 8, 1), 0).objective_inputs()) == 1


@pytest.mark.slow
def test_feature_distillation_trains_with_the_network_as_a_frozen_input(tmp_path, monkeypatch):
  """digits runlocal: 1-RF, couplings, a feature-loss distillation through the loop; the
  loss network comes in as the step's frozen argument (`Experiment.frozen_inputs`)."""
  from configs import digits_reflow
  from genode.reflow import feature_loss
  monkeypatch.setenv("GENODE_CACHE", str(tmp_path / "cache"))
  root = str(tmp_path / "r")
  config = digits_reflow.make("1rf", runlocal=True, root=root)
  config.train.update(num_steps=2, sample_every=0)
  loop.train(config, f"{root}/1rf")
  couple.couple_workdir(f"{root}/1rf", f"{root}/pairs_2rf", 16, solver="heun", steps=2)
  config = digits_reflow.make("distill_feature", runlocal=True, root=root)
  config.data.teacher_workdir = config.init_from.workdir = f"{root}/1rf"
  config.train.update(num_steps=2, sample_every=0, batch_size=8)
  experiment = Experiment.from_config(config)
  (frozen,) = experiment.frozen_inputs()
  jax.tree.map(np.testing.assert_array_equal, frozen, feature_loss.load_params("digits"))
  loop.train(config, f"{root}/distill")
  rows = [json.loads(line) for line in open(f"{root}/distill/metrics.jsonl")]
  assert rows and all(np.isfinite(r["feature"]) and r["l2"] >= 0 for r in rows), rows


def test_stage_arguments():
  assert reflow_stages.parse_arg("3rf,runlocal") == ("3rf", True)
  with pytest.raises(ValueError, match="valid: one of"):
    reflow_stages.parse_arg("4rf")
  config = toy2d_reflow.make("3rf", root="/r")
  assert config.data.path == "/r/pairs_2rf" and config.init_from.workdir == "/r/2rf"
  assert config.objective.name == "reflow" and config.data.teacher_workdir == "/r/2rf"
  assert toy2d_reflow.get_config("1rf").data.name == "toy2d"


@pytest.mark.slow
def test_evaluation_of_a_student_against_the_original_data(root, tmp_path):
  workdir = str(tmp_path / "2rf")
  loop.train(_student(root, "2rf"), workdir)
  records = evaluate.evaluate_workdir(workdir, eval_reflow.get_config("runlocal"))
  names = [r["name"] for r in records]
  assert names[:5] == ["heun_karras4", "euler_rf1", "euler_rf2", "euler_rf4",
                       "teacher_couplings"] and "straightness" in names
  assert all(r["dataset"] == "toy2d" for r in records)  # not "couplings"
  rows = {r["name"]: r for r in records}
  assert rows["euler_rf1"]["nfe"] == 1 and rows["euler_rf1"]["sampler"]["grid"] == "rf_time"
  assert rows["euler_rf1"]["metrics"]["sliced_wasserstein"] > 0
  assert rows["teacher_couplings"]["nfe"] == 7
  s = rows["straightness"]
  assert s["transport"] > 0 and s["straightness_normalized"] >= 0
  out = os.path.join(workdir, "eval", "4")
  assert os.path.exists(os.path.join(out, "trajectories.png"))
  assert "Straightness (eq. 3" in open(os.path.join(out, "results.md")).read()


def test_straightness_row_is_zero_for_the_closed_form_straight_flow():
  sigma_max = formulations.RectifiedFlow().sigma_max
  gaussian = gaussians.Gaussian.random(jax.random.key(0), 2, jnp.float32)
  coupling = ideal.LinearCoupling.of_gaussian_flow(gaussian, sigma_max)
  family = types.SimpleNamespace(data_shape=(2,), sigma_range=(1e-3, sigma_max),
                                 grid_labels=lambda n: None,
                                 denoiser=lambda params, labels: coupling.denoiser)
  config = eval_reflow.get_config("runlocal")
  record, trajectory = reflow_eval.straightness(family, None, config)
  assert record["transport"] > 0.1 and abs(record["straightness_normalized"]) < 1e-5
  assert trajectory.x.shape == (config.rf.straightness_steps + 1, 16, 2)


@pytest.mark.slow
def test_couple_benchmark_times_the_loop_against_the_bare_sampler(root):
  from genode.benchmarks import couple as couple_bench
  r = couple_bench.benchmark(f"{root}/1rf", solver="heun", steps=4, batch_size=8,
                             num_batches=2)
  assert r["num_pairs"] == 16 and r["nfe"] == 7
  assert r["bare_pairs_per_sec"] > 0 and r["loop_pairs_per_sec"] > 0
  assert r["overhead_ratio"] == pytest.approx(r["loop_wall_s"] / r["bare_wall_s"])
