"""Squeeze (2×2 space-to-depth) and multi-scale factor-out (RealNVP §3.6, Glow §3).

squeeze: (B, H, W, C) → (B, H/2, W/2, 4C), a permutation (log-det 0); channel 4c + 2a + b
of the output holds pixel (2i + a, 2j + b) of channel c. Factor-out sends the first half
of the channels to the latent at each level and keeps transforming the second half.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from genode.flows.base import Bijector


def check_squeezable(layer: str, shape: tuple[int, ...], times: int = 1) -> None:
  """ValueError unless `shape` = (B, H, W, C) with H and W divisible by 2**times."""
  factor = 2**times
  if len(shape) != 4 or shape[1] % factor or shape[2] % factor:
    raise ValueError(
        f"{layer}: cannot squeeze an input of shape {tuple(shape)} {times} time(s); it needs "
        f"(B, H, W, C) with H and W divisible by {factor}")


def squeeze(x: jax.Array) -> jax.Array:
  """(B, H, W, C) → (B, H/2, W/2, 4C)."""
  check_squeezable("squeeze", x.shape)
  b, h, w, c = x.shape
  x = x.reshape(b, h // 2, 2, w // 2, 2, c)
  return x.transpose(0, 1, 3, 5, 2, 4).reshape(b, h // 2, w // 2, 4 * c)


def unsqueeze(x: jax.Array) -> jax.Array:
  """(B, H, W, 4C) → (B, 2H, 2W, C), the inverse of `squeeze`."""
  b, h, w, c4 = x.shape
  if c4 % 4:
    raise ValueError(f"unsqueeze: needs a channel count divisible by 4, got shape {x.shape}")
  c = c4 // 4
  x = x.reshape(b, h, w, c, 2, 2)
  return x.transpose(0, 1, 4, 2, 5, 3).reshape(b, 2 * h, 2 * w, c)


class Squeeze(Bijector):
  """The squeeze as a bijector (log-det 0)."""

  def __call__(self, x: jax.Array, inverse: bool = False) -> tuple[jax.Array, jax.Array]:
    zeros = jnp.zeros(x.shape[:1], x.dtype)
    return (unsqueeze(x) if inverse else squeeze(x)), zeros


def factor_out(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(B, H, W, C) → (kept (B, H, W, C − C//2), latent (B, H·W·(C//2)))."""
  if x.shape[-1] < 2:
    raise ValueError(f"factor_out: needs at least 2 channels, got shape {x.shape}")
  half = x.shape[-1] // 2
  return x[..., half:], x[..., :half].reshape(x.shape[0], -1)


def factor_in(kept: jax.Array, latent: jax.Array) -> jax.Array:
  """The inverse of `factor_out`: (kept, latent (B, H·W·c_out)) → (B, H, W, C)."""
  b, h, w, c_kept = kept.shape
  return jnp.concatenate([latent.reshape(b, h, w, -1), kept], axis=-1)
