"""The one denoising loss (EDM eq. 8) equals each paper's own loss, in float64."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genode.denoiser import precondition
from genode.formulations import FORMULATIONS, get_formulation
from genode.losses import denoising_loss, weighted_denoising_error

BATCH, DIM = 6, 5


def random_network(key):
  """A fixed nonlinear F(x_in (B, d), c_noise (B,)) -> (B, d) with random weights."""
  k1, k2, k3 = jax.random.split(key, 3)
  w1 = jax.random.normal(k1, (DIM, 16)) / math.sqrt(DIM)
  b = jax.random.normal(k2, (16,)) / 10
  w2 = jax.random.normal(k3, (16, DIM))
  return lambda x, c: jnp.tanh(x @ w1 + c[:, None] * b[None]) @ w2


def data_and_noise(key):
  y_key, n_key = jax.random.split(key)
  return jax.random.normal(y_key, (BATCH, DIM)), jax.random.normal(n_key, (BATCH, DIM))


def test_flow_matching_velocity_loss(x64):
  """RF row: λ(σ)‖D(y + σn; σ) − y‖² = ‖v_θ(x_t, t) − (n − y)‖², x_t = (1 − t)y + t·n."""
  f = get_formulation("rf")
  network = random_network(jax.random.key(0))
  y, n = data_and_noise(jax.random.key(1))
  t = jnp.linspace(0.05, 0.95, BATCH)
  sigma = t / (1 - t)
  x_t = (1 - t)[:, None] * y + t[:, None] * n
  velocity_loss = jnp.mean((network(x_t, t) - (n - y)) ** 2, -1)
  loss = weighted_denoising_error(f, precondition(f, network), y, sigma, n)
  np.testing.assert_allclose(loss, velocity_loss, rtol=1e-10)


@pytest.mark.parametrize("name", ["vp", "ddpm"])
def test_epsilon_loss(name, x64):
  """VP/DDPM rows: λ(σ)‖D − y‖² = ‖ε_θ(√ᾱ·y + √(1 − ᾱ)·n, c_noise) − n‖²."""
  f = get_formulation(name)
  network = random_network(jax.random.key(2))
  y, n = data_and_noise(jax.random.key(3))
  if name == "vp":  # ᾱ(t) = exp(−½β_d t² − β_min t), network time (M − 1)·t
    t = jnp.linspace(0.01, 1.0, BATCH)
    alpha_bar = jnp.exp(-0.5 * 19.9 * t**2 - 0.1 * t)
    c_noise = 999 * t
  else:  # ᾱ_j = ∏_{i≤j}(1 − β_i) at integer steps j, network time j
    steps = np.array([0, 1, 50, 400, 800, 999])
    alpha_bar = jnp.asarray(np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[steps])
    c_noise = jnp.asarray(steps, float)
  sigma = jnp.sqrt((1 - alpha_bar) / alpha_bar)
  x_t = jnp.sqrt(alpha_bar)[:, None] * y + jnp.sqrt(1 - alpha_bar)[:, None] * n
  epsilon_loss = jnp.mean((network(x_t, c_noise) - n) ** 2, -1)
  loss = weighted_denoising_error(f, precondition(f, network), y, sigma, n)
  np.testing.assert_allclose(loss, epsilon_loss, rtol=1e-8)


def test_edm_loss_is_unit_weight_effective_target(x64):
  """EDM eq. 8: λ‖D − y‖² = ‖F − (y − c_skip·x)/c_out‖² (λ·c_out² = 1)."""
  f = get_formulation("edm")
  network = random_network(jax.random.key(4))
  y, n = data_and_noise(jax.random.key(5))
  sigma = jnp.geomspace(0.01, 50.0, BATCH)
  x = y + sigma[:, None] * n
  c_skip, c_out, c_in, c_noise = (c[:, None] for c in f.preconditioning(sigma))
  target = (y - c_skip * x) / c_out
  expected = jnp.mean((network(c_in * x, c_noise[:, 0]) - target) ** 2, -1)
  loss = weighted_denoising_error(f, precondition(f, network), y, sigma, n)
  np.testing.assert_allclose(loss, expected, rtol=1e-9)


def test_ideal_denoiser_has_zero_loss_without_noise(x64):
  f = get_formulation("ve")
  y, n = data_and_noise(jax.random.key(6))
  oracle = lambda x, sigma: y  # knows the clean data
  loss = weighted_denoising_error(f, oracle, y, jnp.full((BATCH,), 0.3), n)
  np.testing.assert_array_equal(loss, 0.0)


@pytest.mark.parametrize("name", sorted(FORMULATIONS))
def test_denoising_loss_draws_sigma_then_noise(name, x64):
  """denoising_loss(key) = the weighted error at σ ~ p_train(k₁), n ~ N(0, I)(k₂).

  (k₁, k₂) = split(key): the loss is a pure function of the key.
  """
  f = get_formulation(name)
  d = precondition(f, random_network(jax.random.key(7)))
  y = jax.random.normal(jax.random.key(8), (BATCH, 2, DIM))  # non-flat samples
  key = jax.random.key(9)
  loss = denoising_loss(f, _flat(d), y, key)
  sigma_key, noise_key = jax.random.split(key)
  sigma = f.sample_training_sigma(sigma_key, (BATCH,))
  noise = jax.random.normal(noise_key, y.shape)
  assert loss.shape == (BATCH,) and np.all(np.isfinite(loss))
  np.testing.assert_allclose(loss, weighted_denoising_error(f, _flat(d), y, sigma, noise),
                             rtol=1e-12)


def _flat(denoiser):
  """A (B, d) denoiser applied to (B, 2, d) samples row by row."""
  return lambda x, s: jax.vmap(denoiser, in_axes=(1, None), out_axes=1)(x, s)
