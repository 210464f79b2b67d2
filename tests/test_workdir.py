"""The workdir layer: one run per workdir, longer runs, inference without data or devices."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import cifar10_edm, toy2d_edm
from genode import loop
from genode import workdir as workdir_lib
from genode.evaluation import evaluate
from genode.experiment import Experiment

ROOT = os.path.join(os.path.dirname(__file__), "..")


def small_toy(num_steps=4, **train):
  config = toy2d_edm.get_config("runlocal")
  config.train.update(num_steps=num_steps, checkpoint_every=2, log_every=2, sample_every=0,
                      keep_checkpoints=10, **train)
  return config


# -- one run per workdir -------------------------------------------------------


def test_a_held_workdir_is_refused_naming_the_holder(tmp_path):
  workdir = str(tmp_path)
  with workdir_lib.hold(workdir):
    holder = json.loads((tmp_path / "lock.json").read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with pytest.raises(workdir_lib.WorkdirError,
                       match=rf"in use by another training run \(host .*, pid {os.getpid()}"):
      with workdir_lib.hold(workdir):
        pass
    with pytest.raises(workdir_lib.WorkdirError):  # the training loop holds it too
      loop.train(small_toy(), workdir)
  assert not (tmp_path / "lock.json").exists()  # released


def test_a_stale_lock_is_taken_over(tmp_path, caplog):
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  pid = int(dead.stdout)  # that process has exited
  (tmp_path / "lock.json").write_text(json.dumps(
      dict(host=socket.gethostname(), pid=pid, start=None, since="earlier")))
  with caplog.at_level("WARNING"):
    with workdir_lib.hold(str(tmp_path)):
      assert json.loads((tmp_path / "lock.json").read_text())["pid"] == os.getpid()
  assert any("stale lock" in r.getMessage() for r in caplog.records)
  # A reused pid (same number, another process start time) is stale too.
  (tmp_path / "lock.json").write_text(json.dumps(
      dict(host=socket.gethostname(), pid=os.getpid(), start="-1", since="earlier")))
  with workdir_lib.hold(str(tmp_path)):
    pass
  # A holder on another host cannot be checked: it is respected.
  (tmp_path / "lock.json").write_text(json.dumps(dict(host="elsewhere", pid=1, since="x")))
  with pytest.raises(workdir_lib.WorkdirError, match="host elsewhere, pid 1"):
    with workdir_lib.hold(str(tmp_path)):
      pass


# -- training a finished run for longer ----------------------------------------


def test_a_longer_run_resumes_bit_identically(tmp_path):
  short = str(tmp_path / "short")
  loop.train(small_toy(num_steps=4), short)
  state = loop.train(small_toy(num_steps=6), short)  # the same run, 2 steps more
  straight = loop.train(small_toy(num_steps=6), str(tmp_path / "straight"))
  for name in ("params", "ema_params", "opt_state", "rng", "step"):
    jax.tree.map(np.testing.assert_array_equal, getattr(state, name), getattr(straight, name))
  assert workdir_lib.load_config(short).train.num_steps == 6


def test_a_longer_run_with_a_decaying_schedule_is_refused(tmp_path):
  config = small_toy(num_steps=4)
  config.optim.decay = "cosine"
  workdir = str(tmp_path)
  workdir_lib.prepare_workdir(workdir, config)
  longer = config.copy_and_resolve_references()
  longer.train.num_steps = 8
  with pytest.raises(ValueError, match=r"train.num_steps 4 -> 8: .*'cosine'.* new workdir"):
    workdir_lib.prepare_workdir(workdir, longer)
  shorter = config.copy_and_resolve_references()
  shorter.train.num_steps = 2
  with pytest.raises(ValueError, match="different experiment"):
    workdir_lib.prepare_workdir(workdir, shorter)
  assert workdir_lib.load_config(workdir) == config  # nothing changed


def test_a_run_written_before_an_option_existed_resumes_with_it_switched_off(tmp_path):
  config = small_toy(num_steps=4)
  workdir = str(tmp_path)
  workdir_lib.prepare_workdir(workdir, config)
  path = os.path.join(workdir, workdir_lib.CONFIG_FILE)
  with open(path) as f:
    old = json.load(f)
  del old["train"]["select_by"], old["train"]["patience"]  # a config from before them
  with open(path, "w") as f:
    json.dump(old, f)
  switched_on = config.copy_and_resolve_references()
  switched_on.train.select_by = "val_nll"
  with pytest.raises(ValueError, match=r"train.select_by: '<absent>' -> 'val_nll'"):
    workdir_lib.prepare_workdir(workdir, switched_on)
  workdir_lib.prepare_workdir(workdir, config)  # "" and 0: the options are off


# -- inference: no data files, any device count ----------------------------------


class _Synthetic:
  """Stands in for CIFAR-10 while training: uniform noise of its shape, no files."""

  def __init__(self, dataset):
    self.name, self.shape, self.num_classes = dataset.name, dataset.shape, dataset.num_classes
    self.quantization_levels = 256

  def train_batch(self, seed, step, batch_size, process_index=0, process_count=1):
    rng = np.random.default_rng((seed, step))
    return {"x": rng.uniform(-1, 1, (batch_size,) + self.shape).astype(np.float32),
            "label": np.zeros(batch_size, np.int32)}


@pytest.mark.slow
def test_a_cifar10_checkpoint_samples_without_the_cifar_files(tmp_path):
  config = cifar10_edm.get_config("runlocal")
  config.data.path = str(tmp_path / "no_cifar_here")
  config.train.update(num_steps=2, checkpoint_every=2, sample_every=0)
  config.model.update(channel_mults=(1, 2), num_res_blocks=1)
  files = Experiment.from_config(config, validate=False, for_training=False).dataset
  experiment = Experiment.from_config(config, dataset=_Synthetic(files))
  workdir = str(tmp_path / "run")
  loop.train_experiment(experiment, workdir)
  assert not os.path.exists(config.data.path)
  record = workdir_lib.sample_workdir(workdir, solver="euler", steps=2, num_samples=4)
  assert record["finite"] and np.load(record["npz"])["x"].shape == (4, 32, 32, 3)
  # The metrics that compare with the data say that they need it; the samples are drawn.
  eval_config = _eval_config(metrics=("fid", "nll"))
  records = evaluate.evaluate_workdir(workdir, eval_config)
  assert records[0]["metrics"]["fid"] is None  # no weights here, nor data
  assert "needs the dataset's files" in records[-1]["nll_skipped"]
  assert records[0]["nfe"] == 2


def _eval_config(**overrides):
  from configs import eval as eval_config_lib  # pylint: disable=g-import-not-at-top
  config = eval_config_lib.get_config("runlocal")
  config.update(solvers=("euler",), steps=(2,), adaptive_solvers=(), num_samples=4,
                batch_size=4, grid_samples=4)
  config.nll.update(num_examples=2, batch_size=2)
  config.update(overrides)
  return config


@pytest.mark.slow
def test_a_run_trained_on_8_devices_samples_and_evaluates_on_3(tmp_path):
  config = small_toy(num_steps=2)
  config.train.batch_size = 16  # 2 per device here; 16 does not split over 3
  workdir = str(tmp_path / "run")
  loop.train(config, workdir)
  script = (
      "import sys; from configs import eval as e; from genode import workdir as w; "
      "from genode.evaluation import evaluate; import jax; assert jax.device_count() == 3; "
      "r = w.sample_workdir(sys.argv[1], solver='heun', grid='uniform_t', steps=3, "
      "num_samples=5); assert r['finite'] and r['nfe'] == 5, r; "
      "c = e.get_config('runlocal'); c.update(num_samples=8, batch_size=8); "
      "recs = evaluate.evaluate_workdir(sys.argv[1], c); "
      "print('OK', len(recs), recs[-1]['nll_bits_per_dim'])")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=3",
             PYTHONPATH=ROOT)
  result = subprocess.run([sys.executable, "-c", script, workdir], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "OK" in result.stdout


def test_sample_workdir_grids_and_explicit_sigmas(tmp_path):
  workdir = str(tmp_path)
  loop.train(small_toy(num_steps=2), workdir)
  uniform = workdir_lib.sample_workdir(workdir, solver="euler", grid="uniform_t", steps=3,
                                       num_samples=5, out=str(tmp_path / "u"))
  assert uniform["nfe"] == 3 and uniform["grid"] == "uniform_t"
  # The same σ's as an explicit list give the same samples.
  explicit = workdir_lib.sample_workdir(workdir, solver="euler", sigmas=uniform["sigmas"],
                                        num_samples=5, out=str(tmp_path / "e"))
  np.testing.assert_array_equal(np.load(explicit["npz"])["x"], np.load(uniform["npz"])["x"])
  assert explicit["grid"] == "explicit"
  with pytest.raises(ValueError, match="valid grids"):
    workdir_lib.sample_workdir(workdir, grid="cosine")
  with pytest.raises(ValueError, match="strictly decreasing"):
    workdir_lib.sample_workdir(workdir, sigmas=[1.0, 2.0, 0.0])
  with pytest.raises(ValueError, match=r"Unknown params 'best'"):
    workdir_lib.sample_workdir(workdir, params="best")


def test_config_sampler_carries_options_coordinates_and_sigmas(tmp_path):
  config = small_toy(num_steps=2)
  config.sampler.update(solver="edm_stochastic", sigmas=(10.0, 1.0, 0.1, 0.0),
                        coordinates="sigma")
  config.sampler.options = {"S_churn": 5.0}
  family = Experiment.from_config(config, validate=False).family
  np.testing.assert_array_equal(family.sampler_sigmas(), [10.0, 1.0, 0.1, 0.0])
  assert dict(family.sampler.options) == {"S_churn": 5.0}
  bad = small_toy()
  bad.sampler.coordinates = "polar"
  with pytest.raises(ValueError, match=r"coordinates 'polar'.*\['sigma', 'native'\]"):
    Experiment.from_config(bad, validate=False)
  bad = small_toy()
  bad.sampler.options = {"S_crunch": 1.0}
  bad.sampler.solver = "edm_stochastic"
  with pytest.raises(ValueError, match="S_churn"):
    loop.train(bad, str(tmp_path / "bad"))
  assert not os.path.exists(tmp_path / "bad" / "checkpoints")


def test_init_from_a_trained_run(tmp_path, caplog):
  teacher = str(tmp_path / "teacher")
  taught = loop.train(small_toy(num_steps=2), teacher)
  student = small_toy(num_steps=2)
  student.init_from.workdir = teacher
  experiment = Experiment.from_config(student, validate=False)
  state = workdir_lib.warm_start(experiment, experiment.init_state())
  jax.tree.map(np.testing.assert_array_equal, state.params, taught.ema_params)
  jax.tree.map(np.testing.assert_array_equal, state.ema_params, taught.ema_params)
  fresh = experiment.optimizer.init(state.params)  # a fresh Adam: zero moments, count 0
  jax.tree.map(np.testing.assert_array_equal, state.opt_state, fresh)
  other = small_toy(num_steps=2)
  other.model.hidden_dims = (8,)  # another architecture: starts fresh
  other.init_from.workdir = teacher
  experiment = Experiment.from_config(other, validate=False)
  initial = experiment.init_state()
  with caplog.at_level("WARNING"):
    state = workdir_lib.warm_start(experiment, initial)
  assert state is initial and any("do not fit" in r.getMessage() for r in caplog.records)


def test_objectives_resolve_by_name():
  config = small_toy()
  config.objective = {"name": "reflow", "time": "uniform"}
  assert Experiment.from_config(config, validate=False).family.objective_name == "reflow"
  config.objective = {"name": "nope"}
  with pytest.raises(ValueError, match=r"valid objectives: \['denoising', 'distill', 'reflow'\]"):
    Experiment.from_config(config, validate=False)
  config.objective = {"name": "distill", "steps": 2}
  with pytest.raises(ValueError, match=r"parameters: \['num_steps', 'loss', 'feature_net', 'feature_weight'\]"):
    Experiment.from_config(config, validate=False)
