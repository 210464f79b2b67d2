"""Every trained network becomes a denoiser D(x; σ) (EDM eq. 7), and back.

`precondition(formulation, network)` wraps a raw network F(c_in·x; c_noise) into
D(x; σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x; c_noise(σ)), in the s = 1 coordinates
x = y + σ·n. The conversions below give the same model as a score, an ε-predictor
or a rectified-flow velocity.

The denoiser contract. genode calls a denoiser as D(x, σ) with x (B, ...) batched on
axis 0 and σ a () array, one noise level for the whole batch: `genode.sampling.sample`,
`trajectory` and `genode.likelihood.log_likelihood` all do. Write a denoiser for that
scalar σ, or write it per sample with `per_sample(σ, x)` (which accepts a () or (B,) σ,
as the training loss passes): `precondition`'s denoisers and the conversions below do,
so they work everywhere. The network receives c_noise as (B,).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from genode.formulations import Formulation

# D(x (B, ...), σ ()) -> (B, ...): the σ a sampler or likelihood passes is a () array;
# a denoiser written with `per_sample` also accepts the training loss's (B,) σ.
Denoiser = Callable[[jax.Array, jax.Array], jax.Array]
Network = Callable[[jax.Array, jax.Array], jax.Array]


def per_sample(sigma, x):
  """σ broadcast against x: a scalar or (B,) becomes (B, 1, …, 1)."""
  sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), x.shape[:1])
  return sigma.reshape(sigma.shape + (1,) * (x.ndim - 1))


def precondition(formulation: Formulation, network: Network) -> Denoiser:
  """D(x; σ) = c_skip·x + c_out·F(c_in·x; c_noise) (EDM eq. 7)."""

  def denoiser(x, sigma):
    sigma = per_sample(sigma, x)
    c_skip, c_out, c_in, c_noise = formulation.preconditioning(sigma)
    f = network(c_in * x, c_noise.reshape(x.shape[:1]))
    return c_skip * x + c_out * f.astype(x.dtype)

  return denoiser


def score(denoiser: Denoiser, x, sigma):
  """∇ log p(x; σ) = (D(x; σ) − x)/σ² (EDM eq. 3)."""
  return (denoiser(x, sigma) - x) / per_sample(sigma, x) ** 2


def epsilon(denoiser: Denoiser, x, sigma):
  """ε̂ = (x − D(x; σ))/σ, the DDPM noise prediction."""
  return (x - denoiser(x, sigma)) / per_sample(sigma, x)


def velocity(denoiser: Denoiser, x, sigma):
  """Rectified-flow velocity v̂ = n̂ − ŷ = ε̂ − D, for x = y + σ·n."""
  d = denoiser(x, sigma)
  return (x - d) / per_sample(sigma, x) - d
