"""Reflow and distillation objectives: `objective(params, batch, key) -> (loss (B,), metrics)`.

A batch comes from `genode.reflow.dataset.Couplings`: x (B, ...) the teacher's endpoint
at σ = 0, noise (B, ...) the paired z, label (B,) if class-conditional. The model is
either `network_fn(params, x_in, c_noise, key[, class_labels=...]) -> F` (key: dropout),
made into a denoiser D(x̄; σ) by `genode.denoiser.precondition` (EDM eq. 7), or directly
`denoiser_fn(params, batch, key) -> D` (any model family that is a denoiser).

* Reflow (Liu, Gong & Liu 2022, eq. 1 with the coupling (Z₀, Z₁) = (z, x)): the
  denoising loss of EDM eq. 8 with the stored z in place of fresh noise,
  λ(σ)·mean((D(x + σz; σ) − x)²). With genode's rectified-flow row this is exactly
  ‖v_θ(x_t, t) − (z − x)‖², x_t = (1 − t)·x + t·z (the paper's ‖(X₁ − X₀) − v‖² in
  reversed time). Another formulation works too: the ideal D(x̄; σ) = E[x | x + σz = x̄]
  depends on the coupling only, so its PF-ODE is the same rectified flow. Optionally
  (`reflow_terms`) a pixel distance of the velocity residual in place of its squared L2:
  the pseudo-Huber loss of Lee, Lin & Fanti 2024.
* Distillation (§2.3, "k-step" students): the student's k-step Euler output from the
  stored z on a grid uniform in RF time (`rf_time_sigmas`) against the teacher's x, by a
  pixel distance (`PIXEL_DISTANCES`: L2 averaged over pixels, or the pseudo-Huber
  distance of Song & Dhariwal 2023) plus an optional feature distance d_φ(x̂, x) whose
  network parameters φ come in as a frozen argument of the step.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from genode import sampling
from genode.denoiser import Denoiser, per_sample, precondition
from genode.formulations import Formulation
from genode.losses import weighted_denoising_error
from genode.reflow.rf_time import rf_time_sigmas

Batch = Mapping[str, jax.Array]
Objective = Callable[[Any, Batch, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
NetworkFn = Callable[..., jax.Array]  # (params, x_in, c_noise, key[, class_labels]) -> F
DenoiserFn = Callable[[Any, Batch, jax.Array], Denoiser]  # (params, batch, key) -> D
SampleSigma = Callable[[jax.Array, tuple[int, ...]], jax.Array]
FeatureDistance = Callable[[Any, jax.Array, jax.Array], jax.Array]  # (φ, x̂, x) -> (B,)
PixelDistance = Callable[[jax.Array, jax.Array], jax.Array]  # (x̂, x) -> (B,)


def batch_denoiser(formulation: Formulation, network_fn: NetworkFn, params, batch: Batch,
                   key: jax.Array) -> Denoiser:
  """D(x̄; σ) of `network_fn` with `params`, dropout `key` and the batch's labels."""
  labels = {"class_labels": batch["label"]} if "label" in batch else {}

  def network(x_in, c_noise):
    return network_fn(params, x_in, c_noise, key, **labels)

  return precondition(formulation, network)


def _denoiser_fn(formulation: Formulation, network_fn: NetworkFn | None,
                 denoiser_fn: DenoiserFn | None) -> DenoiserFn:
  """`denoiser_fn`, or the preconditioned `network_fn`; exactly one must be given."""
  if (network_fn is None) == (denoiser_fn is None):
    raise ValueError("Pass exactly one of network_fn (a raw network F) and denoiser_fn "
                     "(params, batch, key) -> D.")
  if denoiser_fn is not None:
    return denoiser_fn
  return lambda params, batch, key: batch_denoiser(formulation, network_fn, params, batch, key)


def reflow_terms(formulation: Formulation, denoiser: Denoiser, y: jax.Array,
                 noise: jax.Array, key: jax.Array, sample_sigma: SampleSigma | None = None,
                 loss: str = "l2") -> tuple[jax.Array, jax.Array]:
  """Per-sample (loss, L2) of the reflow objective, each (B,), with the paired noise.

  σ ~ `sample_sigma` (default: the formulation's p_train), drawn from the first half of
  `jax.random.split(key)` exactly as `genode.losses.denoising_loss` draws it, so that
  with noise = normal(split(key)[1]) the L2 loss is the denoising loss.

  L2 = λ(σ)·mean((D(y + σ·noise; σ) − y)²) (EDM eq. 8; genode's RF row: the velocity
  loss mean((v_θ − (z − y))²)). `loss` is a name in `PIXEL_DISTANCES`: "l2" returns L2
  itself; any other is that distance of the weighted residual r = √λ(σ)·(D − y), for the
  RF row r = −(v_θ(x_t, t) − (z − y)), the velocity residual. So "pseudo_huber" is
  sqrt(‖v_θ − (z − y)‖² + c²) − c with c = 0.00054·√D (‖·‖ over all D dimensions of a
  sample): the pseudo-Huber loss that Lee, Lin & Fanti 2024 ("Improving the Training of
  Rectified Flows", NeurIPS 2024, §4.2; their code's loss_type="huber") put in place of
  the squared L2 of Liu et al.'s eq. 1, with Song & Dhariwal 2023's c (§3.3; their code
  uses c = 0.00054·D and divides the loss by D).
  """
  sigma_key, _ = jax.random.split(key)
  sample_sigma = sample_sigma or formulation.sample_training_sigma
  sigma = sample_sigma(sigma_key, y.shape[:1]).astype(y.dtype)
  if loss == "l2":
    l2 = weighted_denoising_error(formulation, denoiser, y, sigma, noise)
    return l2, l2
  distance = PIXEL_DISTANCES[loss](y.shape[1:])
  x = y + per_sample(sigma, y) * noise
  residual = per_sample(jnp.sqrt(formulation.loss_weight(sigma)), y) * (denoiser(x, sigma) - y)
  return distance(residual, jnp.zeros_like(residual)), _pixel_mean(residual ** 2)


def reflow_denoising_loss(formulation: Formulation, denoiser: Denoiser, y: jax.Array,
                          noise: jax.Array, key: jax.Array,
                          sample_sigma: SampleSigma | None = None,
                          loss: str = "l2") -> jax.Array:
  """The per-sample reflow loss (B,) of `reflow_terms`: by default
  λ(σ)·mean((D(y + σ·noise; σ) − y)²)."""
  return reflow_terms(formulation, denoiser, y, noise, key, sample_sigma, loss)[0]


def check_reflow_loss(loss: str) -> str:
  """`loss`; ValueError (one line) unless it is a name in `PIXEL_DISTANCES`."""
  if loss not in PIXEL_DISTANCES:
    raise ValueError(f"Unknown objective.loss {loss!r}; valid: {list(PIXEL_DISTANCES)}")
  return loss


def make_reflow_objective(formulation: Formulation, network_fn: NetworkFn | None = None, *,
                          denoiser_fn: DenoiserFn | None = None,
                          sample_sigma: SampleSigma | None = None,
                          loss: str = "l2") -> Objective:
  """The k-RF objective on couplings: `reflow_terms` with batch["noise"].

  sample_sigma: the training σ; `UniformTimeSigma(RectifiedFlow())` is the paper's
  t ~ U[ε, 1] (reversed); default the formulation's own p_train.
  loss: "l2" (Liu et al.'s squared L2, the default) or another name in `PIXEL_DISTANCES`
  ("pseudo_huber": Lee, Lin & Fanti 2024), of the weighted residual (`reflow_terms`).
  key → (loss key, dropout key) by `jax.random.split`.
  Metrics: loss (the batch mean); l2 (the batch mean of L2) when loss is not "l2".
  """
  check_reflow_loss(loss)
  make_denoiser = _denoiser_fn(formulation, network_fn, denoiser_fn)

  def objective(params, batch, key):
    _coupling(batch, "reflow")
    loss_key, dropout_key = jax.random.split(key)
    denoiser = make_denoiser(params, batch, dropout_key)
    per_sample_loss, l2 = reflow_terms(formulation, denoiser, batch["x"], batch["noise"],
                                       loss_key, sample_sigma, loss)
    metrics = {"loss": jnp.mean(per_sample_loss)}
    if loss != "l2":
      metrics["l2"] = jnp.mean(l2)
    return per_sample_loss, metrics

  return objective


def euler_endpoint(denoiser: Denoiser, noise: jax.Array, num_steps: int,
                   sigma_max: float) -> jax.Array:
  """The k-step Euler output x̂ (B, ...) from x̄ = σ_max·noise on `rf_time_sigmas`.

  Euler in σ on x̄ is Euler in RF time on x_t (DESIGN.md §2), through `genode.sampling`;
  one step is x̂ = D(σ_max·noise; σ_max).
  """
  sigmas = rf_time_sigmas(num_steps, sigma_max)
  x, _ = sampling.sample(denoiser, jnp.asarray(sigma_max, noise.dtype) * noise, sigmas,
                         "euler")
  return x


def check_one_step(family, num_steps: int = 1) -> None:
  """ValueError (one line) unless `family` can be a k-step distillation student.

  A student takes k Euler steps of its own PF-ODE from x̄ = σ_max·z (`euler_endpoint`):
  it must be a denoiser D(x̄; σ) (`family.denoiser`) with a finite σ_max
  (`family.sigma_range`), and k must be a positive integer.
  """
  if int(num_steps) != num_steps or num_steps < 1:
    raise ValueError(f"objective.num_steps must be a positive integer, got {num_steps!r}")
  name = getattr(family, "name", type(family).__name__)
  if not callable(getattr(family, "denoiser", None)) or not hasattr(family, "sigma_range"):
    raise ValueError(f"Model family {name!r} cannot take one step: distillation needs a "
                     "denoiser D(x; σ) and its σ_max (a diffusion family)")
  sigma_max = float(family.sigma_range[1])
  if not np.isfinite(sigma_max) or sigma_max <= 0:
    raise ValueError(f"Model family {name!r} cannot take one step from σ_max = {sigma_max}")


def _coupling(batch: Batch, objective: str) -> None:
  """KeyError → ValueError (one line): the objective needs a couplings batch."""
  if "noise" not in batch:
    raise ValueError(f"The {objective} objective trains on couplings (data.name = "
                     "'couplings', from `launch.reflow couple`): the batch has no 'noise'")


def _pixel_mean(error):
  return jnp.mean(error, axis=tuple(range(1, error.ndim)))


def squared_l2(x_hat: jax.Array, target: jax.Array) -> jax.Array:
  """mean((x̂ − x)²) over the pixels of each sample, (B,): Liu et al.'s distillation L2."""
  return _pixel_mean((x_hat - target) ** 2)


# Song & Dhariwal 2023 ("Improved techniques for training consistency models", §3.3):
# c = 0.00054·√D for data in [−1, 1] (D: dimensions per sample; 0.03 on CIFAR-10).
PSEUDO_HUBER_C_PER_SQRT_DIM = 0.00054


def pseudo_huber_c(shape: tuple[int, ...]) -> float:
  """The paper's c = 0.00054·√D for samples of `shape` (D = prod(shape))."""
  return PSEUDO_HUBER_C_PER_SQRT_DIM * float(np.sqrt(np.prod(shape)))


def pseudo_huber(c: float) -> PixelDistance:
  """d(x̂, x) = sqrt(‖x̂ − x‖² + c²) − c per sample (Song & Dhariwal 2023, §3.3).

  ‖·‖ is the Euclidean norm over all of a sample's dimensions (a sum, not a mean). Small
  residuals pay ‖r‖²/(2c) (L2-like, smooth at 0), large ones ‖r‖ − c (L1-like in the
  norm), so a few far-off samples weigh less than under L2. Lee, Lin & Fanti 2024 use it
  to distill rectified flows.
  """
  if not c > 0:
    raise ValueError(f"The pseudo-Huber c must be > 0, got {c!r}")

  def distance(x_hat, target):
    r = x_hat - target
    squared_norm = jnp.sum(r ** 2, axis=tuple(range(1, r.ndim)))
    return jnp.sqrt(squared_norm + c ** 2) - c

  return distance


# name -> builder(sample shape) -> PixelDistance
PIXEL_DISTANCES: dict[str, Callable[[tuple[int, ...]], PixelDistance]] = {
    "l2": lambda shape: squared_l2,
    "pseudo_huber": lambda shape: pseudo_huber(pseudo_huber_c(shape)),
}


def make_distillation_objective(formulation: Formulation, network_fn: NetworkFn | None = None,
                                *, denoiser_fn: DenoiserFn | None = None, num_steps: int = 1,
                                sigma_max: float | None = None,
                                pixel_distance: str = "l2",
                                feature_distance: FeatureDistance | None = None,
                                pixel_weight: float = 1.0,
                                feature_weight: float = 1.0) -> Objective:
  """k-step distillation: pixel_weight·d(x̂, x) [+ feature_weight·d_φ(x̂, x)] per sample.

  x̂ = `euler_endpoint(D_student, batch["noise"], num_steps, sigma_max)`, x = batch["x"].
  sigma_max: the student's start (default the formulation's σ_max; genode's RF: 999).
  pixel_distance: a name in `PIXEL_DISTANCES`, "l2" (mean((x̂ − x)²), Liu et al.) or
  "pseudo_huber" (`pseudo_huber` with c = 0.00054·√D, D from the batch's sample shape).
  feature_distance: `d(φ_params, x̂, x) -> (B,)`, e.g. the LPIPS-style distance of the
  digits feature network (`genode.reflow.feature_loss`; Liu et al. use LPIPS for k = 1).
  Its parameters φ_params are the objective's one frozen argument:
  `objective(params, batch, key, φ_params)` (`make_train_step`'s `*frozen`), never a
  constant of the compiled step. Without it the objective takes no frozen argument.
  Metrics: loss, l2 (always, the diagnostic), the pixel distance under its name when it
  is not l2, and feature when feature_distance is given (batch means).
  """
  if pixel_distance not in PIXEL_DISTANCES:
    raise ValueError(f"Unknown pixel distance {pixel_distance!r}; valid: "
                     f"{list(PIXEL_DISTANCES)}")
  make_denoiser = _denoiser_fn(formulation, network_fn, denoiser_fn)
  sigma_max = formulation.sigma_max if sigma_max is None else float(sigma_max)
  rf_time_sigmas(num_steps, sigma_max)  # checks the arguments once
  num_frozen = 0 if feature_distance is None else 1

  def objective(params, batch, key, *frozen):
    if len(frozen) != num_frozen:
      raise ValueError(f"The distill objective takes {num_frozen} frozen argument(s) "
                       f"(the feature network's parameters), got {len(frozen)}")
    _coupling(batch, "distill")
    _, dropout_key = jax.random.split(key)
    denoiser = make_denoiser(params, batch, dropout_key)
    x_hat = euler_endpoint(denoiser, batch["noise"], num_steps, sigma_max)
    target = batch["x"]
    pixel = PIXEL_DISTANCES[pixel_distance](target.shape[1:])(x_hat, target)
    per_sample = pixel_weight * pixel
    metrics = {pixel_distance: jnp.mean(pixel)}
    if pixel_distance != "l2":
      metrics["l2"] = jnp.mean(squared_l2(x_hat, target))
    if feature_distance is not None:
      feature = feature_distance(frozen[0], x_hat, target)
      per_sample = per_sample + feature_weight * feature
      metrics["feature"] = jnp.mean(feature)
    metrics["loss"] = jnp.mean(per_sample)
    return per_sample, metrics

  return objective
