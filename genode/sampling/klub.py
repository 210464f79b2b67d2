"""Align Your Steps' KL upper bound (KLUB) of a σ grid, estimated on forward-noised data.

Sabour, Fidler & Kreis 2024 (AYS, §3.2; derivation in their App. A.2). With σ(t) = t and
s(t) = 1 the generative SDE is dx = −2 t ∇log p(x; t) dt + √(2t) dw̄, and ∇log p = (D − x)/t²
(EDM eq. 3). A solver step from σ_i to σ_{i+1} solves exactly the linearised SDE whose
denoiser is frozen at the step's start, D(x_{σ_i}; σ_i) (stochastic DDIM). Girsanov's
theorem bounds the KL divergence of the true path measure from the linearised one by
½ ∫ E‖f_true − f_lin‖²/g² dt with drift difference 2(D(x_t; t) − D(x_{σ_i}; σ_i))/t and
g² = 2t, i.e. (AYS's KLUB)

    KLUB(σ_0 … σ_{n−1}) = Σ_i ∫_{σ_{i+1}}^{σ_i} t⁻³ E ‖D(x_t; t) − D(x_{σ_i}; σ_i)‖² dt,

the expectation over the true process: x_0 from the data, x_{σ_i} = x_0 + σ_i·ε and, given
both, x_t on the forward process's Brownian bridge (variance t² at t):

    x_t = x_0 + (t/σ_i)²(x_{σ_i} − x_0) + t·√(1 − (t/σ_i)²)·ε′.

Here the ∫ dt is Gauss–Legendre in log t on each interval (t = σ_{i+1}(σ_i/σ_{i+1})^u,
dt = t·h_i du, h_i = log(σ_i/σ_{i+1})), the E is the mean over data rows with fixed draws
ε, ε′ (reparametrised: the estimate is a smooth, deterministic function of the grid), and
‖·‖² sums over dimensions, so the value is in nats. The final step σ_min → 0 (the final
denoise) lies outside the integral, as in AYS. For N(μ, Σ) data and its exact denoiser the
KLUB has a closed form (`genode.gaussians.Gaussian.klub`).

The bound is solver-independent: it is AYS's (the first-order linearisation); the grid
it gives is used with any solver.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]


def gauss_legendre_01(num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
  """Nodes u_k ∈ (0, 1) and weights w_k (Σ w_k = 1) of the num_nodes-point rule on [0, 1]."""
  if int(num_nodes) != num_nodes or num_nodes < 1:
    raise ValueError(f"num_nodes must be a positive integer, got {num_nodes!r}")
  nodes, weights = np.polynomial.legendre.leggauss(int(num_nodes))
  return (nodes + 1) / 2, weights / 2


def klub_noise(key, data_shape, dtype=None) -> tuple[jax.Array, jax.Array]:
  """(ε, ε′) of shape (B, ...) each: the draws of x_{σ_i} and of the bridge point x_t."""
  dtype = dtype or jnp.result_type(float)
  first, second = jax.random.split(key)
  return (jax.random.normal(first, tuple(data_shape), dtype),
          jax.random.normal(second, tuple(data_shape), dtype))


def klub(denoiser: Denoiser, positive, x0, eps, eps_bridge, num_nodes: int = 4):
  """The KLUB (nats) of the positive σ's (n,) σ_max > … > σ_min; traceable in `positive`.

  x0 (B, ...) are data examples (the training split), eps and eps_bridge (B, ...) standard
  normal draws (`klub_noise`). The denoiser is called twice, on batches of B·(n − 1)·K
  and B·(n − 1) rows with per-row σ's (K = num_nodes).
  """
  positive = jnp.asarray(positive, x0.dtype)
  u, w = gauss_legendre_01(num_nodes)
  start, end = positive[:-1], positive[1:]  # (n − 1,) σ_i > σ_{i+1}
  h = jnp.log(start) - jnp.log(end)  # (n − 1,)
  t = end[:, None] * jnp.exp(h[:, None] * u[None, :])  # (n − 1, K) nodes in log t
  b, m, k = x0.shape[0], start.shape[0], u.shape[0]
  feature = (1,) * (x0.ndim - 1)

  x_start = x0[None] + start.reshape((m, 1) + feature) * eps[None]  # (m, B, ...)
  d_start = denoiser(x_start.reshape((m * b,) + x0.shape[1:]), jnp.repeat(start, b))
  d_start = d_start.reshape((m, 1, b) + x0.shape[1:])

  ratio = (t / start[:, None]).reshape((m, k, 1) + feature)  # t/σ_i
  t_b = t.reshape((m, k, 1) + feature)
  x_t = (x0[None, None] + ratio**2 * (x_start[:, None] - x0[None, None])
         + t_b * jnp.sqrt(1 - ratio**2) * eps_bridge[None, None])  # (m, K, B, ...)
  d_t = denoiser(x_t.reshape((m * k * b,) + x0.shape[1:]), jnp.repeat(t.reshape(-1), b))
  diff = d_t.reshape((m, k, b) + x0.shape[1:]) - d_start
  sq = jnp.mean(jnp.sum(diff.reshape((m, k, b, -1)) ** 2, axis=-1), axis=-1)  # (m, K)
  # ∫ t⁻³ g(t) dt over [σ_{i+1}, σ_i] = h_i ∫₀¹ t⁻² g(t) du.
  return jnp.sum(h * jnp.sum(jnp.asarray(w, x0.dtype)[None] * sq / t**2, axis=-1))
