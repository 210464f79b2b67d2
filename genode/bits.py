"""Discrete data: bits per dimension and uniform dequantization (shared by every family).

Convention (score_sde/FFJORD) for 8-bit data scaled to [−1, 1] with uniform
dequantization: x = 2(k + u)/256 − 1, k ∈ {0…255}^d, u ~ U[0, 1)^d. The density of the
dequantized v = k + u is p(x)·(2/256)^d, and

    bits/dim = −(log p(x) + d·ln(2/256)) / (d·ln 2) = −log p(x)/(d·ln 2) + 7,

an upper bound on the discrete model's negative log-likelihood in bits. A density
uniform on [−1, 1]^d (log p = −d ln 2) is exactly 8 bits/dim.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def bits_per_dim(logp_nats, num_dims: int, *, data_scale: float = 2.0, num_levels: int = 256):
  """Bits/dim of `num_levels`-level data from the log-density of its scaled version.

  The data x = data_scale·(k + u)/num_levels + offset, k ∈ {0…num_levels−1}^d,
  u ~ U[0, 1)^d (the default: 8-bit data in [−1, 1]). The density of v = k + u is
  p(x)·(data_scale/num_levels)^d, so

      bits/dim = −(log p(x)/d + ln(data_scale/num_levels)) / ln 2.

  Args:
    logp_nats: log p(x) in nats, any shape.
    num_dims: d, the number of dimensions of one sample.
  """
  logp_nats = jnp.asarray(logp_nats)
  return -(logp_nats / num_dims + math.log(data_scale / num_levels)) / math.log(2.0)


def dequantize(key, levels, *, num_levels: int = 256, low: float = -1.0, high: float = 1.0):
  """x = low + (high − low)·(k + u)/num_levels, u ~ U[0, 1): integer levels k -> [low, high).

  Args:
    key: PRNG key for u.
    levels: integer array (e.g. uint8 images) with entries in {0…num_levels−1}.

  Returns:
    A float array of the same shape (the default float dtype). Use
    `bits_per_dim(..., data_scale=high − low, num_levels=num_levels)` with it.
  """
  levels = jnp.asarray(levels)
  if not jnp.issubdtype(levels.dtype, jnp.integer):
    raise ValueError(f"dequantize expects integer levels (e.g. uint8), got dtype {levels.dtype}")
  dtype = jnp.result_type(float)
  u = jax.random.uniform(key, levels.shape, dtype)
  return low + (high - low) * (levels.astype(dtype) + u) / num_levels
