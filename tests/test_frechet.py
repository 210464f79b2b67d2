"""Fréchet distance against closed forms of the 2-Wasserstein distance between Gaussians."""

import numpy as np
import pytest
import scipy.linalg

from genode.evaluation import frechet


def _random_spd(rng, d, rank=None):
  a = rng.normal(size=(d, rank or d))
  return a @ a.T / d + (0 if rank else 0.1 * np.eye(d))


def test_identical_gaussians_have_zero_distance():
  rng = np.random.default_rng(0)
  mean, cov = rng.normal(size=16), _random_spd(rng, 16)
  assert frechet.frechet_distance(mean, cov, mean, cov) == pytest.approx(0.0, abs=1e-9)


def test_diagonal_case():
  # Diagonal Σ's: d² = ‖μ₁ − μ₂‖² + Σ_i (√a_i − √b_i)².
  rng = np.random.default_rng(1)
  a, b = rng.uniform(0.1, 3, 8), rng.uniform(0.1, 3, 8)
  m1, m2 = rng.normal(size=8), rng.normal(size=8)
  expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  got = frechet.frechet_distance(m1, np.diag(a), m2, np.diag(b))
  assert got == pytest.approx(expected, rel=1e-10)


def test_commuting_case():
  # Σ₁ = U diag(λ) Uᵀ, Σ₂ = U diag(κ) Uᵀ commute: d² = ‖Δμ‖² + Σ(√λ − √κ)².
  rng = np.random.default_rng(2)
  u, _ = np.linalg.qr(rng.normal(size=(10, 10)))
  lam, kap = rng.uniform(0.01, 4, 10), rng.uniform(0.01, 4, 10)
  m1, m2 = rng.normal(size=10), rng.normal(size=10)
  got = frechet.frechet_distance(m1, (u * lam) @ u.T, m2, (u * kap) @ u.T)
  expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(lam) - np.sqrt(kap)) ** 2)
  assert got == pytest.approx(expected, rel=1e-9)


def test_scaled_covariance():
  # Σ₂ = c²Σ₁: d² = tr(Σ₁)(1 − c)².
  rng = np.random.default_rng(3)
  cov = _random_spd(rng, 12)
  mean = rng.normal(size=12)
  got = frechet.frechet_distance(mean, cov, mean, 9.0 * cov)
  assert got == pytest.approx(np.trace(cov) * 4.0, rel=1e-9)


def test_general_2x2_closed_form():
  # For 2×2 PSD M, tr √M = √(tr M + 2√det M); with M = Σ₁^½Σ₂Σ₁^½,
  # tr M = tr(Σ₁Σ₂) and det M = det Σ₁ det Σ₂: no matrix square root needed.
  rng = np.random.default_rng(4)
  for _ in range(5):
    c1, c2 = _random_spd(rng, 2), _random_spd(rng, 2)
    m1, m2 = rng.normal(size=2), rng.normal(size=2)
    trace_sqrt = np.sqrt(np.trace(c1 @ c2) + 2 * np.sqrt(np.linalg.det(c1) * np.linalg.det(c2)))
    expected = np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * trace_sqrt
    assert frechet.frechet_distance(m1, c1, m2, c2) == pytest.approx(expected, rel=1e-10)


def test_general_case_matches_the_textbook_formula():
  # ‖μ₁−μ₂‖² + tr(Σ₁ + Σ₂ − 2(Σ₁^½ Σ₂ Σ₁^½)^½), with scipy's sqrtm, and the
  # TF/pytorch-fid form tr √(Σ₁Σ₂) (equal in exact arithmetic).
  rng = np.random.default_rng(5)
  c1, c2 = _random_spd(rng, 32), _random_spd(rng, 32)
  m1, m2 = rng.normal(size=32), rng.normal(size=32)
  r1 = scipy.linalg.sqrtm(c1).real
  textbook = (np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(r1 @ c2 @ r1).real))
  pytorch_fid = (np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2)
                 - 2 * np.trace(scipy.linalg.sqrtm(c1 @ c2).real))
  got = frechet.frechet_distance(m1, c1, m2, c2)
  assert got == pytest.approx(textbook, rel=1e-8)
  assert got == pytest.approx(pytorch_fid, rel=1e-8)
  assert frechet.frechet_distance(m2, c2, m1, c1) == pytest.approx(got, rel=1e-9)


def test_singular_covariances_are_stable():
  # Fewer samples than dimensions gives rank-deficient covariances; the eigen route
  # stays finite and non-negative, and still exact on the commuting rank-deficient case.
  rng = np.random.default_rng(6)
  u, _ = np.linalg.qr(rng.normal(size=(20, 20)))
  lam = np.concatenate([rng.uniform(0.5, 2, 5), np.zeros(15)])
  kap = np.concatenate([np.zeros(15), rng.uniform(0.5, 2, 5)])
  got = frechet.frechet_distance(np.zeros(20), (u * lam) @ u.T, np.zeros(20), (u * kap) @ u.T)
  # Round-off eigenvalues ~1e-16 contribute √ε-sized terms: 1e-6 absolute.
  assert got == pytest.approx(np.sum(lam) + np.sum(kap), abs=1e-6)
  f1, f2 = rng.normal(size=(8, 64)), rng.normal(size=(8, 64))
  d = frechet.frechet_distance_from_features(f1, f2)
  assert np.isfinite(d) and d >= 0


def test_feature_stats_and_distance_from_features():
  rng = np.random.default_rng(7)
  f1 = rng.normal(size=(50, 4))
  f2 = 2.0 * f1 + 1.0  # Gaussian fits: μ₂ = 2μ₁ + 1, Σ₂ = 4Σ₁
  s1, s2 = frechet.feature_stats(f1), frechet.feature_stats(f2)
  np.testing.assert_allclose(s1.cov, np.cov(f1.T), rtol=1e-12)
  assert s1.count == 50
  expected = np.sum((s1.mean + 1.0) ** 2) + np.trace(s1.cov)  # (1 − 2)² tr Σ₁
  assert frechet.frechet_distance_from_features(f1, f2) == pytest.approx(expected, rel=1e-9)
  assert frechet.frechet_distance_from_stats(s1, s2) == pytest.approx(expected, rel=1e-9)


def test_bad_input_names_what_was_expected():
  with pytest.raises(ValueError, match=r"\(N, D\) with N >= 2"):
    frechet.feature_stats(np.zeros((1, 3)))
  with pytest.raises(ValueError, match="NaN or inf"):
    frechet.feature_stats(np.full((3, 2), np.nan))
  with pytest.raises(ValueError, match=r"cov2 must have shape \(3, 3\)"):
    frechet.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
