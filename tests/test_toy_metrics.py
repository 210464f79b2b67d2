"""Sliced Wasserstein and MMD against exact values."""

import numpy as np
import pytest

from genode.evaluation import toy_metrics


def test_directions_are_unit_and_deterministic():
  theta = toy_metrics.random_directions(3, 100, 5)
  np.testing.assert_allclose(np.linalg.norm(theta, axis=1), 1.0, rtol=1e-12)
  np.testing.assert_array_equal(theta, toy_metrics.random_directions(3, 100, 5))


def test_sliced_wasserstein_identical_samples_is_zero():
  x = np.random.default_rng(0).normal(size=(500, 2))
  assert toy_metrics.sliced_wasserstein(x, x[::-1]) == 0.0


def test_sliced_wasserstein_of_a_shift_is_exact():
  # y = x + m: each sorted projection moves by θ·m, so SW₂² = mean_θ (θ·m)² exactly,
  # and → ‖m‖²/d as the directions fill the sphere.
  rng = np.random.default_rng(1)
  x, m = rng.normal(size=(400, 2)), np.array([1.5, -2.0])
  theta = toy_metrics.random_directions(7, 4096, 2)
  got = toy_metrics.sliced_wasserstein(x, x + m, num_projections=4096, seed=7)
  assert got == pytest.approx(np.sqrt(np.mean((theta @ m) ** 2)), rel=1e-10)
  assert got == pytest.approx(np.linalg.norm(m) / np.sqrt(2), rel=0.03)


def test_sliced_wasserstein_of_shifted_gaussians_from_independent_samples():
  # N(0, I) vs N(m, I): SW₂ = ‖m‖/√d, up to the sampling error of 4000 points.
  rng = np.random.default_rng(2)
  m = np.array([2.0, 0.0])
  x, y = rng.normal(size=(4000, 2)), rng.normal(size=(3000, 2)) + m  # unequal sizes
  assert toy_metrics.sliced_wasserstein(x, y) == pytest.approx(np.sqrt(2.0), rel=0.05)


def test_mmd_identical_samples_is_zero_up_to_the_unbiased_correction():
  # With y = x the U-statistic is exactly 2(ā − 1)/n, ā the mean off-diagonal kernel value.
  x = np.random.default_rng(3).normal(size=(300, 2))
  got = toy_metrics.mmd_squared(x, x, bandwidth=0.5)
  sq = np.sum((x[:, None] - x[None]) ** 2, -1)
  k = np.exp(-sq / (2 * 0.25))
  a = (k.sum() - 300) / (300 * 299)
  assert got == pytest.approx(2 * (a - 1) / 300, rel=1e-9)
  assert abs(got) < 1e-2


def test_mmd_of_shifted_gaussians_matches_the_closed_form():
  rng = np.random.default_rng(4)
  m, s, h = np.array([1.0, 0.5]), 0.7, 0.8
  expected = toy_metrics.gaussian_mmd_squared(m, s, h)
  estimates = [toy_metrics.mmd_squared(s * rng.normal(size=(1000, 2)),
                                       m + s * rng.normal(size=(1000, 2)), bandwidth=h)
               for _ in range(4)]
  assert np.mean(estimates) == pytest.approx(expected, rel=0.05)
  assert toy_metrics.gaussian_mmd_squared(np.zeros(2), s, h) == 0.0


def test_bad_input():
  with pytest.raises(ValueError, match=r"\(N, d\) and \(M, d\)"):
    toy_metrics.sliced_wasserstein(np.zeros((5, 2)), np.zeros((5, 3)))
  with pytest.raises(ValueError, match="bandwidth must be > 0"):
    toy_metrics.mmd_squared(np.zeros((5, 2)), np.zeros((5, 2)), bandwidth=0.0)
