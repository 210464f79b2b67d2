"""Straightness S(Z) (Liu, Gong & Liu 2022, eq. 3) and closed-form couplings."""

import jax
import jax.numpy as jnp
import numpy as np

from genode import formulations, gaussians
from genode.reflow import ideal, objectives
from genode.reflow import straightness as straight_lib

SIGMA_MAX = formulations.RectifiedFlow().sigma_max  # 999: t = 0.999


def _gaussian():
  return gaussians.Gaussian.random(jax.random.key(0), 3, jnp.float64)


def test_linear_coupling_is_the_gaussian_teachers_flow_map(x64):
  gaussian = _gaussian()
  coupling = ideal.LinearCoupling.of_gaussian_flow(gaussian, SIGMA_MAX)
  z = jax.random.normal(jax.random.key(1), (16, 3), jnp.float64)
  np.testing.assert_allclose(coupling.pair(z), gaussian.flow(SIGMA_MAX * z, SIGMA_MAX, 0.0),
                             rtol=1e-10, atol=1e-10)
  # D recovers the pair from any point of its straight path x̄ = x + σz
  for sigma in (0.1, 3.0, 500.0):
    np.testing.assert_allclose(coupling.denoiser(coupling.pair(z) + sigma * z, sigma),
                               coupling.pair(z), rtol=1e-9, atol=1e-9)


def test_two_rf_of_a_gaussian_is_exactly_straight(x64):
  """The ideal velocity of the couplings of a linear map is constant along paths: S = 0."""
  coupling = ideal.LinearCoupling.of_gaussian_flow(_gaussian(), SIGMA_MAX)
  z = jax.random.normal(jax.random.key(2), (64, 3), jnp.float64)
  for solver, steps in (("euler", 16), ("heun", 5)):
    result = straight_lib.measure_straightness(coupling.denoiser, z, steps, SIGMA_MAX, solver)
    assert result.transport > 1.0
    assert abs(result.normalized) < 1e-20, result  # float64 rounding: ~1e-27 Euler, 1e-23 Heun
  # so one Euler step lands where many do
  one = objectives.euler_endpoint(coupling.denoiser, z, 1, SIGMA_MAX)
  many = objectives.euler_endpoint(coupling.denoiser, z, 16, SIGMA_MAX)
  np.testing.assert_allclose(one, many, rtol=1e-9, atol=1e-9)


def test_straight_from_an_edm_style_start(x64):
  """A teacher from another formulation (σ_max = 80, t_max = 80/81): still S = 0."""
  coupling = ideal.LinearCoupling.of_gaussian_flow(_gaussian(), 80.0)
  z = jax.random.normal(jax.random.key(5), (32, 3), jnp.float64)
  result = straight_lib.measure_straightness(coupling.denoiser, z, 8, 80.0)
  assert abs(result.normalized) < 1e-20, result


def test_one_rf_of_a_gaussian_is_curved(x64):
  """The independent coupling's ideal velocity (the posterior mean) bends paths: S > 0."""
  gaussian = _gaussian()
  z = jax.random.normal(jax.random.key(3), (256, 3), jnp.float64)
  coarse = straight_lib.measure_straightness(gaussian.denoiser, z, 50, SIGMA_MAX)
  fine = straight_lib.measure_straightness(gaussian.denoiser, z, 100, SIGMA_MAX)
  assert coarse.normalized > 0.05 and fine.normalized > 0.05
  np.testing.assert_allclose(fine.normalized, coarse.normalized, rtol=0.1)
  np.testing.assert_allclose(fine.normalized, fine.straightness / fine.transport)


def test_trajectory_is_in_rf_coordinates(x64):
  gaussian = _gaussian()
  z = jax.random.normal(jax.random.key(4), (8, 3), jnp.float64)
  t, x = straight_lib.rf_trajectory(gaussian.denoiser, z, 10, SIGMA_MAX)
  assert t.shape == (11,) and x.shape == (11, 8, 3)
  np.testing.assert_allclose(t, np.linspace(0.999, 0.0, 11), atol=1e-12)
  np.testing.assert_allclose(x[0], 0.999 * z, rtol=1e-12)  # x_t = (1 − t)·σ_max·z = t·z
  np.testing.assert_allclose(x[-1], objectives.euler_endpoint(gaussian.denoiser, z, 10, SIGMA_MAX),
                             rtol=1e-9, atol=1e-9)


def test_straightness_of_a_known_curve(x64):
  """Z_τ = Z₀ + τ·Δ + τ(1 − τ)·c: S = ∫ ‖c(1 − 2τ)‖² dτ = ‖c‖²/3."""
  tau = np.linspace(0.0, 1.0, 2001)
  c, delta, z0 = np.array([1.0, 2.0]), np.array([3.0, -1.0]), np.array([0.5, 0.5])
  states = z0 + tau[:, None] * delta + (tau * (1 - tau))[:, None] * c
  traj = straight_lib.Trajectory(jnp.asarray(0.999 * (1 - tau)), jnp.asarray(states[:, None, :]))
  result = straight_lib.trajectory_straightness(traj)
  np.testing.assert_allclose(result.straightness, np.sum(c**2) / 3, rtol=1e-5)
  np.testing.assert_allclose(result.transport, np.sum(delta**2), rtol=1e-12)


def test_trajectory_plot(tmp_path, x64):
  from genode.reflow import plots
  gaussian = gaussians.Gaussian.random(jax.random.key(0), 2, jnp.float64)
  coupling = ideal.LinearCoupling.of_gaussian_flow(gaussian, SIGMA_MAX)
  z = jax.random.normal(jax.random.key(6), (16, 2), jnp.float64)
  paths = {"1-RF": straight_lib.rf_trajectory(gaussian.denoiser, z, 8, SIGMA_MAX),
           "2-RF": straight_lib.rf_trajectory(coupling.denoiser, z, 8, SIGMA_MAX)}
  path = str(tmp_path / "figs" / "trajectories.png")
  plots.plot_trajectories(path, paths)
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
