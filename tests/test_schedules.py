"""`optimize_sigmas`: the closed-form optimum on a 1-D Gaussian, gradients, valid grids."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from genode.gaussians import Gaussian, GaussianMixture
from genode.sampling import append_zero, karras_sigmas, sample
from genode.sampling import schedules

S_MIN, S_MAX = 0.002, 80.0


def _gaussian_1d(std):
  return Gaussian(jnp.zeros(1), jnp.asarray([std**2]), jnp.eye(1))


def _arctan_grid(std, n):
  """The optimal n-σ Euler grid for data N(0, std²): uniform in arctan(σ/std).

  Euler's step is x_{i+1} = x_i·(s² + σ_iσ_{i+1})/(s² + σ_i²) (D(x; σ) = s²x/(s² + σ²)).
  With σ = s·tan θ this factor is cos θ_i·cos(θ_i − θ_{i+1})/cos θ_{i+1}, so the product
  telescopes: the Euler output is the exact flow factor cos θ_0/cos θ_{n−1} times
  Π cos Δθ_i (< 1), with Σ Δθ_i fixed. Its squared error (at σ_min or after the final
  denoise, a common factor) is minimal where Π cos Δθ_i is maximal: by the concavity of
  log cos, at equal Δθ_i (Sabour et al. 2024 derive the same grid for their bound).
  """
  theta = np.arctan(np.asarray([S_MAX, S_MIN]) / std)
  return std * np.tan(np.linspace(theta[0], theta[1], n))


def _euler_relative_error(positive, std):
  """|Euler factor / exact factor − 1| for N(0, std²), float64 NumPy."""
  s2 = std**2
  factor = np.prod((s2 + positive[:-1] * positive[1:]) / (s2 + positive[:-1] ** 2))
  exact = np.sqrt((s2 + positive[-1] ** 2) / (s2 + positive[0] ** 2))
  return factor / exact - 1


def test_arctan_grid_is_the_euler_optimum(x64):
  std, n = 0.5, 6
  optimum = _arctan_grid(std, n)
  assert abs(_euler_relative_error(optimum, std) + 1 - np.prod(np.cos(np.diff(
      np.arctan(optimum / std))))) < 1e-14  # the telescoped form

  def grid_of(logits):  # `grid_from_logits` in NumPy float64
    weights = np.exp(logits - logits.max())
    drops = np.log(S_MAX / S_MIN) * np.cumsum(weights / weights.sum())[:-1]
    return np.concatenate([[S_MAX], S_MAX * np.exp(-drops), [S_MIN]])

  def objective(logits):
    return 1e4 * _euler_relative_error(grid_of(logits), std) ** 2

  start = schedules.logits_from_grid(karras_sigmas(n, S_MIN, S_MAX))
  found = scipy.optimize.minimize(objective, start, method="Nelder-Mead",
                                  options=dict(xatol=1e-10, fatol=1e-16, maxiter=20_000))
  np.testing.assert_allclose(grid_of(start), schedules.grid_from_logits(start, S_MIN, S_MAX),
                             rtol=1e-13)
  np.testing.assert_allclose(grid_of(found.x), optimum, rtol=1e-5)
  assert objective(schedules.logits_from_grid(optimum)) <= found.fun * (1 + 1e-12)


def test_optimizer_finds_the_euler_optimum(x64):
  std, n = 0.5, 6
  gaussian = _gaussian_1d(std)
  result = schedules.optimize_sigmas(
      gaussian.denoiser, 0, n, "euler", sigma_min=S_MIN, sigma_max=S_MAX, shape=(8, 1),
      holdout=8, reference=lambda x: gaussian.flow(x, S_MAX, S_MIN), num_iterations=150,
      learning_rate=0.1)
  np.testing.assert_allclose(result.sigmas[:-1], _arctan_grid(std, n), rtol=1e-3)
  assert result.sigmas[-1] == 0 and result.nfe == n and result.num_steps == n
  np.testing.assert_allclose(result.initial_sigmas, append_zero(karras_sigmas(n, S_MIN, S_MAX)))
  assert result.train_after < 0.3 * result.train_before
  assert result.holdout_after < 0.3 * result.holdout_before
  assert result.losses.shape == (150,) and result.seconds > 0


def test_karras_parametrisation_is_exact(x64):
  grid = karras_sigmas(7, S_MIN, S_MAX)
  back = schedules.grid_from_logits(jnp.asarray(schedules.logits_from_grid(grid)), S_MIN, S_MAX)
  np.testing.assert_allclose(back, grid, rtol=1e-13)


@pytest.mark.parametrize("n", [2, 3, 9])
def test_every_grid_is_valid(n):
  for scale in (0.0, 1.0, 30.0):
    logits = scale * jax.random.normal(jax.random.key(n), (n - 1,))
    grid = np.asarray(schedules.grid_from_logits(logits, S_MIN, S_MAX))
    assert grid.shape == (n,) and grid[0] == np.float32(S_MAX) and grid[-1] == np.float32(S_MIN)
    if scale < 30:  # extreme logits may round adjacent σ's together in float32
      assert np.all(np.diff(grid) < 0)


def test_gradients_match_finite_differences(x64):
  ring = GaussianMixture.ring()
  x_t = S_MAX * jax.random.normal(jax.random.key(0), (4, 2))
  logits = jnp.asarray(schedules.logits_from_grid(karras_sigmas(4, S_MIN, S_MAX)))
  target = schedules.reference_solve(ring.denoiser, x_t, sigma_min=S_MIN, sigma_max=S_MAX,
                                     tol=1e-8)
  for solver in ("heun", "dpmpp_2m", "lms_data"):
    def loss(theta, solver=solver):
      return schedules.schedule_loss(theta, ring.denoiser, x_t, target, solver,
                                     sigma_min=S_MIN, sigma_max=S_MAX)
    grad = jax.jit(jax.grad(loss))(logits)
    loss_jit, h = jax.jit(loss), 1e-6
    fd = np.asarray([(loss_jit(logits.at[i].add(h)) - loss_jit(logits.at[i].add(-h))) / (2 * h)
                     for i in range(logits.shape[0])])
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9 * np.max(np.abs(fd)))


def test_solve_on_grid_is_sample(x64):
  ring = GaussianMixture.ring()
  x_t = S_MAX * jax.random.normal(jax.random.key(1), (3, 2))
  grid = karras_sigmas(5, S_MIN, S_MAX)
  for solver in ("dpmpp_3m", "heun", "lms_data"):
    ours = jax.jit(schedules.solve_on_grid, static_argnums=(0, 3))(
        ring.denoiser, x_t, jnp.asarray(grid), solver)
    theirs, _ = sample(ring.denoiser, x_t, append_zero(grid), solver)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_objectives_and_feature_map(x64):
  gaussian = Gaussian.random(jax.random.key(2), 3)
  x_t = S_MAX * jax.random.normal(jax.random.key(3), (5, 3))
  grid = karras_sigmas(4, S_MIN, S_MAX)
  at_min = schedules.solve_on_grid(gaussian.denoiser, x_t, jnp.asarray(grid), "euler",
                                   "mse_at_sigma_min")
  np.testing.assert_allclose(at_min, sample(gaussian.denoiser, x_t, grid, "euler")[0],
                             rtol=1e-12)
  logits = jnp.asarray(schedules.logits_from_grid(grid))
  target = schedules.reference_solve(gaussian.denoiser, x_t, sigma_min=S_MIN, sigma_max=S_MAX,
                                     reference=lambda x: gaussian.flow(x, S_MAX, S_MIN))
  kwargs = dict(sigma_min=S_MIN, sigma_max=S_MAX)
  plain = schedules.schedule_loss(logits, gaussian.denoiser, x_t, target, "euler", **kwargs)
  doubled = schedules.schedule_loss(logits, gaussian.denoiser, x_t, target, "euler",
                                    feature_fn=lambda x: 2 * x, **kwargs)
  np.testing.assert_allclose(doubled, 4 * plain, rtol=1e-12)


def test_traced_lms_data_coefficients_are_the_numpy_ones(x64):
  from genode.ode.solvers import lms_data_coefficients, lms_data_coefficients_traced

  for grid in ([80.0, 9.0, 1.5, 0.3, 0.04, 0.002], [80.0, 9.0, 1.5, 0.3, 0.04, 0.0]):
    grid = np.asarray(grid)
    decay, weights = lms_data_coefficients(grid, 3)
    ours = jax.jit(lambda g: lms_data_coefficients_traced(g, 3))(jnp.asarray(grid))
    np.testing.assert_allclose(ours[0], decay, rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(ours[1], weights, rtol=1e-12, atol=1e-14)
  # The gradient through a step to σ = 0 is finite (the safe `where`).
  grad = jax.grad(lambda g: jnp.sum(lms_data_coefficients_traced(g, 3)[1]))(jnp.asarray(grid))
  assert np.all(np.isfinite(grad))


def test_lms_data_samples_on_a_traced_grid(x64):
  gaussian = GaussianMixture.ring(4, 1.0, 0.3)
  x_t = S_MAX * jax.random.normal(jax.random.key(1), (4, 2))
  sigmas = append_zero(karras_sigmas(6, S_MIN, S_MAX))
  concrete, _ = sample(gaussian.denoiser, x_t, sigmas, "lms_data")
  traced = jax.jit(lambda s: sample(gaussian.denoiser, x_t, s, "lms_data")[0])(sigmas)
  np.testing.assert_allclose(traced, concrete, rtol=1e-11, atol=1e-12)
  with pytest.raises(ValueError, match="concrete grid"):
    jax.jit(lambda s: sample(gaussian.denoiser, x_t, s, "lms")[0])(sigmas)


def _run(denoiser=None, **kwargs):
  gaussian = _gaussian_1d(0.5)
  args = dict(sigma_min=S_MIN, sigma_max=S_MAX, shape=(8, 1), holdout=4,
              num_iterations=5, reference=lambda x: gaussian.flow(x, S_MAX, S_MIN))
  args.update(kwargs)
  return schedules.optimize_sigmas(denoiser or gaussian.denoiser, 0, 4, "euler", **args)


def test_deterministic_valid_and_heldout():
  first, second = _run(batch_size=4, seed=3), _run(batch_size=4, seed=3)
  np.testing.assert_array_equal(first.sigmas, second.sigmas)
  assert first.holdout_after == second.holdout_after
  untouched = _run(num_iterations=0)
  for result in (first, untouched):
    s = result.sigmas
    assert s.shape == (5,) and s[-1] == 0 and np.all(np.diff(s) < 0)
    np.testing.assert_allclose(s[[0, -2]], [S_MAX, S_MIN], rtol=0)
  np.testing.assert_allclose(untouched.sigmas, untouched.initial_sigmas, rtol=1e-6)
  assert untouched.holdout_before == untouched.holdout_after


def test_non_finite_gradient_names_the_iteration():
  gaussian = _gaussian_1d(0.5)

  def denoiser(x, sigma):  # finite values, NaN gradient in σ (the jnp.where trap)
    bad = jnp.sqrt(sigma - 1.0)
    return jnp.where(sigma > 1.0, gaussian.denoiser(x, sigma) + 0 * bad,
                     gaussian.denoiser(x, sigma))

  with pytest.raises(ValueError, match="non-finite gradient.*iteration 0"):
    _run(denoiser)


def test_bad_input():
  with pytest.raises(ValueError, match="'lms'.*coefficients.*valid solvers"):
    schedules.optimize_sigmas(lambda x, s: x, 0, 4, "lms", sigma_min=S_MIN,
                              sigma_max=S_MAX, shape=(2, 1))
  with pytest.raises(ValueError, match="valid objectives"):
    _run(objective="kl")
  with pytest.raises(ValueError, match="Unknown init"):
    _run(init="cosine")
  with pytest.raises(ValueError, match="explicit init grid"):
    _run(init=[80.0, 1.0, 0.002])
  with pytest.raises(ValueError, match="shape="):
    _run(shape=None)


def test_quick_benchmark_rows(tmp_path):
  from genode.benchmarks import schedules as bench

  records, markdown = bench.schedule_benchmark(bench.QUICK, out_dir=str(tmp_path))
  optimized = [r for r in records if r["grid"] == "optimized"]
  assert len(optimized) == 1 and optimized[0]["nfe"] == 5
  # The optimizer's held-out MSE (the Dopri5 tol-1e-10 reference) is the measured error².
  np.testing.assert_allclose(optimized[0]["holdout_mse_after"], optimized[0]["rms_error"] ** 2,
                             rtol=1e-4)
  (row,) = bench.best_per_budget(records)
  assert row["karras"]["solver"] == "lms_data" and row["ratio"] > 0
  assert "optimized / Karras" in markdown and (tmp_path / "schedules.json").exists()
  with pytest.raises(ValueError, match="valid problems"):
    bench.schedule_benchmark(bench.ScheduleBenchmark(problems=("moons",)))
