"""Straightness of a flow on simulated trajectories (Liu, Gong & Liu 2022, eq. 3).

S(Z) = ∫₀¹ E‖(Z₁ − Z₀) − Ż_τ‖² dτ, in the paper's time τ (τ = 0 noise, τ = 1 data) and
RF coordinates. S = 0 iff Z_τ = τ·Z₁ + (1 − τ)·Z₀ along every path: then one Euler step
is exact. Reported with the transport E‖Z₁ − Z₀‖² and their ratio (`Straightness`).

Any teacher's PF-ODE (every genode model is a denoiser D(x̄; σ)) is simulated on a grid
uniform in genode's RF time t = σ/(1 + σ) from t_max = t(σ_max) down to 0, and each state
x̄ is mapped to RF coordinates x_t = (1 − t)·x̄ = x̄/(1 + σ). The paper's time is then
τ = 1 − t/t_max (rescaled to [0, 1]; t_max = 0.999 for genode's RF σ_max = 999).
The estimate uses the states only: Ż on step i is (Z_{i+1} − Z_i)/Δτ_i, so
S ≈ Σ_i Δτ_i·E‖(Z₁ − Z₀) − (Z_{i+1} − Z_i)/Δτ_i‖², exact (0) for straight paths at any
resolution and converging to eq. 3 as the grid is refined. ‖·‖² sums over the dimensions.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from genode import sampling
from genode.denoiser import Denoiser
from genode.reflow.rf_time import rf_time, rf_time_sigmas


class Straightness(NamedTuple):
  """S(Z) (eq. 3), the transport E‖Z₁ − Z₀‖², and S / E‖Z₁ − Z₀‖² (scalars)."""

  straightness: jax.Array
  transport: jax.Array
  normalized: jax.Array


class Trajectory(NamedTuple):
  """States in RF coordinates on a grid uniform in RF time (t decreasing to 0)."""

  t: jax.Array  # (K + 1,) from t_max to 0
  x: jax.Array  # (K + 1, B, ...) x_t = x̄(σ(t))/(1 + σ(t))


def rf_trajectory(denoiser: Denoiser, noise: jax.Array, num_steps: int, sigma_max: float,
                  solver: str = "euler", **options) -> Trajectory:
  """The PF-ODE from x̄ = σ_max·noise to σ = 0 (`rf_time_sigmas`), every state kept.

  One `genode.sampling.sample` call per grid interval, chained in a `lax.scan` (the last
  step, to σ = 0, is the sampler's final step). This function is the only place that
  builds trajectories: swap it for `genode.sampling.trajectory` once that exists.
  noise: (B, ...) standard normal. Returns K + 1 states, K = num_steps.
  """
  sigmas = rf_time_sigmas(num_steps, sigma_max)
  dtype = noise.dtype
  start = jnp.asarray(sigmas[0], dtype) * noise

  def step(x, interval):
    x, _ = sampling.sample(denoiser, x, interval, solver, **options)
    return x, x

  intervals = jnp.asarray(np.stack([sigmas[:-2], sigmas[1:-1]], -1), dtype)  # (K − 1, 2)
  last, states = jax.lax.scan(step, start, intervals)
  end, _ = sampling.sample(denoiser, last, sigmas[-2:], solver, **options)
  xbar = jnp.concatenate([start[None], states, end[None]])
  scale = 1 / (1 + jnp.asarray(sigmas, dtype))  # x_t = x̄/(1 + σ)
  rf = xbar * scale.reshape((-1,) + (1,) * noise.ndim)
  return Trajectory(jnp.asarray(rf_time(sigmas), dtype), rf)


def trajectory_straightness(trajectory: Trajectory) -> Straightness:
  """S(Z) of eq. 3 from the states (finite differences in τ = 1 − t/t_max; see module)."""
  t, x = trajectory
  tau = 1 - t / t[0]
  d_tau = jnp.diff(tau)  # (K,)
  z = x.reshape(x.shape[:2] + (-1,))  # (K + 1, B, d)
  total = z[-1] - z[0]  # Z₁ − Z₀
  slopes = jnp.diff(z, axis=0) / d_tau[:, None, None]  # Ż on each step
  per_step = jnp.mean(jnp.sum((total[None] - slopes) ** 2, -1), -1)  # (K,)
  s = jnp.sum(d_tau * per_step)
  transport = jnp.mean(jnp.sum(total**2, -1))
  return Straightness(s, transport, s / transport)


def measure_straightness(denoiser: Denoiser, noise: jax.Array, num_steps: int = 100,
                         sigma_max: float = 999.0, solver: str = "euler",
                         **options) -> Straightness:
  """`trajectory_straightness(rf_trajectory(...))`: S(Z) of the denoiser's PF-ODE from `noise`.

  sigma_max: the start x̄ = σ_max·noise (genode's RF: 999, t = 0.999; an EDM teacher: 80).
  """
  return trajectory_straightness(rf_trajectory(denoiser, noise, num_steps, sigma_max, solver,
                                    **options))
