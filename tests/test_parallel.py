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
# name -> DataParallel arguments
MODES = {"shard_map": ("shard_map", {}),
         "shard_map_check_vma": ("shard_map", {"check_vma": True}),  # the pmean trap's home
         "pmap": ("pmap", {}),
         "single": ("single", {"num_shards": NUM_DEVICES})}


def _assert_close(actual, expected, rtol=1e-6):
  """Leaf by leaf, max |actual − expected| ≤ rtol · max |expected| (float32 sums reorder)."""

  def check(path, a, b):
    error, scale = np.max(np.abs(np.asarray(a) - b)), np.max(np.abs(b))
    assert error <= rtol * scale, f"{jax.tree_util.keystr(path)}: error {error}, scale {scale}"

  jax.tree_util.tree_map_with_path(check, actual, expected)


def test_eight_devices():
  assert jax.device_count() == NUM_DEVICES, "tests/conftest.py sets 8 virtual CPU devices"


@pytest.fixture(scope="module")
def runs():
  """3 steps of EDM + clipped Adam (clip 0.1) + dropout, batch 16, in each mode."""
  return {name: train_toy(DataParallel(mode, **kw), num_steps=3, batch_size=16)
          for name, (mode, kw) in MODES.items()}


@pytest.mark.parametrize("name", ["shard_map_check_vma", "pmap", "single"])
def test_modes_agree_with_shard_map(runs, name):
  run, reference = runs[name], runs["shard_map"]
  for metric in ("loss", "grad_norm", "learning_rate", "ema_decay"):
    np.testing.assert_allclose(run.metrics[metric], reference.metrics[metric], rtol=1e-6,
                               err_msg=metric)
  _assert_close(run.first_gradient, reference.first_gradient)
  # One device sums the 8 shards' gradients in another order than the all-reduce; after
  # three Adam steps (m/√v divides out the gradient's scale) that float32 rounding reaches
  # ~1e-6 of the largest parameter under XLA's classic CPU emitters (tests/conftest.py).
  rtol = 3e-6 if name == "single" else 1e-6
  _assert_close(run.state.params, reference.state.params, rtol)
  _assert_close(run.state.ema_params, reference.state.ema_params, rtol)
  assert int(run.state.step) == 3


def test_clipping_binds_and_schedule_applies(runs):
  metrics = runs["shard_map"].metrics
  assert np.all(metrics["grad_norm"] > 0.1)  # clip_by_global_norm(0.1) is active
  assert not np.any(metrics["nonfinite"])
  # Warm-up over 1 step, then cosine decay over 9.
  np.testing.assert_allclose(metrics["learning_rate"],
                             [0.0, 1e-2, 1e-2 * (1 + np.cos(np.pi / 9)) / 2], rtol=1e-6)


def _norm(tree):
  return np.sqrt(sum(np.sum(np.square(np.asarray(leaf))) for leaf in jax.tree.leaves(tree)))


@pytest.fixture(scope="module")
def one_device_gradient(runs):
  """∇ of the mean over the 8 shards of each shard's loss: one device, no collectives."""
  model, formulation = TinyMLP(dropout_rate=0.1), get_formulation("edm")
  state = runs["shard_map"].initial_state  # the same in every mode (same seed)
  shards = toy_batch(0, 16)["x"].reshape(NUM_DEVICES, -1, 2)
  step_key = jax.random.fold_in(state.key, state.step)
  keys = jax.vmap(lambda i: jax.random.fold_in(step_key, i))(jnp.arange(NUM_DEVICES))

  def shard_loss(params, shard, key):
    noise_key, dropout_key = jax.random.split(key)
    network = lambda x_in, c_noise: model.apply(  # noqa: E731
        {"params": params}, x_in, c_noise, train=True, rngs={"dropout": dropout_key})
    return jnp.mean(denoising_loss(formulation, precondition(formulation, network), shard,
                                   noise_key))

  mean_loss = lambda params: jnp.mean(jax.vmap(shard_loss, (None, 0, 0))(params, shards, keys))
  return jax.jit(jax.grad(mean_loss))(state.params)


@pytest.mark.parametrize("name", list(MODES))
def test_gradient_is_the_one_device_gradient(runs, one_device_gradient, name):
  """The pmean trap: under shard_map + check_vma, pmean(grad(local loss)) would be 8× this."""
  run = runs[name]
  _assert_close(run.first_gradient, one_device_gradient)
  np.testing.assert_allclose(run.metrics["grad_norm"][0], _norm(one_device_gradient), rtol=1e-6)


def test_replicate_unreplicate_round_trip():
  tree = {"w": np.arange(6.0, dtype=np.float32).reshape(2, 3), "step": np.int32(4)}
  for mode, kw in MODES.values():
    parallel = DataParallel(mode, **kw)
    _assert_close(parallel.unreplicate(parallel.replicate(tree)), tree, rtol=0)
    batch = parallel.shard_batch({"x": np.zeros((16, 2), np.float32)})
    assert jax.tree.leaves(batch)[0].size == 32


def test_bad_mode_and_batch_errors():
  with pytest.raises(ValueError, match=r"valid modes: \['shard_map', 'pmap', 'single'\]"):
    DataParallel("dp")
  with pytest.raises(ValueError, match="num_shards is only for mode='single'"):
    DataParallel("pmap", num_shards=2)
  with pytest.raises(ValueError, match="check_vma is only for mode='shard_map'"):
    DataParallel("single", check_vma=True)
  for mode, kw in MODES.values():
    with pytest.raises(ValueError, match="Batch size 12 .* not divisible by the 8"):
      DataParallel(mode, **kw).shard_batch({"x": np.zeros((12, 2))})
  with pytest.raises(ValueError, match="same leading batch dimension"):
    DataParallel("shard_map").shard_batch({"x": np.zeros((16, 2)), "label": np.zeros(8)})


@pytest.mark.parametrize("name", list(MODES))
def test_frozen_inputs_are_arguments_of_the_compiled_step(name):
  """A teacher's parameters reach the step at run time: new values, no recompilation."""
  mode, kw = MODES[name]
  parallel = DataParallel(mode, donate=False, **kw)

  def objective(params, batch, key, target):
    del key
    return jnp.mean((params["w"][None] * batch["x"] - target["y"]) ** 2, axis=-1), {}

  optimizer = optax.sgd(0.0)
  params = {"w": jnp.full((2,), 2.0)}
  state = parallel.replicate(create_train_state(params, optimizer, jax.random.key(0)))
  step = parallel.compile(make_train_step(objective, optimizer, ema_decay=0.5), num_frozen=1)
  batch = parallel.shard_batch({"x": np.ones((16, 2), np.float32)})
  losses = [float(step(state, batch, parallel.replicate({"y": np.float32(y)}))[1]["loss"])
            for y in (0.0, 1.0, 2.0)]
  np.testing.assert_allclose(losses, [4.0, 1.0, 0.0])  # (2·1 − y)²
  if hasattr(step, "_cache_size"):
    assert step._cache_size() == 1  # pylint: disable=protected-access
