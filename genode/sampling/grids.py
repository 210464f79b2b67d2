"""Noise-level grids for sampling, following k-diffusion's conventions.

A grid is a strictly decreasing 1-D array of σ's. `karras_sigmas`, `loglinear_sigmas`
and `uniform_t_sigmas` return `n` positive σ's from σ_max down to σ_min, *without* a
final 0 (k-diffusion's `get_sigmas_karras(..., concat_zero=False)` style);
`append_zero` adds it, and `get_sigmas` (the config layer's entry point) returns the
grid with the 0 appended: n + 1 entries, i.e. n steps, the last one to σ = 0.

Grids are NumPy float64 arrays, computed eagerly even inside a caller's `jax.jit`, so
`sample` always sees a concrete grid (it checks it and knows whether it ends at 0).
"""

from __future__ import annotations

import math

import jax
import numpy as np

from genode.formulations import Formulation


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> np.ndarray:
  """EDM eq. 5: σ_i = (σ_max^{1/ρ} + i/(n−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, i < n.

  Returns (n,) σ's from σ_max to σ_min, no final 0 (k-diffusion `get_sigmas_karras`).
  """
  _check_bounds(n, sigma_min, sigma_max)
  ramp = np.linspace(0.0, 1.0, n)
  min_inv_rho = sigma_min ** (1 / rho)
  max_inv_rho = sigma_max ** (1 / rho)
  return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho


def loglinear_sigmas(n: int, sigma_min: float, sigma_max: float) -> np.ndarray:
  """(n,) σ's uniform in log σ, i.e. in log-SNR = −2 log σ (k-diffusion `get_sigmas_exponential`).

  This is also the VE paper's geometric grid (Song et al. 2021).
  """
  _check_bounds(n, sigma_min, sigma_max)
  return np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), n))


def uniform_t_sigmas(formulation: Formulation, n: int, sigma_min: float | None = None,
                     sigma_max: float | None = None) -> np.ndarray:
  """(n,) σ's uniform in the formulation's own time t, from t(σ_max) to t(σ_min).

  With `VP()` this is the VP paper's grid (t from 1 to ε_s). σ_min / σ_max default to
  the formulation's sampling bounds.
  """
  lo = formulation.sigma_min if sigma_min is None else sigma_min
  hi = formulation.sigma_max if sigma_max is None else sigma_max
  _check_bounds(n, lo, hi)
  if n == 1:
    return np.asarray([hi], np.float64)
  with jax.ensure_compile_time_eval():
    sigmas = formulation.uniform_t_sigmas(n - 1, lo, hi)
  return np.asarray(sigmas, np.float64)


def append_zero(sigmas) -> np.ndarray:
  """The grid with a final σ = 0 (a last step that denoises)."""
  sigmas = np.asarray(sigmas)
  return np.concatenate([sigmas, np.zeros((1,), sigmas.dtype)])


GRIDS = ("karras", "loglinear", "uniform_t")


def get_sigmas(grid: str, n: int, sigma_min: float | None = None,
               sigma_max: float | None = None, formulation: Formulation | None = None,
               rho: float = 7.0) -> np.ndarray:
  """The named grid of n positive σ's with a final 0 appended: (n + 1,), n steps.

  σ_min / σ_max default to `formulation`'s sampling bounds when it is given;
  `uniform_t` needs the formulation (its own time t).
  """
  if grid not in GRIDS:
    raise ValueError(f"Unknown grid {grid!r}; valid grids: {list(GRIDS)}")
  if formulation is not None:
    sigma_min = formulation.sigma_min if sigma_min is None else sigma_min
    sigma_max = formulation.sigma_max if sigma_max is None else sigma_max
  if grid == "uniform_t":
    if formulation is None:
      raise ValueError("The 'uniform_t' grid is uniform in a formulation's own time t: "
                       "pass formulation=<Formulation>.")
    return append_zero(uniform_t_sigmas(formulation, n, sigma_min, sigma_max))
  if sigma_min is None or sigma_max is None:
    raise ValueError(f"Grid {grid!r} needs sigma_min and sigma_max (or a formulation "
                     "to take them from).")
  if grid == "karras":
    return append_zero(karras_sigmas(n, sigma_min, sigma_max, rho))
  return append_zero(loglinear_sigmas(n, sigma_min, sigma_max))


def _check_bounds(n: int, sigma_min: float, sigma_max: float) -> None:
  if int(n) != n or n < 1:
    raise ValueError(f"Expected a positive integer number of noise levels n, got {n!r}.")
  if not 0 < sigma_min <= sigma_max:
    raise ValueError("Expected 0 < sigma_min <= sigma_max, got "
                     f"sigma_min={sigma_min!r}, sigma_max={sigma_max!r}.")
  if n > 1 and sigma_min == sigma_max:
    raise ValueError(f"n={n} distinct noise levels need sigma_min < sigma_max, got "
                     f"both {sigma_min!r}.")


def check_sigmas(sigmas) -> None:
  """Raises ValueError unless `sigmas` is a valid grid (skipped when it is traced).

  Valid: 1-D, at least 2 entries, finite, non-negative, strictly decreasing (so only
  the last entry may be 0).
  """
  if isinstance(sigmas, jax.core.Tracer):
    if sigmas.ndim != 1 or sigmas.shape[0] < 2:
      raise ValueError(f"Expected a 1-D grid of at least 2 noise levels, got shape {sigmas.shape}.")
    return
  s = np.asarray(sigmas)
  if s.ndim != 1 or s.shape[0] < 2:
    raise ValueError(f"Expected a 1-D grid of at least 2 noise levels, got shape {s.shape}.")
  if not np.all(np.isfinite(s)):
    raise ValueError(f"Expected finite noise levels, got {s}.")
  if np.any(s < 0):
    raise ValueError(f"Expected non-negative noise levels, got {s}.")
  if np.any(np.diff(s) >= 0):
    raise ValueError(f"Expected a strictly decreasing grid of noise levels, got {s}.")
