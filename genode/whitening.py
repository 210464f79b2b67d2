"""A data-fitted affine bijector: whitening x → z = L⁻¹(x − μ), with Σ = L Lᵀ.

μ and Σ are the mean and covariance of the (dequantized) training data, so a density
q(z) on the whitened variable is the density on x

    log p(x) = log q(L⁻¹(x − μ)) − Σᵢ log Lᵢᵢ                  (change of variables),

and q = N(0, I) makes p the fitted Gaussian N(μ, Σ): a flow on z (genode.ffjord's
`cnf.whitening`) starts from that Gaussian and learns the residual.

Kinds: "full" (L the Cholesky factor of Σ), "diagonal" (L = diag(σᵢ), per-dimension
standardization), "none" (no whitening; `fit` is not called). The statistics are those of
the dequantized variable x = 2(k + u)/256 − 1 in closed form (the uniform u adds
(2/256)²/12 to each variance, so Σ is positive definite even where a pixel is constant),
or of x itself for continuous data; the covariance is the maximum-likelihood one (÷ N).
They are computed once, in float64, and returned as float32 arrays that the caller
stores (the cnf family keeps them in its parameters, so a restore restores them).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("none", "diagonal", "full")


def check_kind(kind: str) -> str:
  if kind not in KINDS:
    raise ValueError(f"Unknown whitening {kind!r}; valid: {list(KINDS)}")
  return kind


def fit(x, kind: str, num_levels: int = 0) -> dict[str, jax.Array]:
  """{"mean": μ (d,), "scale_tril": L (d, d)} of the examples x (N, ...).

  num_levels > 0: x are quantized values k·2/(num_levels − 1) − 1 in [−1, 1] (genode's
  image convention), and the statistics are those of their uniform dequantization
  2(k + u)/num_levels − 1 (`genode.bits.dequantize`); 0: of x as they are. Works on
  concrete arrays and under tracing (`jax.eval_shape`: a float64 numpy callback).
  """
  check_kind(kind)
  if kind == "none":
    raise ValueError("whitening.fit: kind 'none' has no statistics")
  x = jnp.reshape(x, (x.shape[0], -1))
  dim = x.shape[1]
  shapes = {"mean": jax.ShapeDtypeStruct((dim,), jnp.float32),
            "scale_tril": jax.ShapeDtypeStruct((dim, dim), jnp.float32)}
  return jax.pure_callback(lambda v: _fit_numpy(np.asarray(v), kind, num_levels), shapes, x)


def _fit_numpy(x: np.ndarray, kind: str, num_levels: int) -> dict[str, np.ndarray]:
  x = x.astype(np.float64)
  if num_levels:
    levels = np.round((x + 1.0) * ((num_levels - 1) / 2.0))
    step = 2.0 / num_levels
    x = (levels + 0.5) * step - 1.0  # E[x | k]: the dequantized variable's conditional mean
    extra = step**2 / 12.0  # Var[u]·step²
  else:
    extra = 0.0
  mean = x.mean(0)
  centred = x - mean
  cov = centred.T @ centred / len(x) + extra * np.eye(x.shape[1])
  if kind == "diagonal":
    scale = np.diag(np.sqrt(np.diag(cov)))
  else:
    scale = np.linalg.cholesky(cov)
  return {"mean": mean.astype(np.float32), "scale_tril": scale.astype(np.float32)}


def whiten(stats: dict, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(z = L⁻¹(x − μ) with x's shape, log|det ∂z/∂x| = −Σᵢ log Lᵢᵢ ()) for x (B, ...)."""
  flat = jnp.reshape(x, (x.shape[0], -1)) - stats["mean"].astype(x.dtype)[None]
  scale = stats["scale_tril"].astype(x.dtype)
  z = jax.scipy.linalg.solve_triangular(scale, flat.T, lower=True).T
  return jnp.reshape(z, x.shape), -jnp.sum(jnp.log(jnp.diagonal(scale)))


def unwhiten(stats: dict, z: jax.Array) -> jax.Array:
  """x = μ + L z, the inverse of `whiten`, for z (B, ...)."""
  flat = jnp.reshape(z, (z.shape[0], -1))
  x = flat @ stats["scale_tril"].astype(z.dtype).T + stats["mean"].astype(z.dtype)[None]
  return jnp.reshape(x, z.shape)
