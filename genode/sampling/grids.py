"""Noise-level grids for sampling, following k-diffusion's conventions.

A grid is a strictly decreasing 1-D array of σ's: data, named by a rule or given
explicitly. `karras_sigmas`, `loglinear_sigmas`, `uniform_t_sigmas` and
`ddpm_timestep_sigmas` return `n` positive σ's from σ_max down to σ_min, *without* a
final 0 (k-diffusion's `get_sigmas_karras(..., concat_zero=False)` style);
`append_zero` adds it. The config layer's entry points: `get_sigmas` (a rule of the
`GRIDS` table by name, with the 0 appended: n + 1 entries, i.e. n steps, the last one to
σ = 0) and `as_sigmas` (an explicit list, e.g. a hand-written or optimized grid).

Grids are NumPy float64 arrays, computed eagerly even inside a caller's `jax.jit`, so
`sample` always sees a concrete grid (it checks it and knows whether it ends at 0).
"""

from __future__ import annotations

import inspect
import math
from typing import Callable

import jax
import jax.numpy as jnp
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
  """(n,) σ's uniform in the formulation's own time t, σ(t_i) with t_i from t(σ_max) to t(σ_min).

  With `VP()` this is the VP paper's grid (t from 1 to ε_s). σ_min / σ_max default to
  the formulation's sampling bounds.
  """
  lo, hi = _bounds(formulation, sigma_min, sigma_max)
  _check_bounds(n, lo, hi)
  if n == 1:
    return np.asarray([hi], np.float64)
  with jax.ensure_compile_time_eval():
    t = jnp.linspace(formulation.sigma_inv(hi), formulation.sigma_inv(lo), n)
    sigmas = formulation.sigma(t)
  return np.asarray(sigmas, np.float64)


def ddpm_timestep_sigmas(formulation: Formulation, n: int, sigma_min: float | None = None,
                         sigma_max: float | None = None) -> np.ndarray:
  """DDIM's grid (Song et al. 2021): n evenly spaced *integer* steps, as σ's.

  t_i = round(linspace(t(σ_max), t(σ_min), n)); with DDPM's default bounds, the steps
  T−1 … 0. Needs a discrete-time formulation (one with `num_timesteps`, e.g. `DDPM()`).
  """
  if getattr(formulation, "num_timesteps", None) is None:
    raise ValueError("The 'ddpm_timesteps' grid needs a discrete-time formulation (one with "
                     f"integer timesteps, e.g. DDPM()), got {formulation!r}.")
  lo, hi = _bounds(formulation, sigma_min, sigma_max)
  _check_bounds(n, lo, hi)
  with jax.ensure_compile_time_eval():
    t = jnp.round(jnp.linspace(formulation.sigma_inv(hi), formulation.sigma_inv(lo), n))
    sigmas = formulation.sigma(t)
  return np.asarray(sigmas, np.float64)


def append_zero(sigmas) -> np.ndarray:
  """The grid with a final σ = 0 (a last step that denoises)."""
  sigmas = np.asarray(sigmas)
  return np.concatenate([sigmas, np.zeros((1,), sigmas.dtype)])


# A grid rule: (n, σ_min, σ_max, formulation, **params) -> (n,) positive σ's, decreasing.
# σ_min/σ_max are None where neither the caller nor a formulation gave them.
GridRule = Callable[..., np.ndarray]


def _karras_rule(n, sigma_min, sigma_max, formulation, rho: float = 7.0):
  del formulation
  return karras_sigmas(n, *_needs_bounds("karras", sigma_min, sigma_max), rho=rho)


def _loglinear_rule(n, sigma_min, sigma_max, formulation):
  del formulation
  return loglinear_sigmas(n, *_needs_bounds("loglinear", sigma_min, sigma_max))


def _uniform_t_rule(n, sigma_min, sigma_max, formulation):
  if formulation is None:
    raise ValueError("The 'uniform_t' grid is uniform in a formulation's own time t: "
                     "pass formulation=<Formulation>.")
  return uniform_t_sigmas(formulation, n, sigma_min, sigma_max)


def _ddpm_timesteps_rule(n, sigma_min, sigma_max, formulation):
  if formulation is None:
    raise ValueError("The 'ddpm_timesteps' grid is a DDPM's integer timesteps: "
                     "pass formulation=<DDPM>.")
  return ddpm_timestep_sigmas(formulation, n, sigma_min, sigma_max)


GRIDS: dict[str, GridRule] = {
    "karras": _karras_rule,  # EDM eq. 5 (params: rho = 7)
    "loglinear": _loglinear_rule,  # uniform in log σ (the VE paper's geometric grid)
    "uniform_t": _uniform_t_rule,  # uniform in the formulation's t (the VP paper's grid)
    "ddpm_timesteps": _ddpm_timesteps_rule,  # DDIM's integer timesteps
}


def get_sigmas(grid: str, n: int, sigma_min: float | None = None,
               sigma_max: float | None = None, formulation: Formulation | None = None,
               **params) -> np.ndarray:
  """The named grid of n positive σ's with a final 0 appended: (n + 1,), n steps.

  σ_min / σ_max default to `formulation`'s sampling bounds when it is given;
  `uniform_t` and `ddpm_timesteps` need the formulation (its own time t). `params` go
  to the rule (`karras`: rho).
  """
  try:
    rule = GRIDS[grid]
  except (KeyError, TypeError):
    raise ValueError(f"Unknown grid {grid!r}; valid grids: {list(GRIDS)}") from None
  if formulation is not None:
    sigma_min, sigma_max = _bounds(formulation, sigma_min, sigma_max)
  known = [p for p in inspect.signature(rule).parameters][4:]
  unknown = sorted(set(params) - set(known))
  if unknown:
    raise ValueError(f"Unknown parameters {unknown} for grid {grid!r}; "
                     f"its parameters: {known or 'none'}")
  return append_zero(rule(n, sigma_min, sigma_max, formulation, **params))


def as_sigmas(values, *, append_zero: bool = False) -> np.ndarray:
  """An explicit grid (e.g. `config.sampler.sigmas`) as a checked float64 array.

  Args:
    values: a decreasing sequence of σ's (a list, tuple or array).
    append_zero: add a final 0 (a last denoising step) after the given σ's.

  Returns:
    (M,) np.float64, valid for `check_sigmas` (else ValueError).
  """
  sigmas = np.asarray(values, np.float64)
  if append_zero:
    sigmas = np.concatenate([sigmas, np.zeros((1,), np.float64)])
  check_sigmas(sigmas)
  return sigmas


def _bounds(formulation: Formulation, sigma_min, sigma_max):
  lo = formulation.sigma_min if sigma_min is None else sigma_min
  hi = formulation.sigma_max if sigma_max is None else sigma_max
  return lo, hi


def _needs_bounds(grid: str, sigma_min, sigma_max):
  if sigma_min is None or sigma_max is None:
    raise ValueError(f"Grid {grid!r} needs sigma_min and sigma_max (or a formulation "
                     "to take them from).")
  return sigma_min, sigma_max


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
