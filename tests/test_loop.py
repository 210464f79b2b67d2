"""The training loop: exact resume after SIGKILL, NaN stop, signals, end-to-end runs."""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import digits_edm, toy2d_edm
from genode import loop
from genode import workdir as workdir_lib
from genode.experiment import Experiment
from genode.workdir import sample_workdir
from genode.train.checkpoint import Checkpointer

sys.path.insert(0, os.path.dirname(__file__))
import train_worker  # noqa: E402

WORKER = os.path.join(os.path.dirname(__file__), "train_worker.py")


def restore(workdir, step):
  experiment = Experiment.from_config(workdir_lib.load_config(workdir), validate=False)
  return Checkpointer(workdir).restore(experiment.abstract_state(), step)


@pytest.fixture(scope="module")
def worker_env(tmp_path_factory):
  """A compilation cache shared by this module's runs and its subprocesses (same programs)."""
  with train_worker.persistent_compilation_cache(str(tmp_path_factory.mktemp("xla"))) as env:
    yield env


def run_worker(env, *args, expect_kill=False):
  result = subprocess.run([sys.executable, WORKER, *map(str, args)], capture_output=True,
                          text=True, timeout=600, env=env)
  if expect_kill:
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
  else:
    assert result.returncode == 0, result.stderr[-3000:]
  return result.stderr


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(tmp_path, worker_env):
  num_steps, every, kill_after = 8, 3, 3
  straight = str(tmp_path / "straight")
  loop.train(train_worker.resume_config(num_steps, every), straight)
  pieces = str(tmp_path / "pieces")
  run_worker(worker_env, pieces, num_steps, every, kill_after, expect_kill=True)
  assert Checkpointer(pieces).steps() == [3]
  log = run_worker(worker_env, pieces, num_steps, every)  # the same command again
  assert "Resuming" in log and "from checkpoint 3" in log
  assert Checkpointer(pieces).steps() == Checkpointer(straight).steps() == [3, 6, 8]
  a, b = restore(straight, num_steps), restore(pieces, num_steps)
  assert int(a.step) == num_steps
  for name in ("params", "ema_params", "opt_state", "rng", "step"):
    jax.tree.map(np.testing.assert_array_equal, getattr(a, name), getattr(b, name))
  # The metrics of the resumed run continue the log without duplicates.
  with open(os.path.join(pieces, "metrics.jsonl")) as f:
    steps = [json.loads(line)["step"] for line in f]
  assert steps == [2, 4, 6, 8]


@pytest.mark.slow
def test_resume_between_checkpoints_drops_the_metrics_after_the_checkpoint(tmp_path,
                                                                           worker_env):
  num_steps, every = 8, 3
  straight = str(tmp_path / "straight")
  loop.train(train_worker.resume_config(num_steps, every), straight)
  pieces = str(tmp_path / "pieces")
  # Killed when step 6's batch is drawn: checkpoint 3 committed, metrics of 2 and 4 logged.
  run_worker(worker_env, pieces, num_steps, every, 3, 5, expect_kill=True)
  with open(os.path.join(pieces, "metrics.jsonl")) as f:
    assert [json.loads(line)["step"] for line in f] == [2, 4]
  run_worker(worker_env, pieces, num_steps, every)
  with open(os.path.join(pieces, "metrics.jsonl")) as f:
    assert [json.loads(line)["step"] for line in f] == [2, 4, 6, 8]
  a, b = restore(straight, num_steps), restore(pieces, num_steps)
  for name in ("params", "ema_params", "opt_state", "rng", "step"):
    jax.tree.map(np.testing.assert_array_equal, getattr(a, name), getattr(b, name))


class _Poisoned:
  """Wraps a dataset: NaN batches from step `nan_from`, SIGTERM to self at `term_at`."""

  def __init__(self, dataset, nan_from=None, term_at=None):
    self.dataset, self.nan_from, self.term_at = dataset, nan_from, term_at
    self.name, self.shape, self.num_classes = dataset.name, dataset.shape, dataset.num_classes

  def train_batch(self, seed, step, *args):
    batch = self.dataset.train_batch(seed, step, *args)
    if self.term_at is not None and step == self.term_at:
      os.kill(os.getpid(), signal.SIGTERM)
    if self.nan_from is not None and step >= self.nan_from:
      batch = dict(batch, x=np.full_like(batch["x"], np.nan))
    return batch


def small_toy(num_steps=6):
  config = toy2d_edm.get_config("runlocal")
  config.train.update(num_steps=num_steps, checkpoint_every=2, log_every=3, sample_every=0,
                      keep_checkpoints=10)
  return config


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, worker_env):
  config = small_toy()
  experiment = Experiment.from_config(config, validate=False)
  poisoned = Experiment.from_config(config, dataset=_Poisoned(experiment.dataset, nan_from=3),
                                    validate=False)
  workdir = str(tmp_path)
  with pytest.raises(loop.NonFiniteLossError, match="step 4 .*last good checkpoint is step 2"):
    loop.train_experiment(poisoned, workdir)
  assert Checkpointer(workdir).steps() == [2]
  state = restore(workdir, 2)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))


def test_sigterm_saves_a_checkpoint_and_returns(tmp_path, worker_env):
  config = small_toy(num_steps=50)
  experiment = Experiment.from_config(config, validate=False)
  stopping = Experiment.from_config(config, dataset=_Poisoned(experiment.dataset, term_at=4),
                                    validate=False)
  state = loop.train_experiment(stopping, str(tmp_path))
  assert int(state.step) == 5  # the step that read the batch finishes, then the loop stops
  assert Checkpointer(str(tmp_path)).steps() == [2, 4, 5]
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


@pytest.mark.slow
@pytest.mark.parametrize("module", [toy2d_edm, digits_edm], ids=["toy2d", "digits"])
def test_runlocal_configs_train_end_to_end(module, tmp_path, worker_env):
  config = module.get_config("runlocal")
  workdir = str(tmp_path)
  state = loop.train(config, workdir)
  n = config.train.num_steps
  assert int(state.step) == n
  assert Checkpointer(workdir).steps()[-1] == n
  assert os.path.exists(os.path.join(workdir, "samples", f"step_{n}.png"))
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records] == list(range(config.train.log_every, n + 1,
                                                    config.train.log_every))
  assert all(np.isfinite(r["loss"]) for r in records)
  restored = workdir_lib.restore_workdir(workdir)
  assert restored.step == n
  jax.tree.map(np.testing.assert_array_equal, restored.state.ema_params, state.ema_params)
  if module is toy2d_edm:  # launch.sample's library call, on the same workdir
    record = sample_workdir(workdir, solver="euler", steps=3, num_samples=5,
                            out=str(tmp_path / "s"))
    assert record["nfe"] == 3 and record["finite"] and record["step"] == n
    assert np.load(record["npz"])["x"].shape == (5, 2)
    assert os.path.exists(record["png"])
    with pytest.raises(ValueError, match="heun"):
      sample_workdir(workdir, solver="nonexistent")


def test_pmap_trains_the_same_model_as_shard_map(tmp_path, worker_env):
  states = {}
  for mode in ("shard_map", "pmap"):
    config = small_toy(num_steps=2)
    config.parallel = mode
    states[mode] = loop.train(config, str(tmp_path / mode))
    assert Checkpointer(str(tmp_path / mode)).steps() == [2]
  # Both split the batch over the same 8 devices, so they draw the same noise.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               states["pmap"].params, states["shard_map"].params)
