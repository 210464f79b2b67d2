"""Sample-quality metrics for low-dimensional (2-D toy) data against true samples.

* Sliced 2-Wasserstein distance (Bonneel et al. 2015):
      SW₂(P, Q)² = E_θ W₂(θᵀP, θᵀQ)²,  θ uniform on the unit sphere,
  with the 1-D W₂ from sorted projections (quantile functions).
* Maximum mean discrepancy (Gretton et al. 2012, eq. 3, the unbiased U-statistic)
  with the Gaussian kernel k(x, y) = exp(−‖x − y‖² / (2h²)) of stated bandwidth h.

Both are plain numpy in float64 (the sample sizes here are thousands). Shapes: x (N, d),
y (M, d).
"""

from __future__ import annotations

import numpy as np


def random_directions(seed: int, num: int, dim: int) -> np.ndarray:
  """`num` directions uniform on the unit sphere S^{dim−1}, (num, dim)."""
  theta = np.random.default_rng(seed).normal(size=(num, dim))
  return theta / np.linalg.norm(theta, axis=1, keepdims=True)


def _check_pair(x, y):
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or len(x) < 2 or len(y) < 2:
    raise ValueError(f"expected samples (N, d) and (M, d) with N, M >= 2, got {x.shape} and "
                     f"{y.shape}")
  return x, y


def _quantiles(values: np.ndarray, n: int) -> np.ndarray:
  """Empirical quantile function at the n mid-point levels (i + ½)/n, per column."""
  values = np.sort(values, axis=0)
  if len(values) == n:
    return values
  # Inverse CDF of the m sorted values: F⁻¹(u) = v_(⌈u·m⌉), 1-based.
  index = np.ceil((np.arange(n) + 0.5) / n * len(values)).astype(int) - 1
  return values[index]


def sliced_wasserstein(x, y, *, num_projections: int = 512, seed: int = 0) -> float:
  """SW₂(x, y) = √(mean_θ W₂(θᵀx, θᵀy)²) over `num_projections` random directions."""
  x, y = _check_pair(x, y)
  theta = random_directions(seed, num_projections, x.shape[1])
  n = max(len(x), len(y))
  px, py = _quantiles(x @ theta.T, n), _quantiles(y @ theta.T, n)  # (n, P)
  return float(np.sqrt(np.mean((px - py) ** 2)))


def _gaussian_kernel(a, b, bandwidth):
  sq = (np.sum(a**2, 1)[:, None] + np.sum(b**2, 1)[None, :] - 2 * a @ b.T)
  return np.exp(-np.maximum(sq, 0.0) / (2 * bandwidth**2))


def mmd_squared(x, y, *, bandwidth: float) -> float:
  """Unbiased MMD² with k(x, y) = exp(−‖x − y‖²/(2h²)), h = bandwidth (Gretton eq. 3).

  E[MMD²] equals the population MMD²; an estimate can be slightly negative.
  """
  x, y = _check_pair(x, y)
  if not bandwidth > 0:
    raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
  n, m = len(x), len(y)
  kxx, kyy = _gaussian_kernel(x, x, bandwidth), _gaussian_kernel(y, y, bandwidth)
  kxy = _gaussian_kernel(x, y, bandwidth)
  return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1))
               + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())


def gaussian_mmd_squared(mean_difference, std: float, bandwidth: float) -> float:
  """Population MMD² between N(μ₁, s²I) and N(μ₂, s²I) for the kernel above.

  With X − Y ~ N(δ, 2s²I): E k = (h²/(h² + 2s²))^{d/2} exp(−‖δ‖²/(2(h² + 2s²))), so
  MMD² = 2 (h²/(h² + 2s²))^{d/2} (1 − exp(−‖δ‖²/(2(h² + 2s²)))).
  """
  delta = np.asarray(mean_difference, np.float64)
  v = bandwidth**2 + 2 * std**2
  return float(2 * (bandwidth**2 / v) ** (delta.size / 2) * (1 - np.exp(-delta @ delta / (2 * v))))
