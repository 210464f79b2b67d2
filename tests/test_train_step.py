"""Train state, optimizer schedule and clipping, parameter EMA, and the per-device step."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genode.formulations import get_formulation
from genode.train import (DataParallel, TrainState, create_train_state, ema_decay_from_half_life,
                          ema_decay_schedule, learning_rate_of, make_optimizer, make_schedule,
                          make_train_step, update_ema)
from multiprocess_worker import TinyMLP, toy_batch, toy_family, toy_state

BATCH = 8


def _allclose(a, b, **kw):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **kw), a, b)


# -- state ---------------------------------------------------------------------


def test_create_train_state():
  optimizer = make_optimizer(1e-3)
  params = toy_family(TinyMLP()).init_params(jax.random.key(0), toy_batch(0, BATCH))
  state = create_train_state(params, optimizer, jax.random.key(0))
  assert isinstance(state, TrainState)
  assert state.step.dtype == jnp.int32 and state.step.shape == () and int(state.step) == 0
  assert state.rng.dtype == jnp.uint32  # raw key data: orbax can save it
  np.testing.assert_array_equal(state.rng, jax.random.key_data(jax.random.key(0)))
  _allclose(state.ema_params, state.params, rtol=0, atol=0)
  assert jax.tree.structure(state.opt_state) == jax.tree.structure(optimizer.init(state.params))
  # A legacy raw key gives the same state as the typed key it holds.
  legacy = create_train_state(params, optimizer, jax.random.PRNGKey(0))
  np.testing.assert_array_equal(legacy.rng, state.rng)
  # An "rbg" key still leaves a default-impl (threefry) base key.
  rbg = create_train_state(params, optimizer, jax.random.key(0, impl="rbg"))
  assert rbg.rng.shape == state.rng.shape and rbg.key.dtype == state.key.dtype


def test_init_refuses_batch_stats():

  class WithBatchNorm(nn.Module):

    @nn.compact
    def __call__(self, x, noise_labels, train=False):
      return nn.BatchNorm(use_running_average=not train)(x)

  with pytest.raises(ValueError, match="batch_stats"):
    toy_family(WithBatchNorm()).init_params(jax.random.key(0), toy_batch(0, BATCH))


# -- optimizer -----------------------------------------------------------------


@pytest.mark.parametrize("decay, expected", [
    # warm-up 0 → 1e-3 over 10 steps, then decay over the remaining 100 steps.
    ("constant", {0: 0.0, 5: 5e-4, 10: 1e-3, 60: 1e-3, 110: 1e-3}),
    ("cosine", {0: 0.0, 5: 5e-4, 10: 1e-3, 35: 1e-3 * (1 + math.cos(math.pi / 4)) / 2,
                60: 5e-4, 110: 0.0}),
    ("linear", {0: 0.0, 5: 5e-4, 10: 1e-3, 35: 7.5e-4, 60: 5e-4, 110: 0.0}),
])
def test_schedule_warmup_then_decay(decay, expected):
  schedule = make_schedule(1e-3, warmup_steps=10, total_steps=110, decay=decay)
  for step, lr in expected.items():
    np.testing.assert_allclose(schedule(step), lr, rtol=1e-6, atol=1e-10, err_msg=f"step {step}")


def test_optimizer_reports_the_learning_rate_it_used():
  optimizer = make_optimizer(1e-3, warmup_steps=4, total_steps=8, decay="linear",
                             grad_clip_norm=1.0)
  params = {"w": jnp.ones(3)}
  opt_state = optimizer.init(params)
  schedule = make_schedule(1e-3, warmup_steps=4, total_steps=8, decay="linear")
  for step in range(6):
    _, opt_state = optimizer.update({"w": jnp.ones(3)}, opt_state, params)
    np.testing.assert_allclose(learning_rate_of(opt_state), schedule(step), rtol=1e-6)
  assert learning_rate_of(optax.sgd(0.1).init(params)) is None


@pytest.mark.parametrize("scale, clipped", [(10.0, True), (0.1, False)])
def test_gradient_clipping_by_global_norm(scale, clipped):
  clip, b1 = 0.5, 0.9
  optimizer = make_optimizer(1e-3, grad_clip_norm=clip, b1=b1)
  params = {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}
  grads = {"a": scale * jnp.array([1.0, -2.0, 2.0]), "b": scale * jnp.ones((2, 2))}
  _, opt_state = optimizer.update(grads, optimizer.init(params), params)
  norm = float(optax.tree.norm(grads))  # 5·scale
  factor = clip / norm if clipped else 1.0
  # Adam's first moment after one step is (1 − b1)·g, g the clipped gradient.
  mu = optax.tree_utils.tree_get(opt_state, "mu")
  _allclose(mu, jax.tree.map(lambda g: (1 - b1) * factor * g, grads), rtol=1e-6)


def test_adamw_decoupled_weight_decay():
  lr, weight_decay = 0.1, 0.01
  optimizer = make_optimizer(lr, optimizer="adamw", weight_decay=weight_decay)
  params = {"w": jnp.array([1.0, -2.0])}
  updates, _ = optimizer.update({"w": jnp.zeros(2)}, optimizer.init(params), params)
  # Zero gradient: the Adam direction is 0 and only −lr·λ·θ remains.
  np.testing.assert_allclose(updates["w"], -lr * weight_decay * params["w"], rtol=1e-6)


def test_optimizer_and_schedule_name_errors():
  with pytest.raises(ValueError, match=r"valid decays: \['constant', 'cosine', 'linear'\]"):
    make_schedule(1e-3, decay="exponential")
  with pytest.raises(ValueError, match=r"valid optimizers: \['adam', 'adamw', 'adamax'\]"):
    make_optimizer(1e-3, optimizer="sgd")
  with pytest.raises(ValueError, match="adamw"):
    make_optimizer(1e-3, optimizer="adam", weight_decay=0.1)
  with pytest.raises(ValueError, match="total_steps"):
    make_schedule(1e-3, warmup_steps=10, decay="cosine")


# -- EMA -----------------------------------------------------------------------


def test_ema_half_life():
  # EDM (App. F.3): half-life 0.5 Mimg at batch 512.
  beta = ema_decay_from_half_life(500_000, 512)
  np.testing.assert_allclose(beta, math.exp(-math.log(2) * 512 / 500_000), rtol=1e-15)
  np.testing.assert_allclose(beta ** (500_000 / 512), 0.5, rtol=1e-12)
  with pytest.raises(ValueError, match="positive"):
    ema_decay_from_half_life(0, 512)


def test_ema_rampup():
  # EDM training_loop.py: half-life = min(h, r·k·B), β = 0.5^(B/half-life).
  decay = ema_decay_schedule(half_life_images=1000, batch_size=10, rampup_ratio=0.5)
  assert float(decay(0)) == 0.0  # the first update copies the parameters
  np.testing.assert_allclose(decay(4), 0.5 ** (10 / (0.5 * 4 * 10)), rtol=1e-6)
  np.testing.assert_allclose(decay(1000), ema_decay_from_half_life(1000, 10), rtol=1e-6)
  np.testing.assert_allclose(ema_decay_schedule(1000, 10)(0), 0.5 ** (10 / 1000), rtol=1e-6)


def test_update_ema():
  ema = update_ema({"w": jnp.array([0.0, 4.0])}, {"w": jnp.array([2.0, 0.0])}, 0.75)
  np.testing.assert_allclose(ema["w"], [0.5, 3.0])


@pytest.fixture(scope="module")
def frozen_run():
  """A single-device step whose learning rate is 0 (params constant), β = 0.5."""
  model = TinyMLP(num_classes=2)
  optimizer = make_optimizer(0.0)
  family = toy_family(model, num_classes=2)
  state = toy_state(family, optimizer, seed=1)
  parallel = DataParallel("single", donate=False)
  step = parallel.compile(make_train_step(family.objective(), optimizer, ema_decay=0.5))
  return state, parallel, step


def test_ema_approaches_constant_params_as_one_minus_beta_to_the_k(frozen_run):
  state, parallel, step = frozen_run
  state = state.replace(ema_params=jax.tree.map(jnp.zeros_like, state.params))
  batch = parallel.shard_batch(toy_batch(0, BATCH))
  for k in range(1, 5):
    state, metrics = step(state, batch)
    assert int(state.step) == k and float(metrics["ema_decay"]) == 0.5
    _allclose(state.ema_params, jax.tree.map(lambda p: (1 - 0.5**k) * p, state.params),
              rtol=1e-6, atol=1e-9)


def test_step_metrics_and_nonfinite_flag(frozen_run):
  state, parallel, step = frozen_run
  batch = toy_batch(0, BATCH)
  _, metrics = step(state, parallel.shard_batch(batch))
  assert set(metrics) == {"loss", "grad_norm", "ema_decay", "learning_rate", "nonfinite"}
  assert np.isfinite(float(metrics["loss"])) and not bool(metrics["nonfinite"])
  assert float(metrics["learning_rate"]) == 0.0
  batch["x"][3, 1] = np.nan
  _, metrics = step(state, parallel.shard_batch(batch))
  assert bool(metrics["nonfinite"])


def test_noise_is_a_function_of_seed_step_and_labels(frozen_run):
  state, parallel, step = frozen_run
  batch = toy_batch(0, BATCH)
  loss = lambda s, b: float(step(s, parallel.shard_batch(b))[1]["loss"])
  reference = loss(state, batch)
  assert loss(state, batch) == reference  # same (seed, step): bit-identical
  assert loss(state.replace(step=state.step + 1), batch) != reference  # new step, new noise
  other_seed = state.replace(rng=jax.random.key_data(jax.random.key(7)))
  assert loss(other_seed, batch) != reference
  flipped = dict(batch, label=1 - batch["label"])  # class_conditional: labels reach the model
  assert loss(state, flipped) != reference
