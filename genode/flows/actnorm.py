"""ActNorm with data-dependent initialization (Kingma & Dhariwal 2018, §3.1, Table 1).

  y = (x + b)·exp(logs),   log|det J| = (H·W)·Σ_c logs_c,

per channel (the last axis). On a forward `init`, b and logs are set from that batch so
y has zero mean and unit variance per channel: b = −mean(x), logs = −ln(std(x) + ε),
std the population std over (B, H, W) after centring, as openai/glow `actnorm`. They are
ordinary *parameters*: they are created only when `init` runs, so `apply` with params
restored from a checkpoint never re-initialises them (the trap of rosinality/glow #6).
An `init` in the inverse direction (no data) gives b = 0, logs = 0.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from genode.flows.base import Bijector, num_positions


class ActNorm(Bijector):
  """Per-channel affine normalization of (B, ..., C) inputs, data-initialized.

  Attributes:
    eps: added to the init batch's std (Glow: 1e-6).
  """

  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array, inverse: bool = False) -> tuple[jax.Array, jax.Array]:
    axes = tuple(range(x.ndim - 1))
    channels = x.shape[-1]
    shape = (1,) * (x.ndim - 1) + (channels,)  # per-channel values, broadcast explicitly

    def init_bias(key):
      del key
      return jnp.zeros((channels,), x.dtype) if inverse else -jnp.mean(x, axis=axes)

    bias = self.param("bias", init_bias)

    def init_log_scale(key):
      del key
      if inverse:
        return jnp.zeros((channels,), x.dtype)
      std = jnp.sqrt(jnp.mean((x + bias.reshape(shape))**2, axis=axes))
      return -jnp.log(std + self.eps)

    log_scale = self.param("log_scale", init_log_scale)
    log_det = jnp.full(x.shape[:1], num_positions(x.shape) * jnp.sum(log_scale), x.dtype)
    bias_b, log_scale_b = bias.reshape(shape), log_scale.reshape(shape)
    if inverse:
      return x * jnp.exp(-log_scale_b) - bias_b, -log_det
    return (x + bias_b) * jnp.exp(log_scale_b), log_det
