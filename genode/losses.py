"""One training loss for every formulation (EDM eq. 8).

L = E_{σ ~ p_train, y ~ data, n ~ N(0, I)} λ(σ)·‖D(y + σn; σ) − y‖².

The squared norm is averaged over the non-batch dimensions, so the loss scale does
not depend on the image size. With the rectified-flow row this is exactly the
flow-matching velocity loss ‖v_θ − (n − y)‖²; with VP or DDPM it is the ε-loss
‖ε_θ − n‖² (tests/test_losses.py checks both identities).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from genode.denoiser import Denoiser, per_sample
from genode.formulations import Formulation


def denoising_loss(formulation: Formulation, denoiser: Denoiser, y: jax.Array,
                   key: jax.Array) -> jax.Array:
  """Per-sample loss, shape (B,): λ(σ)·mean((D(y + σn; σ) − y)²), σ ~ p_train."""
  sigma_key, noise_key = jax.random.split(key)
  sigma = formulation.sample_training_sigma(sigma_key, y.shape[:1]).astype(y.dtype)
  noise = jax.random.normal(noise_key, y.shape, y.dtype)
  return weighted_denoising_error(formulation, denoiser, y, sigma, noise)


def weighted_denoising_error(formulation: Formulation, denoiser: Denoiser, y, sigma, noise):
  """λ(σ)·mean((D(y + σn; σ) − y)²) per sample, for given σ (B,) and n (B, ...)."""
  x = y + per_sample(sigma, y) * noise
  error = jnp.mean((denoiser(x, sigma) - y) ** 2, axis=tuple(range(1, y.ndim)))
  return formulation.loss_weight(sigma) * error
