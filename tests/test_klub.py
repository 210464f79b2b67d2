"""AYS's KL upper bound (genode.sampling.klub) and optimize_sigmas(objective="klub")."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.optimize

from genode.gaussians import Gaussian
from genode.sampling import karras_sigmas
from genode.sampling import klub as klub_lib
from genode.sampling import schedules

S_MIN, S_MAX = 0.002, 80.0


def test_gaussian_closed_form_is_the_integral(x64):
  gaussian = Gaussian.random(jax.random.key(0), 3)
  grid = karras_sigmas(5, S_MIN, S_MAX)
  direct = 0.0
  for lam in np.asarray(gaussian.eigenvalues):  # ∫ t⁻³ E‖D(x_t; t) − D(x_T; T)‖² dt per λ
    for big, small in zip(grid[:-1], grid[1:]):
      integrand = lambda t, lam=lam, big=big: (lam**2 * (big**2 - t**2)
                                               / (t**3 * (lam + t**2) * (lam + big**2)))
      direct += scipy.integrate.quad(integrand, small, big, epsabs=0, epsrel=1e-13,
                                     limit=200)[0]
  np.testing.assert_allclose(float(gaussian.klub(grid)), direct, rtol=1e-10)


def test_estimate_matches_the_closed_form(x64):
  """The estimator (Brownian-bridge draws, Gauss–Legendre in log t) is unbiased up to the
  quadrature: on N(μ, Σ) data with the exact denoiser it matches the closed form within
  its Monte Carlo error (measured here over 16 disjoint chunks)."""
  gaussian = Gaussian.random(jax.random.key(0), 3)
  grid = jnp.asarray(karras_sigmas(5, S_MIN, S_MAX))
  x0 = gaussian.sample(jax.random.key(1), 16 * 1024)
  eps, bridge = klub_lib.klub_noise(jax.random.key(2), x0.shape)
  chunks = [float(klub_lib.klub(gaussian.denoiser, grid, *(a[i::16] for a in (x0, eps, bridge)),
                                num_nodes=8)) for i in range(16)]
  exact = float(gaussian.klub(grid))
  standard_error = np.std(chunks, ddof=1) / np.sqrt(16)
  assert abs(np.mean(chunks) - exact) < 4 * standard_error
  assert standard_error < 0.01 * exact  # the check above is a 4 % test or tighter


def test_exact_denoiser_of_a_point_mass_has_zero_bound():
  """Data at one point μ: D(x; σ) = μ at every σ, the discretised SDE is exact."""
  mu = jnp.asarray([0.3, -1.2])
  x0 = jnp.broadcast_to(mu, (6, 2))
  eps, bridge = klub_lib.klub_noise(jax.random.key(0), x0.shape)
  value = klub_lib.klub(lambda x, s: jnp.broadcast_to(mu, x.shape), karras_sigmas(4, S_MIN, S_MAX),
                        x0, eps, bridge)
  assert float(value) == 0.0
  # …while the identity "denoiser" D(x; σ) = x pays for every step (a positive bound).
  assert float(klub_lib.klub(lambda x, s: x, karras_sigmas(4, S_MIN, S_MAX), x0, eps,
                             bridge)) > 0


def _fit_1d(num_iterations=100, seed=0, num_train=256, num_holdout=1024, **kwargs):
  gaussian = Gaussian(jnp.zeros(1), jnp.asarray([0.25]), jnp.eye(1))
  data = gaussian.sample(jax.random.key(5), num_train + num_holdout)
  return gaussian, schedules.optimize_sigmas(
      gaussian.denoiser, seed, 5, "dpmpp_2m", sigma_min=S_MIN, sigma_max=S_MAX,
      objective="klub", data=data, holdout=num_holdout, num_iterations=num_iterations,
      learning_rate=0.3, **kwargs)


def test_optimizer_reaches_the_closed_form_minimum(x64):
  gaussian, result = _fit_1d()

  def closed(logits):
    return float(gaussian.klub(schedules.grid_from_logits(jnp.asarray(logits), S_MIN, S_MAX)))

  start = schedules.logits_from_grid(karras_sigmas(5, S_MIN, S_MAX))
  best = scipy.optimize.minimize(closed, start, method="Nelder-Mead",
                                 options=dict(xatol=1e-9, fatol=1e-12, maxiter=20_000))
  found = float(gaussian.klub(result.sigmas[:-1]))
  assert found < 1.005 * best.fun < 0.01 * closed(start)
  # The held-out rows estimate the same bound: before and after agree with the closed form.
  np.testing.assert_allclose([result.holdout_before, result.holdout_after],
                             [closed(start), found], rtol=0.1)
  s = result.sigmas
  assert s.shape == (6,) and s[-1] == 0 and np.all(np.diff(s) < 0)
  np.testing.assert_allclose(s[[0, -2]], [S_MAX, S_MIN], rtol=0)
  assert result.objective == "klub" and result.reference_seconds == 0.0


def test_klub_fit_is_deterministic_by_seed():
  first, second, other = (_fit_1d(2, seed, 16, 8)[1] for seed in (3, 3, 4))
  np.testing.assert_array_equal(first.sigmas, second.sigmas)
  np.testing.assert_array_equal(first.losses, second.losses)
  assert first.holdout_after == second.holdout_after
  assert not np.array_equal(first.losses, other.losses)  # other forward-noising draws


def test_klub_non_finite_gradient_names_the_iteration():
  gaussian = Gaussian(jnp.zeros(1), jnp.asarray([0.25]), jnp.eye(1))

  def denoiser(x, sigma):  # finite values, NaN gradient in σ below 1 (the jnp.where trap)
    bad = jnp.sqrt(sigma - 1.0)[:, None]
    return jnp.where(sigma[:, None] > 1.0, gaussian.denoiser(x, sigma) + 0 * bad,
                     gaussian.denoiser(x, sigma))

  with pytest.raises(ValueError, match="non-finite gradient.*iteration 0"):
    schedules.optimize_sigmas(denoiser, 0, 4, "euler", sigma_min=S_MIN, sigma_max=S_MAX,
                              objective="klub", data=gaussian.sample(jax.random.key(0), 8),
                              holdout=4, num_iterations=3)


def test_klub_bad_input():
  kwargs = dict(sigma_min=S_MIN, sigma_max=S_MAX, objective="klub", holdout=2)
  data = jnp.zeros((6, 1))
  with pytest.raises(ValueError, match="needs data="):
    schedules.optimize_sigmas(lambda x, s: x, 0, 4, "euler", **kwargs)
  with pytest.raises(ValueError, match="PRNG key or int seed"):
    schedules.optimize_sigmas(lambda x, s: x, data, 4, "euler", data=data, **kwargs)
  with pytest.raises(ValueError, match="no feature_fn or reference"):
    schedules.optimize_sigmas(lambda x, s: x, 0, 4, "euler", data=data,
                              feature_fn=lambda x: x, **kwargs)
  with pytest.raises(ValueError, match="for objective 'klub' only"):
    schedules.optimize_sigmas(lambda x, s: x, 0, 4, "euler", data=data, sigma_min=S_MIN,
                              sigma_max=S_MAX, shape=(2, 1))
  with pytest.raises(ValueError, match="num_nodes"):
    schedules.optimize_sigmas(lambda x, s: x, 0, 4, "euler", data=data, klub_nodes=0,
                              **kwargs)
