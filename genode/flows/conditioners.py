"""Coupling conditioners h = NN(x_masked): an MLP for vectors, a small conv net for images.

The image net is Glow's NN() (Kingma & Dhariwal 2018, §3.3; openai/glow `f`):
conv3×3(hidden) → ReLU → conv1×1(hidden) → ReLU → conv3×3 "zeros", whose weights and
bias start at 0 and whose output is multiplied by exp(3·logs), logs initialised to 0.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class ZeroConv(nn.Module):
  """Glow's conv_zeros: 3×3 conv with zero W, b, times exp(3·logs) per output channel."""

  features: int
  logscale_factor: float = 3.0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.Conv(self.features, (3, 3), padding="SAME", kernel_init=nn.initializers.zeros,
                param_dtype=x.dtype, name="conv")(x)
    logs = self.param("logs", nn.initializers.zeros, (self.features,), x.dtype)
    return h * jnp.exp(logs * self.logscale_factor).reshape((1,) * (h.ndim - 1) + (-1,))


class ConvConditioner(nn.Module):
  """(B, H, W, C_in) → (B, H, W, out_channels)."""

  hidden: int
  out_channels: int
  zero_init: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.relu(nn.Conv(self.hidden, (3, 3), padding="SAME", param_dtype=x.dtype)(x))
    h = nn.relu(nn.Conv(self.hidden, (1, 1), padding="SAME", param_dtype=x.dtype)(h))
    if self.zero_init:
      return ZeroConv(self.out_channels, name="zero_conv")(h)
    return nn.Conv(self.out_channels, (3, 3), padding="SAME", param_dtype=x.dtype,
                   name="out_conv")(h)


class MLPConditioner(nn.Module):
  """(B, d_in) → (B, out_dim): `num_hidden_layers` ReLU layers of `hidden` units."""

  hidden: int
  num_hidden_layers: int
  out_dim: int
  zero_init: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = x
    for _ in range(self.num_hidden_layers):
      h = nn.relu(nn.Dense(self.hidden, param_dtype=x.dtype)(h))
    kernel_init = nn.initializers.zeros if self.zero_init else nn.initializers.lecun_normal()
    return nn.Dense(self.out_dim, kernel_init=kernel_init, param_dtype=x.dtype,
                    name="out")(h)
