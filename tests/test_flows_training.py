"""The flow family through the shared loop, workdirs, validation selection and evaluation."""

import dataclasses
import json
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits_glow, eval_flows, toy2d_glow, toy2d_realnvp
from genode import loop
from genode import validation as validation_lib
from genode import workdir as workdir_lib
from genode.evaluation import compare
from genode.evaluation import evaluate
from genode.experiment import Experiment
from genode.flows.architectures import Flow
from genode.flows.family import NormalizingFlow
from genode.train.checkpoint import Checkpointer
from tests.test_launch import launch


def toy_flow(num_steps=4, **train):
  config = toy2d_glow.get_config("runlocal")
  config.train.update(num_steps=num_steps, sample_every=0, **train)
  return config


def digits_flow(num_steps=4, **train):
  config = digits_glow.get_config("runlocal")
  config.train.update(num_steps=num_steps, sample_every=0, **train)
  return config


def test_flow_family_is_registered_and_resolved_once():
  experiment = Experiment.from_config(digits_flow(), validate=False)
  family = experiment.family
  assert isinstance(family, NormalizingFlow) and family.name == "flow"
  assert family.quantization_levels == 256 and family.data_shape == (8, 8, 1)
  assert Experiment.from_config(toy_flow(), validate=False).family.quantization_levels == 0
  config = digits_flow()
  config.objective.name = "denoising"
  with pytest.raises(ValueError, match=r"Unknown objective 'denoising' for family 'flow'; "
                                       r"valid objectives: \['nll'\]"):
    Experiment.from_config(config, validate=False)


def test_multiscale_shape_error_at_the_config_layer():
  config = digits_flow()
  config.flow.num_levels = 4  # 8×8 squeezes 3 times at most
  with pytest.raises(ValueError, match=r"Glow: cannot squeeze an input of shape "
                                       r"\(1, 8, 8, 1\) 4 time\(s\).*divisible by 16"):
    Experiment.from_config(config)


@pytest.mark.slow
def test_bad_shape_is_one_line_from_the_launcher(tmp_path):
  status, stderr = launch("train", "--config=configs/digits_glow.py:runlocal",
                          f"--workdir={tmp_path / 'w'}", "--config.flow.num_levels=4")
  assert status == 1
  lines = [l for l in stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "Glow: cannot squeeze an input of shape (1, 8, 8, 1)" in lines[0]
  assert "Traceback" not in stderr
  assert not os.path.exists(tmp_path / "w" / "checkpoints")


def test_actnorm_is_data_initialized_and_kept_through_a_checkpoint_restore(tmp_path):
  config = digits_flow(num_steps=2, checkpoint_every=2, select_by="")
  experiment = Experiment.from_config(config, validate=False)
  fresh = experiment.init_state()
  # Data-dependent init: the first ActNorm normalizes its input (the squeezed, dequantized
  # step-0 batch) per channel.
  first = fresh.params["level0_step0_actnorm"]
  assert float(jnp.abs(first["bias"]).max()) > 0.1  # not the zeros of a data-free init
  final = loop.train(config, str(tmp_path))
  restored = workdir_lib.restore_workdir(str(tmp_path))
  assert restored.step == 2
  jax.tree.map(np.testing.assert_array_equal, restored.state.params, final.params)
  # Trained ActNorm values differ from what an init from any batch would give, and the
  # restored model computes with them as they are (no re-initialization on restore).
  batch = experiment.train_batch(1)
  other = experiment.family.init_params(jax.random.key(5, impl="rbg"), batch)
  assert not np.allclose(restored.state.params["level0_step0_actnorm"]["bias"],
                         other["level0_step0_actnorm"]["bias"])
  x = experiment.family.dequantized(jax.random.key(3), batch["x"])
  np.testing.assert_array_equal(experiment.family.log_prob(restored.state.params, x),
                                experiment.family.log_prob(final.params, x))


def test_parallel_modes_train_the_same_flow(tmp_path):
  """shard_map (8 devices) = pmap = one device: the toy flow's loss has no noise.

  Adam's ε = 1 keeps the update linear in small gradients: with Adamax's first step,
  lr·sign(g), a gradient entry within rounding of 0 would flip with the summation order.
  """
  states = {}
  for mode in ("shard_map", "pmap", "single"):
    config = toy_flow(num_steps=2, checkpoint_every=2, select_by="")
    config.optim.update(optimizer="adam", eps=1.0)
    config.parallel = mode
    states[mode] = loop.train(config, str(tmp_path / mode))
  for mode in ("pmap", "single"):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
                 states[mode].params, states["shard_map"].params)


@pytest.mark.slow
def test_flow_training_resumes_bit_identically(tmp_path):
  """Digits Glow (dequantization noise, ActNorm): 4 steps + 4 more = 8 straight."""
  straight = loop.train(digits_flow(num_steps=8, checkpoint_every=4, select_by=""),
                        str(tmp_path / "straight"))
  pieces = str(tmp_path / "pieces")
  loop.train(digits_flow(num_steps=4, checkpoint_every=4, select_by=""), pieces)
  resumed = loop.train(digits_flow(num_steps=8, checkpoint_every=4, select_by=""), pieces)
  assert Checkpointer(pieces).steps() == [4, 8]
  for name in ("params", "ema_params", "opt_state", "step"):
    jax.tree.map(np.testing.assert_array_equal, getattr(straight, name), getattr(resumed, name))


def test_validation_selects_and_keeps_the_best_checkpoint(tmp_path, monkeypatch):
  values = iter([3.0, 1.0, 2.0, 4.0])
  monkeypatch.setattr(validation_lib.Validator, "__call__", lambda self, params: next(values))
  config = toy_flow(num_steps=8, checkpoint_every=100, validate_every=2, keep_checkpoints=1,
                    select_by="val_nll")
  loop.train(config, str(tmp_path))
  selection = workdir_lib.read_selection(str(tmp_path))
  assert selection["best_step"] == 4 and selection["history"] == [[2, 3.0], [4, 1.0],
                                                                   [6, 2.0], [8, 4.0]]
  assert Checkpointer(str(tmp_path)).steps() == [4, 8]  # the newest, and the selected one
  assert workdir_lib.restore_workdir(str(tmp_path)).step == 4
  assert workdir_lib.restore_workdir(str(tmp_path), 8).step == 8


def test_patience_stops_training_and_a_rerun_stays_stopped(tmp_path, monkeypatch):
  values = iter([3.0, 1.0, 2.0, 4.0, 5.0])
  monkeypatch.setattr(validation_lib.Validator, "__call__", lambda self, params: next(values))
  config = toy_flow(num_steps=40, checkpoint_every=100, validate_every=2, select_by="val_nll",
                    patience=2)
  state = loop.train(config, str(tmp_path))
  assert int(state.step) == 8  # validations at 6 and 8 were worse than step 4's
  state = loop.train(config, str(tmp_path))  # resumes at 8, still exhausted
  assert int(state.step) == 8
  assert workdir_lib.selected_step(str(tmp_path)) == 4


def test_validator_scores_the_val_split_in_bits_per_dim():
  config = digits_flow()
  experiment = Experiment.from_config(config, validate=False)
  validator = validation_lib.Validator.build(experiment)
  assert validator.unit == "bits/dim" and validator.num_examples == 200
  params = experiment.init_state().ema_params
  value = validator(params)
  assert value == validator(params) and 5.0 < value < 20.0  # fixed draws: deterministic
  # Training batches never draw the held-out images.
  dataset = experiment.dataset
  images = dataset.arrays("train")[0]
  held_out = {images[i].tobytes() for i in range(1300, 1500)}
  seen = {row.tobytes() for step in range(100)
          for row in dataset.to_uint8(experiment.train_batch(step)["x"])}
  assert len(seen) > 1000 and not (seen & held_out - {images[i].tobytes() for i in range(1300)})


def test_nonfinite_log_likelihood_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path):
  """NaN data from the batch of step index 3: the flow's log-det and log p are NaN."""
  config = toy_flow(num_steps=6, checkpoint_every=2, log_every=3, select_by="")
  experiment = Experiment.from_config(config, validate=False)

  class Poisoned:
    name, shape, num_classes, quantization_levels = "toy2d", (2,), 0, 0

    def train_batch(self, seed, step, *args):
      batch = experiment.dataset.train_batch(seed, step, *args)
      return dict(batch, x=np.full_like(batch["x"], np.nan)) if step >= 3 else batch

  poisoned = Experiment.from_config(config, dataset=Poisoned(), validate=False)
  with pytest.raises(loop.NonFiniteLossError, match="step 4 .*last good checkpoint is step 2"):
    loop.train_experiment(poisoned, str(tmp_path))
  assert Checkpointer(str(tmp_path)).steps() == [2]


class _Uniform(Flow):
  """A flow whose density is uniform on [−1, 1]^d: log p = −d ln 2."""

  data_shape: tuple = (8, 8, 1)
  prior: str = "normal"

  @nn.compact
  def log_prob(self, x):
    self.param("unused", nn.initializers.zeros, ())
    return jnp.full(x.shape[:1], -self.num_dims * math.log(2.0), x.dtype)


def test_uniform_model_is_exactly_eight_bits_per_dim_in_training_and_evaluation():
  family = NormalizingFlow(_Uniform(), (8, 8, 1), 256)
  x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1)) / 127.5 - 1.0,
                  jnp.float32)
  params = family.init_params(jax.random.key(0), {"x": x})
  loss, metrics = family.objective()(params, {"x": x}, jax.random.key(1))
  np.testing.assert_allclose(loss, 8.0, rtol=0, atol=1e-5)
  experiment = Experiment.from_config(digits_flow(), validate=False)
  uniform = dataclasses.replace(experiment, family=family)
  eval_config = eval_flows.get_config("runlocal")
  record = evaluate.negative_log_likelihood(uniform, params, eval_config)
  assert record["nll_bits_per_dim"] == pytest.approx(8.0, abs=1e-5)
  assert record["num_dequantizations"] == 2 and record["method"].startswith("change")


@pytest.mark.slow
def test_evaluate_and_compare_a_toy_flow_workdir(tmp_path):
  config = toy2d_realnvp.get_config("runlocal")
  config.train.sample_every = 0
  workdir = str(tmp_path / "toy")
  loop.train(config, workdir)
  eval_config = eval_flows.get_config("runlocal")
  records = evaluate.evaluate_workdir(workdir, eval_config)
  assert [r["name"] for r in records] == ["inverse_T1", "likelihood"]
  likelihood = records[-1]
  assert likelihood["true_entropy_nats"] == pytest.approx(math.log(32), rel=1e-9)
  assert likelihood["nll_gap_nats"] == pytest.approx(
      likelihood["nll_nats"] - likelihood["true_entropy_nats"], rel=1e-9)
  row = compare.row(workdir)
  assert row["nfe"] == 1 and row["num_params"] > 0 and row["setting"] == "inverse_T1"
  table = compare.markdown([row])
  assert "NLL − true entropy" in table and "RealNVP" in table
  json.dumps(row)
