"""Closed-form couplings: the ideal (2-RF) denoiser of a deterministic linear coupling.

The couplings of a Gaussian teacher (`genode.gaussians.Gaussian`) are linear: its exact
PF-ODE map from x̄ = σ_max·z to σ = 0 is x = A·z + b with
A = σ_max·U diag(c) Uᵀ, c = √(λ/(λ + σ_max²)), b = μ − U diag(c) Uᵀ μ. For a deterministic
coupling x = A·z + b the noisy state x̄ = x + σz = (A + σI)·z + b determines z, so the
ideal denoiser (the posterior mean E[x | x̄], what reflow converges to) is

    D(x̄; σ) = b + A (A + σI)⁻¹ (x̄ − b),

and its rectified flow moves every point on a straight line (Liu, Gong & Liu 2022,
Theorem 3.6: a straight coupling is a fixed point of reflow): S(Z) = 0.
Shapes: x (B, d).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from genode.gaussians import Gaussian


@dataclasses.dataclass(frozen=True, eq=False)
class LinearCoupling:
  """x = A·z + b with A = U diag(scales) Uᵀ symmetric positive definite."""

  offset: jax.Array  # b (d,)
  scales: jax.Array  # eigenvalues of A (d,), > 0
  eigenvectors: jax.Array  # U (d, d), columns

  @classmethod
  def of_gaussian_flow(cls, gaussian: Gaussian, sigma_max: float) -> "LinearCoupling":
    """The coupling (z, flow(σ_max·z, σ_max, 0)) of a Gaussian teacher's exact PF-ODE."""
    lam, u, mu = gaussian.eigenvalues, gaussian.eigenvectors, gaussian.mean
    c = jnp.sqrt(lam / (lam + sigma_max**2))
    offset = mu - ((mu @ u) * c) @ u.T
    return cls(offset, sigma_max * c, u)

  def pair(self, z):
    """x = A·z + b, (B, d)."""
    return self.offset[None] + ((z @ self.eigenvectors) * self.scales[None]) @ self.eigenvectors.T

  def denoiser(self, x, sigma):
    """D(x̄; σ) = b + A(A + σI)⁻¹(x̄ − b); σ a scalar or (B,)."""
    sigma = jnp.reshape(sigma, jnp.shape(sigma) + (1,) * (jnp.ndim(sigma) > 0))
    scales, offset = self.scales[None], self.offset[None]
    shrink = scales / (scales + sigma)
    return offset + (((x - offset) @ self.eigenvectors) * shrink) @ self.eigenvectors.T
