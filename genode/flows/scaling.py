"""Elementwise bijectors: NICE's diagonal scaling and RealNVP's logit preprocessing."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from genode.flows.base import Bijector, sum_per_sample


class Homothety(Bijector):
  """NICE's diagonal scaling layer (Dinh et al. 2014, §3.3): z = x·exp(D), log-det = ΣD.

  D has one entry per dimension of a sample and starts at 0 (pylearn2 `Homothety`).
  """

  @nn.compact
  def __call__(self, x: jax.Array, inverse: bool = False) -> tuple[jax.Array, jax.Array]:
    log_scale = self.param("log_scale", nn.initializers.zeros, x.shape[1:], x.dtype)
    log_det = jnp.full(x.shape[:1], jnp.sum(log_scale), x.dtype)
    if inverse:
      return x * jnp.exp(-log_scale[None]), -log_det
    return x * jnp.exp(log_scale[None]), log_det


class LogitTransform(Bijector):
  """RealNVP's preprocessing (Dinh et al. 2016, §4.1) for data x ∈ [−1, 1]:

    q = α + (1 − 2α)·(x + 1)/2,   y = logit(q),
    log|dy/dx| = ln((1 − 2α)/2) − ln q − ln(1 − q)   per element,

  with α = 0.05 (the official code's `data_constraint` = 0.9 = 1 − 2α).
  """

  alpha: float = 0.05

  def __call__(self, x: jax.Array, inverse: bool = False) -> tuple[jax.Array, jax.Array]:
    scale = math.log((1.0 - 2.0 * self.alpha) / 2.0)
    if inverse:
      q = jax.nn.sigmoid(x)
      log_det = sum_per_sample(scale - jnp.log(q) - jnp.log1p(-q))
      return 2.0 * (q - self.alpha) / (1.0 - 2.0 * self.alpha) - 1.0, -log_det
    q = self.alpha + (1.0 - 2.0 * self.alpha) * (x + 1.0) / 2.0
    y = jnp.log(q) - jnp.log1p(-q)
    return y, sum_per_sample(scale - jnp.log(q) - jnp.log1p(-q))
