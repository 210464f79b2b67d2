"""Rectified-flow time in genode's convention, and grids uniform in it.

genode's rectified-flow row (`genode.formulations.RectifiedFlow`): σ(t) = t/(1 − t),
s(t) = 1 − t, native state x_t = s·x̄ = (1 − t)·y + t·n. So t = 0 is data and t = 1 is
noise: the paper's time (Liu, Gong & Liu 2022, eq. 1, t = 0 noise, t = 1 data) is
τ = 1 − t. Any model's state x̄ at σ maps to RF coordinates as x_t = x̄/(1 + σ), t = σ/(1 + σ).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from genode.formulations import Formulation


def rf_time(sigma):
  """t(σ) = σ/(1 + σ)."""
  return sigma / (1 + sigma)


def rf_sigma(t):
  """σ(t) = t/(1 − t)."""
  return t / (1 - t)


def rf_time_sigmas(num_steps: int, sigma_max: float) -> np.ndarray:
  """(num_steps + 1,) σ's uniform in RF time, t_i = t_max·(1 − i/num_steps), the last 0.

  t_max = t(σ_max). For a straight flow every Euler step on this grid is exact; one step
  is x = D(σ_max·z; σ_max), the RF Euler step x_0 = x_t − t·v(x_t, t) from t = t_max.
  """
  if int(num_steps) != num_steps or num_steps < 1:
    raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
  if not sigma_max > 0:
    raise ValueError(f"sigma_max must be > 0, got {sigma_max}")
  t = rf_time(float(sigma_max)) * np.linspace(1.0, 0.0, int(num_steps) + 1)
  sigmas = rf_sigma(t)
  sigmas[0], sigmas[-1] = sigma_max, 0.0
  return sigmas


@dataclasses.dataclass(frozen=True)
class UniformTimeSigma:
  """σ = formulation.sigma(t), t ~ U[t_min, t_max] in the formulation's own time.

  The paper's reflow training time t ~ U[ε, 1] (t = 1 data), ε = 1e-3, is genode's RF
  t ~ U[0, 1 − ε]; t_min = 1e-5 keeps σ > 0, where λ(σ) = (1+σ)²/σ² is finite.
  Call: `sample_sigma(key, shape) -> σ`, the signature of `sample_training_sigma`.
  """

  formulation: Formulation
  t_min: float = 1e-5
  t_max: float = 1 - 1e-3

  def __call__(self, key, shape):
    return self.formulation.sigma(jax.random.uniform(key, shape, minval=self.t_min,
                                                     maxval=self.t_max))


def check_u_shape(a) -> float:
  """a as a float; ValueError (one line) unless it is finite and > 0."""
  try:
    a = float(a)
  except (TypeError, ValueError):
    raise ValueError(f"objective.time_a must be a finite number > 0, got {a!r}") from None
  if not (math.isfinite(a) and a > 0):
    raise ValueError(f"objective.time_a must be a finite number > 0, got {a!r}")
  return a


def u_shaped_density(t, a: float):
  """p(t) = ½·a/(eᵃ − 1)·(e^{a t} + e^{a(1−t)}) on [0, 1] (Lee, Lin & Fanti 2024)."""
  return 0.5 * a / np.expm1(a) * (np.exp(a * t) + np.exp(a * (1 - t)))


def u_shaped_cdf(t, a: float):
  """F(t) = ½·(1 + (e^{a t} − e^{a(1−t)})/(eᵃ − 1)), the integral of `u_shaped_density`."""
  return 0.5 * (1 + (np.exp(a * t) - np.exp(a * (1 - t))) / np.expm1(a))


@dataclasses.dataclass(frozen=True)
class UShapedTimeSigma:
  """σ = formulation.sigma(t), t from the U-shaped density of Lee, Lin & Fanti 2024
  ("Improving the Training of Rectified Flows", NeurIPS 2024, §4.1 and its code's
  t_dist.py), scaled to [t_min, t_max] as `UniformTimeSigma`:

      p(t) = ½·a/(eᵃ − 1)·(e^{a t} + e^{a(1−t)}),  t ∈ [0, 1],  a = 4 (the paper's).

  Both ends are weighted up (p(0) = p(1) = ½·a·(eᵃ + 1)/(eᵃ − 1), p(½) = a·e^{a/2}/(eᵃ − 1)),
  so the noise end, the only velocity a one-step Euler sampler uses, gets more training
  than under t ~ U. Exact sampling: the half a·e^{a t}/(eᵃ − 1) by its inverse CDF,
  t = log1p(u·(eᵃ − 1))/a, u ~ U[0, 1], mirrored to 1 − t with probability ½. p is
  symmetric, so genode's time convention (t = 1 noise) and the paper's (t = 1 data) give
  the same distribution. Call: `sample_sigma(key, shape) -> σ`.
  """

  formulation: Formulation
  a: float = 4.0
  t_min: float = 1e-5
  t_max: float = 1 - 1e-3

  def __post_init__(self):
    object.__setattr__(self, "a", check_u_shape(self.a))

  def unit_time(self, key, shape):
    """t ~ p on [0, 1]."""
    key_u, key_mirror = jax.random.split(key)
    t = jnp.log1p(jax.random.uniform(key_u, shape) * math.expm1(self.a)) / self.a
    return jnp.where(jax.random.bernoulli(key_mirror, 0.5, shape), 1 - t, t)

  def __call__(self, key, shape):
    t = self.t_min + (self.t_max - self.t_min) * self.unit_time(key, shape)
    return self.formulation.sigma(t)
