"""Data parallelism: shard_map, pmap and one device give the same numbers (8 CPU devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genode.denoiser import precondition
from genode.formulations import get_formulation
from genode.losses import denoising_loss
from genode.train import DataParallel, create_train_state, make_train_step
from multiprocess_worker import TinyMLP, toy_batch, train_toy

NUM_DEVICES = 8
MODES = {"shard_map": {}, "pmap": {}, "single": {"num_shards": NUM_DEVICES}}


def _allclose(a, b, **kw):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **kw), a, b)


def test_eight_devices():
  assert jax.device_count() == NUM_DEVICES, "tests/conftest.py sets 8 virtual CPU devices"


@pytest.fixture(scope="module")
def runs():
  """3 steps of EDM + clipped Adam (clip 0.1) + dropout, batch 16, in each mode."""
  return {mode: train_toy(DataParallel(mode, **kw), num_steps=3, batch_size=16)
          for mode, kw in MODES.items()}


@pytest.mark.parametrize("mode", ["pmap", "single"])
def test_modes_agree_with_shard_map(runs, mode):
  state, metrics = runs[mode]
  reference_state, reference_metrics = runs["shard_map"]
  for name in ("loss", "grad_norm", "learning_rate", "ema_decay"):
    np.testing.assert_allclose(metrics[name], reference_metrics[name], rtol=1e-6, err_msg=name)
  _allclose(state.params, reference_state.params, rtol=1e-6, atol=1e-8)
  _allclose(state.ema_params, reference_state.ema_params, rtol=1e-6, atol=1e-8)
  assert int(state.step) == 3


def test_clipping_binds_and_training_moves(runs):
  state, metrics = runs["shard_map"]
  assert np.all(metrics["grad_norm"] > 0.1)  # clip_by_global_norm(0.1) is active
  assert not np.any(metrics["nonfinite"])
  np.testing.assert_allclose(metrics["learning_rate"], [0.0, 1e-2, 1e-2 * (1 + np.cos(np.pi / 9)) / 2],
                             rtol=1e-6)


def _reference_gradient(model, formulation, state, batch, num_shards):
  """∇ of the mean over shards of each shard's loss, on one device, no collectives."""
  rows = batch["x"].shape[0] // num_shards

  def loss(params):
    total = 0.0
    for i in range(num_shards):
      key = jax.random.fold_in(jax.random.fold_in(state.key, state.step), i)
      noise_key, dropout_key = jax.random.split(key)
      network = lambda x_in, c_noise: model.apply(  # noqa: E731
          {"params": params}, x_in, c_noise, train=True, rngs={"dropout": dropout_key})
      shard = batch["x"][i * rows:(i + 1) * rows]
      total += jnp.mean(denoising_loss(formulation, precondition(formulation, network), shard,
                                       noise_key))
    return total / num_shards

  return jax.grad(loss)(state.params)


@pytest.mark.parametrize("mode", list(MODES))
def test_gradient_is_the_one_device_gradient(mode):
  """The pmean trap: under shard_map, pmean(grad(local loss)) would be 8× this."""
  model, formulation = TinyMLP(dropout_rate=0.1), get_formulation("edm")
  optimizer = optax.trace(decay=0.0)  # its state holds the last gradient, exactly
  state = create_train_state(model, optimizer, jnp.zeros((16, 2)), jax.random.key(3))
  batch = toy_batch(0, 16)
  parallel = DataParallel(mode, **MODES[mode])  # donates: `state` itself must stay valid
  step = parallel.compile(make_train_step(formulation, model, optimizer, ema_decay=0.9))
  new_state, metrics = step(parallel.replicate(state), parallel.shard_batch(batch))
  gradient = parallel.unreplicate(new_state).opt_state.trace
  expected = _reference_gradient(model, formulation, state, batch, NUM_DEVICES)
  _allclose(gradient, expected, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(metrics["grad_norm"], optax.tree.norm(expected), rtol=1e-5)


def test_replicate_unreplicate_round_trip():
  tree = {"w": np.arange(6.0, dtype=np.float32).reshape(2, 3), "step": np.int32(4)}
  for mode, kw in MODES.items():
    parallel = DataParallel(mode, **kw)
    _allclose(parallel.unreplicate(parallel.replicate(tree)), tree, rtol=0, atol=0)
    batch = parallel.shard_batch({"x": np.zeros((16, 2), np.float32)})
    assert jax.tree.leaves(batch)[0].size == 32


def test_bad_mode_and_batch_errors():
  with pytest.raises(ValueError, match=r"valid modes: \['shard_map', 'pmap', 'single'\]"):
    DataParallel("dp")
  with pytest.raises(ValueError, match="num_shards is only for mode='single'"):
    DataParallel("pmap", num_shards=2)
  for mode, kw in MODES.items():
    with pytest.raises(ValueError, match="Batch size 12 .* not divisible by the 8"):
      DataParallel(mode, **kw).shard_batch({"x": np.zeros((12, 2))})
  with pytest.raises(ValueError, match="same leading batch dimension"):
    DataParallel("shard_map").shard_batch({"x": np.zeros((16, 2)), "label": np.zeros(8)})
