"""Fréchet distance between Gaussians fitted to features (Heusel et al. 2017, "FID").

For N(μ₁, Σ₁) and N(μ₂, Σ₂) the squared 2-Wasserstein (Fréchet) distance is

    d² = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½)        (Dowson & Landau 1982).

Computed in float64 numpy with symmetric eigendecompositions only: Σ₁^½ from `eigh`,
then the eigenvalues of the symmetric PSD matrix Σ₁^½ Σ₂ Σ₁^½, whose square roots sum
to tr((Σ₁^½ Σ₂ Σ₁^½)^½). Round-off negatives are clipped to 0. This avoids the complex
parts and the ε-regularisation that `scipy.linalg.sqrtm(Σ₁ Σ₂)` needs for the
(non-symmetric) product used by the TF / pytorch-fid code, and equals it in exact
arithmetic since Σ₁Σ₂ is similar to Σ₁^½ Σ₂ Σ₁^½.

Shapes: features are (N, D); statistics are mean (D,), covariance (D, D).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class FeatureStats(NamedTuple):
  """A Gaussian fitted to N feature vectors."""

  mean: np.ndarray  # (D,)
  cov: np.ndarray  # (D, D), unbiased (ddof = 1), as in TF FID / pytorch-fid
  count: int


def feature_stats(features) -> FeatureStats:
  """Mean and unbiased covariance of features (N, D), N ≥ 2, in float64."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f"features must be (N, D) with N >= 2, got shape {features.shape}")
  if not np.all(np.isfinite(features)):
    raise ValueError("features contain NaN or inf")
  return FeatureStats(features.mean(0), np.cov(features, rowvar=False, ddof=1).reshape(
      features.shape[1], features.shape[1]), features.shape[0])


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
  """Σ^½ of a symmetric PSD matrix via eigh (negative round-off clipped)."""
  w, v = np.linalg.eigh(0.5 * (cov + cov.T))
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mean1, cov1, mean2, cov2) -> float:
  """d² = ‖μ₁ − μ₂‖² + tr(Σ₁) + tr(Σ₂) − 2 tr((Σ₁^½ Σ₂ Σ₁^½)^½); the FID convention (squared)."""
  mean1, mean2 = np.asarray(mean1, np.float64), np.asarray(mean2, np.float64)
  cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(
      np.asarray(cov2, np.float64))
  d = mean1.shape[-1]
  for name, a, shape in (("mean1", mean1, (d,)), ("mean2", mean2, (d,)),
                         ("cov1", cov1, (d, d)), ("cov2", cov2, (d, d))):
    if a.shape != shape:
      raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
  root1 = _psd_sqrt(cov1)
  middle = root1 @ cov2 @ root1
  eig = np.linalg.eigvalsh(0.5 * (middle + middle.T))
  trace_sqrt = np.sum(np.sqrt(np.clip(eig, 0.0, None)))
  diff = mean1 - mean2
  return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt)


def frechet_distance_from_stats(a: FeatureStats, b: FeatureStats) -> float:
  """Fréchet distance between two fitted feature Gaussians."""
  return frechet_distance(a.mean, a.cov, b.mean, b.cov)


def frechet_distance_from_features(features1, features2) -> float:
  """Fréchet distance between Gaussians fitted to two feature sets (N₁, D), (N₂, D)."""
  return frechet_distance_from_stats(feature_stats(features1), feature_stats(features2))
