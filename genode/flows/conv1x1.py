"""Invertible 1×1 convolution (Kingma & Dhariwal 2018, §3.2, Table 1).

Each position's channel vector is multiplied by a C×C matrix W, y = x·W, with
log|det J| = H·W_img·log|det W| ((B, d) vectors: one position, a dense invertible map).

- `Invertible1x1Conv`: W learned directly, initialised as a random rotation;
  log|det W| by `jnp.linalg.slogdet` (LU with pivoting; the released Glow code uses
  this plain form, with the determinant in float64).
- `Invertible1x1ConvLU`: W = P·L·(U + diag(sign(s)·exp(log|s|))) (Glow eq. 10), P and
  sign(s) fixed, L unit lower-triangular, U strictly upper, log|s| learned; then
  log|det W| = Σ log|s|, O(C). P and sign(s) come from the LU decomposition of a random
  rotation drawn with the module's `seed` field, so they are constants of the module, not
  parameters an optimizer could touch.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from genode.flows.base import Bijector, num_positions


def _random_rotation(seed: int, channels: int) -> np.ndarray:
  q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(channels, channels)))
  return q * np.sign(np.diag(r))


class Invertible1x1Conv(Bijector):
  """y = x·W per position, W (C, C) a parameter initialised as a random rotation."""

  @nn.compact
  def __call__(self, x: jax.Array, inverse: bool = False) -> tuple[jax.Array, jax.Array]:
    channels = x.shape[-1]
    kernel = self.param("kernel", nn.initializers.orthogonal(), (channels, channels), x.dtype)
    _, log_abs_det = jnp.linalg.slogdet(kernel)
    log_det = jnp.full(x.shape[:1], num_positions(x.shape) * log_abs_det, x.dtype)
    if inverse:
      return x @ jnp.linalg.inv(kernel), -log_det
    return x @ kernel, log_det


def lu_constants(seed: int, channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(P, L₀, U₀) of the seed's random rotation: W₀ = P·L₀·U₀ (scipy.linalg.lu)."""
  return scipy.linalg.lu(_random_rotation(seed, channels))


def assemble_lu_kernel(lower: jax.Array, upper: jax.Array, log_s: jax.Array,
                       seed: int) -> tuple[jax.Array, jax.Array]:
  """W = P·(tril(L, −1) + I)·(triu(U, 1) + diag(sign_s·exp(log_s))) and log|det W| = Σ log_s.

  P and sign_s are the fixed factors of `lu_constants(seed, C)`; lower, upper (C, C) and
  log_s (C,) are the parameters.
  """
  channels = log_s.shape[0]
  permutation, _, upper0 = lu_constants(seed, channels)
  sign_s = jnp.asarray(np.sign(np.diag(upper0)), log_s.dtype)
  eye = jnp.eye(channels, dtype=log_s.dtype)
  lower_unit = jnp.tril(lower, -1) + eye
  upper_full = jnp.triu(upper, 1) + jnp.diag(sign_s * jnp.exp(log_s))
  return jnp.asarray(permutation, log_s.dtype) @ lower_unit @ upper_full, jnp.sum(log_s)


class Invertible1x1ConvLU(Bijector):
  """y = x·W per position, W = P·L·(U + diag(sign_s·exp(log_s))) (Glow eq. 10).

  Attributes:
    seed: draws the initial rotation whose LU decomposition fixes P and sign(s).
  """

  seed: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, inverse: bool = False) -> tuple[jax.Array, jax.Array]:
    channels, dtype = x.shape[-1], x.dtype
    _, lower0, upper0 = lu_constants(self.seed, channels)
    lower = self.param("lower", lambda key: jnp.asarray(np.tril(lower0, -1), dtype))
    upper = self.param("upper", lambda key: jnp.asarray(np.triu(upper0, 1), dtype))
    log_s = self.param("log_s",
                       lambda key: jnp.asarray(np.log(np.abs(np.diag(upper0))), dtype))
    kernel, log_abs_det = assemble_lu_kernel(lower, upper, log_s, self.seed)
    log_det = jnp.full(x.shape[:1], num_positions(x.shape) * log_abs_det, x.dtype)
    if inverse:
      return x @ jnp.linalg.inv(kernel), -log_det
    return x @ kernel, log_det
