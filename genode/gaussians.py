"""Closed-form problems: Gaussian and Gaussian-mixture data with their ideal denoisers.

For data y ~ N(μ, Σ) the noisy marginal at σ is N(μ, Σ + σ²I) and the ideal denoiser
is the posterior mean D(x; σ) = μ + Σ(Σ + σ²I)⁻¹(x − μ). The probability-flow ODE
dx/dσ = (x − D(x; σ))/σ (EDM eq. 4 with σ(t) = t, s = 1) is then linear, and in the
eigenbasis Σ = U diag(λ) Uᵀ its flow from σ_a to σ_b is

    x(σ_b) = μ + U diag(√((λ + σ_b²)/(λ + σ_a²))) Uᵀ (x(σ_a) − μ),

so every sampler and the likelihood have exact answers (DESIGN.md §4). A mixture of
Gaussians has a closed-form (nonlinear) denoiser and marginal density, but no closed
flow: it is checked against a tight adaptive reference solve.

Shapes: x is (B, d).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class Gaussian:
  """Data N(mean, U diag(eigenvalues) Uᵀ)."""

  mean: jax.Array  # (d,)
  eigenvalues: jax.Array  # (d,)
  eigenvectors: jax.Array  # (d, d), columns

  @classmethod
  def random(cls, key, dim: int, dtype=None) -> "Gaussian":
    """A Gaussian with eigenvalues spread over [0.01, 4] (log-uniform) and a random basis."""
    mean_key, rot_key = jax.random.split(key)
    dtype = dtype or jnp.result_type(float)
    mean = 0.5 * jax.random.normal(mean_key, (dim,), dtype)
    eigenvalues = jnp.logspace(-2, np.log10(4.0), dim, dtype=dtype)
    q, _ = jnp.linalg.qr(jax.random.normal(rot_key, (dim, dim), dtype))
    return cls(mean, eigenvalues, q)

  @property
  def dim(self) -> int:
    return self.mean.shape[0]

  def _apply_spectral(self, x, factor):
    """μ + U diag(factor) Uᵀ (x − μ)."""
    z = (x - self.mean[None]) @ self.eigenvectors
    factor = jnp.reshape(factor, (1,) * (z.ndim - jnp.ndim(factor)) + jnp.shape(factor))
    return self.mean[None] + (z * factor) @ self.eigenvectors.T

  def denoiser(self, x, sigma):
    """D(x; σ) = μ + Σ(Σ + σ²I)⁻¹(x − μ)."""
    sigma, lam = jnp.asarray(sigma), self.eigenvalues
    if sigma.ndim:  # per-sample σ (B,): factors (B, d)
      sigma, lam = sigma[:, None], lam[None]
    return self._apply_spectral(x, lam / (lam + sigma**2))

  def flow(self, x, sigma_from, sigma_to):
    """The exact PF-ODE solution: x(σ_to) given x(σ_from)."""
    lam = self.eigenvalues
    return self._apply_spectral(x, jnp.sqrt((lam + sigma_to**2) / (lam + sigma_from**2)))

  def flow_log_det(self, sigma_from, sigma_to):
    """log|det ∂x(σ_to)/∂x(σ_from)|, the same for every x."""
    lam = self.eigenvalues
    return 0.5 * jnp.sum(jnp.log((lam + sigma_to**2) / (lam + sigma_from**2)))

  def log_prob(self, x, sigma=0.0):
    """log N(x; μ, Σ + σ²I), the noisy marginal at σ."""
    var = self.eigenvalues + sigma**2
    z = (x - self.mean[None]) @ self.eigenvectors
    return -0.5 * (jnp.sum(z**2 / var[None], -1) + jnp.sum(jnp.log(2 * jnp.pi * var)))

  def model_log_prob(self, x, sigma_min, sigma_max):
    """The PF-ODE model's exact log-density of x at σ_min, prior N(0, σ_max² I).

    log p(x) = log N(x_T; 0, σ_max² I) + log|det ∂x_T/∂x|, x_T = flow(x, σ_min, σ_max).
    """
    x_t = self.flow(x, sigma_min, sigma_max)
    d = self.dim
    prior = -0.5 * jnp.sum(x_t**2, -1) / sigma_max**2 - 0.5 * d * jnp.log(2 * jnp.pi * sigma_max**2)
    return prior + self.flow_log_det(sigma_min, sigma_max)

  def klub(self, positive):
    """AYS's KL upper bound (nats; `genode.sampling.klub`) of a grid σ_0 > … > σ_{n−1} > 0.

    With D(x; t) − D(x_{σ_i}; σ_i) Gaussian under the forward process, each eigenvalue λ
    and interval [s, T] = [σ_{i+1}, σ_i] contribute ∫_s^T λ²(T² − t²)/(t³(λ + t²)(λ + T²)) dt
    = ½(y − log(1 + y)), y = λ(1/s² − 1/T²)/(1 + λ/T²) ≥ 0, zero only for s = T.
    """
    positive = jnp.asarray(positive)
    big, small = positive[:-1, None] ** 2, positive[1:, None] ** 2
    lam = self.eigenvalues[None]
    y = lam * (1 / small - 1 / big) / (1 + lam / big)
    return 0.5 * jnp.sum(y - jnp.log1p(y))

  def sample(self, key, num: int, sigma=0.0):
    """Samples of N(μ, Σ + σ²I)."""
    z = jax.random.normal(key, (num, self.dim), self.mean.dtype)
    return self.mean[None] + (z * jnp.sqrt(self.eigenvalues + sigma**2)[None]) @ self.eigenvectors.T


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianMixture:
  """Data Σ_k w_k N(μ_k, s_k² I): a nonlinear ideal denoiser in closed form."""

  weights: jax.Array  # (K,)
  means: jax.Array  # (K, d)
  stds: jax.Array  # (K,)

  @classmethod
  def ring(cls, num_components: int = 8, radius: float = 2.0, std: float = 0.1,
           dtype=None) -> "GaussianMixture":
    """The 2-D "8 Gaussians" toy: equal weights on a circle."""
    dtype = dtype or jnp.result_type(float)
    angles = 2 * jnp.pi * jnp.arange(num_components, dtype=dtype) / num_components
    means = radius * jnp.stack([jnp.cos(angles), jnp.sin(angles)], -1)
    return cls(jnp.full((num_components,), 1 / num_components, dtype), means,
               jnp.full((num_components,), std, dtype))

  @property
  def dim(self) -> int:
    return self.means.shape[1]

  def _component_log_probs(self, x, sigma):
    var = self.stds**2 + sigma**2  # (K,)
    sq = jnp.sum((x[:, None, :] - self.means[None]) ** 2, -1)  # (B, K)
    return (jnp.log(self.weights)[None]
            - 0.5 * (sq / var[None] + self.dim * jnp.log(2 * jnp.pi * var)[None]))

  def log_prob(self, x, sigma=0.0):
    """log p(x; σ) of the noisy marginal."""
    return jax.nn.logsumexp(self._component_log_probs(x, sigma), -1)

  def denoiser(self, x, sigma):
    """D(x; σ) = Σ_k p(k | x; σ)·(μ_k + s_k²/(s_k² + σ²)·(x − μ_k))."""
    sigma = jnp.asarray(sigma)
    if sigma.ndim:  # per-sample σ: vmap the scalar form
      return jax.vmap(lambda xi, si: self.denoiser(xi[None], si)[0])(x, sigma)
    posterior = jax.nn.softmax(self._component_log_probs(x, sigma), -1)  # (B, K)
    shrink = (self.stds**2 / (self.stds**2 + sigma**2))[None, :, None]  # (1, K, 1)
    per_component = self.means[None] + shrink * (x[:, None, :] - self.means[None])  # (B, K, d)
    return jnp.einsum("bk,bkd->bd", posterior, per_component)

  def sample(self, key, num: int, sigma=0.0):
    comp_key, noise_key = jax.random.split(key)
    k = jax.random.choice(comp_key, self.weights.shape[0], (num,), p=self.weights)
    std = jnp.sqrt(self.stds[k] ** 2 + sigma**2)[:, None]
    return self.means[k] + std * jax.random.normal(noise_key, (num, self.dim), self.means.dtype)
