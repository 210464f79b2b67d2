"""Checkpoints and workdirs: round trips, config guard, overwrite, fallback, clear errors."""

import json
import os

import jax
import numpy as np
import pytest

from configs import toy2d_edm
from genode.experiment import Experiment
from genode import workdir as workdir_lib
from genode.train.checkpoint import CheckpointError, Checkpointer


@pytest.fixture(scope="module")
def toy():
  """(config, experiment, state) for the runlocal toy2d EDM experiment."""
  config = toy2d_edm.get_config("runlocal")
  experiment = Experiment.from_config(config, validate=False)
  return config, experiment, experiment.init_state()


def perturbed(state, step, scale=1.0):
  """A state that differs from `state` in every float leaf, at `step`."""
  bump = lambda x: x + scale if np.issubdtype(np.asarray(x).dtype, np.floating) else x
  return jax.device_get(state.replace(step=np.int32(step),
                                      params=jax.tree.map(bump, state.params),
                                      ema_params=jax.tree.map(bump, state.ema_params),
                                      opt_state=jax.tree.map(bump, state.opt_state)))


def assert_states_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(a), jax.device_get(b))


def save(workdir, config, states):
  workdir_lib.prepare_workdir(workdir, config)
  checkpointer = Checkpointer(workdir)
  for s in states:
    checkpointer.save(s)
  checkpointer.close()


def test_config_json_round_trip_keeps_tuples(toy):
  config = toy[0]
  restored = workdir_lib.config_from_dict(json.loads(json.dumps(
      workdir_lib.config_to_dict(config))))
  assert restored == config
  assert isinstance(restored.model.hidden_dims, tuple)


def test_save_restore_is_exact_and_restore_workdir(toy, tmp_path):
  config, experiment, state = toy
  workdir = str(tmp_path)
  states = [perturbed(state, 2, 1.0), perturbed(state, 4, 2.0)]
  save(workdir, config, states)
  assert Checkpointer(workdir).steps() == [2, 4]
  template = experiment.abstract_state()
  assert_states_equal(Checkpointer(workdir).restore(template, 2), states[0])
  restored = workdir_lib.restore_workdir(workdir)
  assert restored.step == 4 and restored.config == config
  assert_states_equal(restored.state, states[1])
  assert isinstance(jax.tree.leaves(restored.state.ema_params)[0], np.ndarray)
  assert workdir_lib.restore_workdir(workdir, step=2).step == 2
  with pytest.raises(CheckpointError, match=r"step 3 .*available steps: \[2, 4\]"):
    workdir_lib.restore_workdir(workdir, step=3)


def test_restore_workdir_errors(toy, tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    workdir_lib.restore_workdir(str(tmp_path / "missing"))
  with pytest.raises(FileNotFoundError, match="config.json"):
    workdir_lib.restore_workdir(str(tmp_path))
  workdir_lib.prepare_workdir(str(tmp_path), toy[0])
  with pytest.raises(CheckpointError, match="No checkpoints"):
    workdir_lib.restore_workdir(str(tmp_path))


def corrupt(workdir, step):
  """Overwrites every data file of a checkpoint with garbage."""
  for root, _, files in os.walk(os.path.join(workdir, "checkpoints", str(step))):
    for name in files:
      if not name.endswith(".txt"):
        with open(os.path.join(root, name), "wb") as f:
          f.write(b"garbage")


def test_unreadable_newest_checkpoint_falls_back_with_a_warning(toy, tmp_path, caplog):
  config, experiment, state = toy
  workdir = str(tmp_path)
  states = [perturbed(state, 2), perturbed(state, 4, 2.0)]
  save(workdir, config, states)
  corrupt(workdir, 4)
  with caplog.at_level("WARNING"):
    restored = workdir_lib.restore_workdir(workdir)
  assert restored.step == 2
  assert_states_equal(restored.state, states[0])
  assert any("4 is unreadable" in r.getMessage() for r in caplog.records)
  assert Checkpointer(workdir).steps() == [2, 4]  # evaluation changes nothing
  # A named unreadable step is an error, not a fallback.
  with pytest.raises(Exception):
    workdir_lib.restore_workdir(workdir, step=4)
  # The training loop moves it aside, so that step 4 can be saved again.
  result = Checkpointer(workdir).restore_newest(experiment.abstract_state(), move_broken=True)
  assert result[1] == 2
  assert Checkpointer(workdir).steps() == [2]
  assert os.path.isdir(os.path.join(workdir, "broken_checkpoints", "4"))
  corrupt(workdir, 2)
  with pytest.raises(CheckpointError, match="No readable checkpoint"):
    workdir_lib.restore_workdir(workdir)


def test_workdir_with_another_config_is_refused(toy, tmp_path):
  config = toy[0]
  workdir = str(tmp_path)
  save(workdir, config, [perturbed(toy[2], 2)])
  workdir_lib.prepare_workdir(workdir, config)  # same experiment: fine
  cadence = config.copy_and_resolve_references()
  cadence.train.log_every = 7
  cadence.sampler.steps = 3
  workdir_lib.prepare_workdir(workdir, cadence)  # logging/sampling cadence may change
  other = config.copy_and_resolve_references()
  other.optim.learning_rate = 0.5
  with pytest.raises(ValueError, match=r"optim.learning_rate: 0.001 -> 0.5.*overwrite"):
    workdir_lib.prepare_workdir(workdir, other)
  assert Checkpointer(workdir).steps() == [2]  # nothing deleted
  workdir_lib.prepare_workdir(workdir, other, overwrite=True)
  assert Checkpointer(workdir).steps() == []
  assert workdir_lib.load_config(workdir) == other


def test_checkpoints_without_config_are_refused(toy, tmp_path):
  workdir = str(tmp_path)
  save(workdir, toy[0], [perturbed(toy[2], 2)])
  os.remove(os.path.join(workdir, "config.json"))
  with pytest.raises(ValueError, match="no config.json"):
    workdir_lib.prepare_workdir(workdir, toy[0])
