"""The bijector protocol every flow layer follows.

A bijector is a Flax linen module whose one compact method is

  __call__(x, inverse=False) -> (y, log_det)

with log_det (B,) = log|det ∂y/∂x| per sample of the direction taken (so the inverse
direction returns −(forward log-det at its output)). Parameters are created on the
first call in either direction; a data-dependent init (ActNorm) happens on a forward
`init`. `forward`, `inverse` and `inverse_and_log_det` are the named entry points
(`module.apply(variables, x, method="forward")`).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


class Bijector(nn.Module):
  """Base class: subclasses implement `__call__(x, inverse=False) -> (y, log_det (B,))`."""

  def forward(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x (B, ...) → (y (B, ...), log|det ∂y/∂x| (B,))."""
    return self(x, inverse=False)

  def inverse(self, y: jax.Array) -> jax.Array:
    """y (B, ...) → x (B, ...), the inverse of `forward`."""
    return self(y, inverse=True)[0]

  def inverse_and_log_det(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """y (B, ...) → (x, log|det ∂x/∂y| (B,)) = (x, −forward log-det at x)."""
    return self(y, inverse=True)


def sum_per_sample(values: jax.Array) -> jax.Array:
  """Sums every axis but the first: (B, ...) → (B,)."""
  return jnp.sum(values.reshape(values.shape[0], -1), axis=-1)


def num_positions(shape: tuple[int, ...]) -> int:
  """The number of spatial positions of a (B, ..., C) input: H·W for NHWC, 1 for (B, d)."""
  return math.prod(shape[1:-1])
