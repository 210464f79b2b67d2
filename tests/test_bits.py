"""genode.bits: bits/dim of 8-bit data and uniform dequantization, with exact answers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genode.bits import bits_per_dim, dequantize


def test_bits_per_dim_of_uniform_density():
  d = 12
  # Uniform on [−1, 1]^d has log p = −d ln 2: exactly 8 bits per 8-bit dimension.
  np.testing.assert_allclose(bits_per_dim(-d * math.log(2.0), d), 8.0, rtol=1e-6)
  # Uniform on [0, 1]^d (data_scale 1) has log p = 0: also 8 bits.
  np.testing.assert_allclose(bits_per_dim(0.0, d, data_scale=1.0), 8.0, rtol=1e-6)
  # 4-level data on [−1, 1]: uniform is 2 bits.
  np.testing.assert_allclose(bits_per_dim(-d * math.log(2.0), d, num_levels=4), 2.0, rtol=1e-6)
  # A density twice as high (log p + ln 2) saves one bit in all: 1/d bit per dimension.
  np.testing.assert_allclose(bits_per_dim(-d * math.log(2.0) + math.log(2.0), d), 8.0 - 1 / d,
                             rtol=1e-6)


def test_dequantize_round_trips_levels():
  levels = jax.random.randint(jax.random.key(0), (4, 3, 5), 0, 256).astype(jnp.uint8)
  x = dequantize(jax.random.key(1), levels)
  assert x.shape == levels.shape and jnp.issubdtype(x.dtype, jnp.floating)
  assert float(x.min()) >= -1.0 and float(x.max()) < 1.0
  np.testing.assert_array_equal(np.floor((np.asarray(x) + 1) / 2 * 256), np.asarray(levels))
  with pytest.raises(ValueError, match="integer levels"):
    dequantize(jax.random.key(1), x)


def test_dequantize_lands_each_level_in_its_bin():
  """Level k ∈ {0…255} lands in [2k/256 − 1, 2(k+1)/256 − 1): every level, many draws."""
  levels = jnp.tile(jnp.arange(256, dtype=jnp.int32), (64, 1))  # (64, 256)
  x = np.asarray(dequantize(jax.random.key(2), levels))
  k = np.arange(256)
  assert np.all(x >= 2 * k / 256 - 1) and np.all(x < 2 * (k + 1) / 256 - 1)
  # The offsets u = (x + 1)·128 − k fill [0, 1) (uniform: mean ½ within 4 standard errors).
  u = (x + 1) * 128 - k
  assert abs(u.mean() - 0.5) < 4 * math.sqrt(1 / 12 / u.size)


def test_a_uniform_model_of_8_bit_data_has_8_bits_per_dim():
  """The density 2^{−d} on [−1, 1]^d, evaluated at dequantized 8-bit images: 8.0 bits/dim."""
  levels = jax.random.randint(jax.random.key(3), (5, 3, 4, 4), 0, 256).astype(jnp.uint8)
  x = dequantize(jax.random.key(4), levels)
  d = math.prod(x.shape[1:])
  inside = jnp.all((x >= -1) & (x < 1), axis=(1, 2, 3))
  logp = jnp.where(inside, -d * math.log(2.0), -jnp.inf)
  np.testing.assert_allclose(bits_per_dim(logp, d), 8.0, rtol=1e-6)
