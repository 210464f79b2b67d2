"""Uniform dequantization and bits/dim of a flow on 8-bit data (genode's convention).

The flow models x ∈ [−1, 1]: x = 2(k + u)/256 − 1, u ~ U[0, 1)^d (`genode.bits.dequantize`), and bits/dim = −log p(x)/(d ln 2) + 7 (`genode.bits.bits_per_dim`),
which is the discrete model's −log₂ P(k)/d bound of Theis et al. 2016 with the data
scaled to [−1, 1]. Every preprocessing step a flow applies after x (RealNVP's logit) is
inside its `log_prob`, so these functions need nothing flow-specific.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from genode.bits import bits_per_dim, dequantize


def flow_log_prob_of_levels(flow, params, levels: jax.Array, key: jax.Array,
                            num_levels: int = 256) -> tuple[jax.Array, jax.Array]:
  """One uniform-dequantization draw: integer levels (B, *data_shape) → (log p(x) (B,)
  nats, bits/dim (B,)) in genode's convention."""
  x = dequantize(key, levels, num_levels=num_levels)
  logp = flow.apply(params, x, method="log_prob")
  num_dims = x[0].size
  return logp, bits_per_dim(logp, num_dims, num_levels=num_levels)


def flow_bits_per_dim(flow, params, x: jax.Array, num_levels: int = 256) -> jax.Array:
  """Bits/dim (B,) of already-dequantized x (B, *data_shape) in [−1, 1]."""
  logp = flow.apply(params, x, method="log_prob")
  return bits_per_dim(logp, x[0].size, num_levels=num_levels)
