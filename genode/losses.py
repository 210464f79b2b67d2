"""One training loss for every formulation (EDM eq. 8), and the `Objective` seam.

L = E_{σ ~ p_train, y ~ data, n ~ N(0, I)} λ(σ)·‖D(y + σn; σ) − y‖².

The squared norm is averaged over the non-batch dimensions, so the loss scale does
not depend on the image size. With the rectified-flow row this is exactly the
flow-matching velocity loss ‖v_θ − (n − y)‖²; with VP or DDPM it is the ε-loss
‖ε_θ − n‖² (tests/test_losses.py checks both identities).

An `Objective` is what the train step differentiates, for any model family:
`objective(params, batch, key, *frozen) -> (per-sample loss (B,), metrics)`.
`denoising_objective` is the diffusion family's; flows, reflow and distillation add theirs.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from genode.denoiser import Denoiser, per_sample, precondition
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


# ---------------------------------------------------------------------------
# Training objectives: what the train step differentiates.
# ---------------------------------------------------------------------------

Params = Any
Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]
# objective(params, batch, key, *frozen) -> (per-sample loss (B,), extra scalar metrics).
# `key` is this device's key for this step; `frozen` are replicated inputs that are not
# trained (a distillation teacher's parameters), passed to the step at run time.
Objective = Callable[..., tuple[jax.Array, Metrics]]


def denoising_objective(formulation: Formulation, model, *,
                        class_conditional: bool = False) -> Objective:
  """EDM eq. 8 for `model` preconditioned by `formulation` (eq. 7), as an `Objective`.

  The key splits into (noise, dropout) keys, the noise key into (σ, n) keys
  (`denoising_loss`); batch["x"] (B, ...) is the clean data, batch["label"] (B,) the
  class labels of a class-conditional model.
  """

  def objective(params, batch, key):
    noise_key, dropout_key = jax.random.split(key)
    labels = {"class_labels": batch["label"]} if class_conditional else {}

    def network(x_in, c_noise):
      return model.apply({"params": params}, x_in, c_noise, train=True,
                         rngs={"dropout": dropout_key}, **labels)

    return denoising_loss(formulation, precondition(formulation, network), batch["x"],
                          noise_key), {}

  return objective
