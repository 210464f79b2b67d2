"""Base distributions of the latent z (B, d): standard normal and standard logistic.

NICE (Dinh et al. 2014, eq. 3 and §3.4) uses a factorized logistic prior on MNIST;
RealNVP and Glow a standard normal. `temperature` T scales the sample, z = T·ε, as
Glow's `eps_std` (Kingma & Dhariwal 2018, §5): for the normal this is the prior with
std T.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class StandardNormal:
  """N(0, I): log p(z) = −½‖z‖² − (d/2)·ln 2π."""

  def log_prob(self, z: jax.Array) -> jax.Array:
    """z (B, d) → (B,)."""
    return -0.5 * jnp.sum(z**2, axis=-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)

  def sample(self, key: jax.Array, shape: tuple[int, ...], temperature: float = 1.0,
             dtype=jnp.float32) -> jax.Array:
    return temperature * jax.random.normal(key, shape, dtype)


@dataclasses.dataclass(frozen=True)
class StandardLogistic:
  """Factorized logistic: log p(z) = −Σ_i [softplus(z_i) + softplus(−z_i)] (NICE eq. §3.4)."""

  def log_prob(self, z: jax.Array) -> jax.Array:
    """z (B, d) → (B,)."""
    return -jnp.sum(jax.nn.softplus(z) + jax.nn.softplus(-z), axis=-1)

  def sample(self, key: jax.Array, shape: tuple[int, ...], temperature: float = 1.0,
             dtype=jnp.float32) -> jax.Array:
    return temperature * jax.random.logistic(key, shape, dtype)


PRIORS = {"normal": StandardNormal, "logistic": StandardLogistic}


def get_prior(name: str):
  """The prior `name` ("normal" | "logistic"); ValueError lists the valid names."""
  if name not in PRIORS:
    raise ValueError(f"Unknown prior {name!r}; valid priors: {sorted(PRIORS)}")
  return PRIORS[name]()
