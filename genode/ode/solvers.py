"""Custom `diffrax.AbstractSolver`s for diffusion sampling, in log-noise time λ = −log σ.

The probability-flow ODE dx/dσ = (x − D(x; σ))/σ (EDM eq. 4, s = 1) becomes, in
λ = −log σ (increasing as σ decreases, so diffrax integrates forward),

    dx/dλ = D(x; e^{−λ}) − x,

a semi-linear ODE whose linear part −x an exponential integrator solves exactly
(Lu et al. 2022, "DPM-Solver++", eq. 9 with α = 1). The solvers here take the
*data prediction* as their term: `diffrax.ODETerm(lambda lam, x, args: D(x; e^{−lam}))`,
i.e. `terms.vf(λ, x, args)` is D(x; σ = e^{−λ}); `func` returns the ODE's vector field
D − x. Each step makes a fixed number of denoiser calls (NFE per step below).

* `DPMSolverPP2M`: DPM-Solver++(2M), k-diffusion's `sample_dpmpp_2m` (1 NFE/step).
* `DPMSolverPP3M`: DPM-Solver++(3M) (1 NFE/step), the published update: k-diffusion's
  `sample_dpmpp_3m_sde` with η = 0 exactly (second order asymptotically, see the class);
  `taylor=True` is the Taylor-consistent third-order variant.
* `LinearMultistep` (1 NFE/step), in σ, with coefficients precomputed from the grid:
  k-diffusion's `sample_lms` on the derivatives d = (x − D)/σ (`lms_coefficients`; its
  term is the σ-time vector field), or the exponential-integrator form on the data
  prediction D (`lms_data_coefficients`).
* `EDMStochasticHeun`: EDM Algorithm 2 (Karras et al. 2022): churn, then a Heun step
  (2 NFE/step); the churn noise of step i is drawn from `fold_in(key, i)`.

The multistep history (previous denoised outputs or derivatives, and step sizes) lives in
the solver state. The final step to σ = 0 (λ = ∞) is not a diffrax step of the solvers in λ:
`genode.sampling.sample` makes it (k-diffusion's multistep samplers and Algorithm 2 both end with x = D(x; σ)).
"""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from numpy.polynomial import polynomial as P


def sigma_of_lambda(lam):
  """σ = e^{−λ}."""
  return jnp.exp(-lam)


def lambda_of_sigma(sigma):
  """λ = −log σ."""
  return -jnp.log(sigma)


class _ExponentialSolver(diffrax.AbstractSolver):
  """Shared parts: a data-prediction term, linear interpolation, vector field D − x."""

  term_structure: ClassVar = diffrax.AbstractTerm
  interpolation_cls: ClassVar = diffrax.LocalLinearInterpolation

  def func(self, terms, t0, y0, args):
    """dx/dλ = D(x; e^{−λ}) − x."""
    return terms.vf(t0, y0, args) - y0


class _History2(NamedTuple):
  denoised: jax.Array  # D at the previous step's start, like x
  h: jax.Array  # the previous step size in λ
  count: jax.Array  # steps taken so far


class DPMSolverPP2M(_ExponentialSolver):
  """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), as k-diffusion's `sample_dpmpp_2m`.

  x_{i+1} = (σ_{i+1}/σ_i)·x_i − (e^{−h_i} − 1)·D̃_i, h_i = λ_{i+1} − λ_i, with
  D̃_i = (1 + 1/(2r))·D_i − 1/(2r)·D_{i−1}, r = h_{i−1}/h_i, and D̃_0 = D_0 (first step).
  """

  def order(self, terms):
    return 2

  def init(self, terms, t0, t1, y0, args):
    dtype = jnp.result_type(t0, t1)
    return _History2(jnp.zeros_like(y0), jnp.ones((), dtype), jnp.zeros((), jnp.int32))

  def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
    del made_jump
    denoised = terms.vf(t0, y0, args)
    h = t1 - t0
    r = solver_state.h / h
    corrected = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * solver_state.denoised
    denoised_d = jnp.where(solver_state.count > 0, corrected, denoised)
    y1 = (sigma_of_lambda(t1) / sigma_of_lambda(t0)) * y0 - jnp.expm1(-h) * denoised_d
    state = _History2(denoised, h, solver_state.count + 1)
    return y1, None, dict(y0=y0, y1=y1), state, diffrax.RESULTS.successful


class _History3(NamedTuple):
  denoised_1: jax.Array  # D_{i−1}
  denoised_2: jax.Array  # D_{i−2}
  h_1: jax.Array  # h_{i−1}
  h_2: jax.Array  # h_{i−2}
  count: jax.Array


class DPMSolverPP3M(_ExponentialSolver):
  """DPM-Solver++(3M) (Lu et al. 2022), in k-diffusion's conventions.

  With the data-prediction form in λ the exact step is
  x(λ + h) = e^{−h}·x + (1 − e^{−h})·D + h·φ₂·D' − h²·φ₃·D'' + O(h⁴),
  φ₂ = (e^{−h} − 1)/h + 1, φ₃ = φ₂/h − ½. From the last three D's (step ratios
  r0 = h_{i−1}/h, r1 = h_{i−2}/h): d₁_0 = (D_i − D_{i−1})/r0, d₁_1 = (D_{i−1} − D_{i−2})/r1,
  d₁ = d₁_0 + (d₁_0 − d₁_1)·r0/(r0 + r1) ≈ h·D', and

      x_{i+1} = e^{−h}·x_i + (1 − e^{−h})·D_i + φ₂·d₁ − φ₃·d₂.

  The published update (the DPM-Solver reference code, k-diffusion's
  `sample_dpmpp_3m_sde` with η = 0, reproduced exactly) takes d₂ = (d₁_0 − d₁_1)/(r0 + r1)
  ≈ h²D''/2: its D'' term is half the Taylor one, so its local error is O(h³) and it
  converges at second order asymptotically, yet it is the more accurate of the two at
  5–32 steps on the benchmark's problems. `taylor=True` takes the second divided
  difference d₂ = 2·(d₁_0 − d₁_1)/(r0 + r1) ≈ h²D'' and converges at third order
  (tests/test_sampling.py measures both). The second step uses φ₂·d₁_0 only, the first
  none (as k-diffusion).
  """

  taylor: bool = False

  def order(self, terms):
    return 3 if self.taylor else 2

  def init(self, terms, t0, t1, y0, args):
    dtype = jnp.result_type(t0, t1)
    zeros, ones = jnp.zeros_like(y0), jnp.ones((), dtype)
    return _History3(zeros, zeros, ones, ones, jnp.zeros((), jnp.int32))

  def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
    del made_jump
    s = solver_state
    denoised = terms.vf(t0, y0, args)
    h = t1 - t0
    y1 = jnp.exp(-h) * y0 - jnp.expm1(-h) * denoised
    phi_2 = jnp.expm1(-h) / h + 1
    phi_3 = phi_2 / h - 0.5
    # Third order (two previous D's).
    r0, r1 = s.h_1 / h, s.h_2 / h
    d1_0 = (denoised - s.denoised_1) / r0
    d1_1 = (s.denoised_1 - s.denoised_2) / r1
    d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
    d2 = (2 if self.taylor else 1) * (d1_0 - d1_1) / (r0 + r1)
    third = phi_2 * d1 - phi_3 * d2
    # Second order (one previous D).
    second = phi_2 * d1_0
    y1 = y1 + jnp.where(s.count >= 2, third, jnp.where(s.count == 1, second, 0.0))
    state = _History3(denoised, s.denoised_1, h, s.h_1, s.count + 1)
    return y1, None, dict(y0=y0, y1=y1), state, diffrax.RESULTS.successful


class EDMStochasticHeun(_ExponentialSolver):
  """EDM Algorithm 2 (Karras et al. 2022): churn, then a Heun step in σ.

  On step i (σ_i → σ_{i+1}, both > 0):
    γ_i = min(S_churn/N, √2 − 1) if S_tmin ≤ σ_i ≤ S_tmax else 0,
    σ̂ = (1 + γ_i)·σ_i,  x̂ = x_i + √(σ̂² − σ_i²)·S_noise·z,  z ~ N(0, I) from fold_in(key, i),
    d = (x̂ − D(x̂; σ̂))/σ̂,  x_E = x̂ + (σ_{i+1} − σ̂)·d,
    x_{i+1} = x̂ + (σ_{i+1} − σ̂)·(d + (x_E − D(x_E; σ_{i+1}))/σ_{i+1})/2.
  N is the number of steps of the whole grid (including a last step to 0). With
  S_churn = 0 this is EDM Algorithm 1 (deterministic Heun).
  """

  num_steps: int
  key: jax.Array
  S_churn: float = 0.0
  S_tmin: float = 0.0
  S_tmax: float = math.inf
  S_noise: float = 1.0

  def order(self, terms):
    return 2

  def init(self, terms, t0, t1, y0, args):
    return jnp.zeros((), jnp.int32)

  def churn(self, index, x, sigma):
    """(x̂, σ̂): Algorithm 2 lines 4–6 at step `index`."""
    gamma = jnp.where((self.S_tmin <= sigma) & (sigma <= self.S_tmax),
                      jnp.minimum(self.S_churn / self.num_steps, math.sqrt(2) - 1), 0.0)
    sigma_hat = sigma * (1 + gamma)
    noise = jax.random.normal(jax.random.fold_in(self.key, index), x.shape, x.dtype)
    x_hat = x + jnp.sqrt(sigma_hat**2 - sigma**2) * self.S_noise * noise
    return x_hat, sigma_hat

  def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
    del made_jump
    sigma, sigma_next = sigma_of_lambda(t0), sigma_of_lambda(t1)
    x_hat, sigma_hat = self.churn(solver_state, y0, sigma)
    d = (x_hat - terms.vf(lambda_of_sigma(sigma_hat), x_hat, args)) / sigma_hat
    x_euler = x_hat + (sigma_next - sigma_hat) * d
    d_next = (x_euler - terms.vf(t1, x_euler, args)) / sigma_next
    y1 = x_hat + (sigma_next - sigma_hat) * (0.5 * d + 0.5 * d_next)
    return y1, None, dict(y0=y0, y1=y1), solver_state + 1, diffrax.RESULTS.successful


def lms_coefficients(sigmas, order: int = 4) -> np.ndarray:
  """Linear multistep weights on a concrete grid: (N, order) for N = len(sigmas) − 1 steps.

  Step i (σ_i → σ_{i+1}) uses the derivatives d_{i−j}, j < p_i = min(i + 1, order), with
  weights c_ij = ∫_{σ_i}^{σ_{i+1}} ℓ_j(τ) dτ, ℓ_j the Lagrange basis polynomial on the nodes
  σ_i, …, σ_{i−p_i+1} that is 1 at σ_{i−j} (Adams–Bashforth on a variable grid;
  k-diffusion's `linear_multistep_coeff`, there by `scipy.integrate.quad`). Integrated
  exactly here with `numpy.polynomial`, in the scaled variable u = (τ − σ_i)/(σ_{i+1} − σ_i),
  which keeps the polynomials well conditioned on grids spanning 80 → 0.002. Entries
  j ≥ p_i are 0.
  """
  sigmas = np.asarray(sigmas, np.float64)
  if sigmas.ndim != 1 or sigmas.shape[0] < 2:
    raise ValueError(f"Expected a 1-D grid of at least 2 σ's, got shape {sigmas.shape}")
  if not isinstance(order, int) or order < 1:
    raise ValueError(f"The LMS order must be a positive integer, got {order!r}")
  coefficients = np.zeros((sigmas.shape[0] - 1, order))
  for i in range(sigmas.shape[0] - 1):
    h = sigmas[i + 1] - sigmas[i]
    nodes = (sigmas[i - np.arange(min(i + 1, order))] - sigmas[i]) / h  # u of σ_{i−j}
    for j, node in enumerate(nodes):
      others = np.delete(nodes, j)
      basis = P.polyfromroots(others) / np.prod(node - others)
      antiderivative = P.polyint(basis)
      coefficients[i, j] = h * (P.polyval(1.0, antiderivative) - P.polyval(0.0, antiderivative))
  return coefficients


def lms_data_coefficients(sigmas, order: int = 4, num_nodes: int = 64):
  """Weights of `lms_data` on a concrete grid: (decay (N,), weights (N, order)).

  dx/dσ = (x − D)/σ is d(x/σ)/dσ = −D/σ², so exactly
  x_{i+1} = (σ_{i+1}/σ_i)·x_i − σ_{i+1}·∫_{σ_i}^{σ_{i+1}} D(τ)/τ² dτ. With D replaced by
  its Lagrange interpolant in σ on D_i, …, D_{i−p_i+1} (p_i = min(i + 1, order)):

      x_{i+1} = decay_i·x_i + Σ_j weights_ij·D_{i−j},  decay_i = σ_{i+1}/σ_i,
      weights_ij = −σ_{i+1}·∫_{σ_i}^{σ_{i+1}} ℓ_j(τ)/τ² dτ,

  the linear part integrated exactly (an exponential integrator, as DPM-Solver++, but
  with D polynomial in σ rather than in λ = −log σ; DEIS's Adams–Bashforth form, Zhang &
  Chen 2023, with the data prediction). The integrals are Gauss–Legendre sums in log τ
  with `num_nodes` nodes (to float64 rounding: the integrand is smooth). A step to σ = 0
  is x = D(x; σ_i) (decay 0, weight 1 on D_i), the final denoise of the other solvers.
  """
  sigmas = np.asarray(sigmas, np.float64)
  if sigmas.ndim != 1 or sigmas.shape[0] < 2:
    raise ValueError(f"Expected a 1-D grid of at least 2 σ's, got shape {sigmas.shape}")
  if not isinstance(order, int) or order < 1:
    raise ValueError(f"The multistep order must be a positive integer, got {order!r}")
  gauss_x, gauss_w = np.polynomial.legendre.leggauss(num_nodes)
  decay = np.zeros(sigmas.shape[0] - 1)
  weights = np.zeros((sigmas.shape[0] - 1, order))
  for i in range(sigmas.shape[0] - 1):
    if sigmas[i + 1] == 0:
      weights[i, 0] = 1.0
      continue
    log_a, log_b = np.log(sigmas[i]), np.log(sigmas[i + 1])
    tau = np.exp(log_a + (log_b - log_a) * (gauss_x + 1) / 2)
    quad_w = gauss_w * (log_b - log_a) / 2 / tau  # dτ/τ² = dv/τ, v = log τ
    nodes = sigmas[i - np.arange(min(i + 1, order))]
    for j, node in enumerate(nodes):
      others = np.delete(nodes, j)
      basis = np.prod((tau[:, None] - others) / (node - others), axis=1)
      weights[i, j] = -sigmas[i + 1] * np.sum(quad_w * basis)
    decay[i] = sigmas[i + 1] / sigmas[i]
  return decay, weights


def lms_data_coefficients_traced(sigmas, order: int = 4, num_nodes: int = 64):
  """`lms_data_coefficients` in jnp: differentiable in a (traced) grid (M,), same values.

  The same Gauss–Legendre sums (equal to the NumPy ones to float64 rounding); a step to
  σ = 0 (only the last one can be) is again decay 0, weight 1 on D_i, selected with
  `jnp.where` on a safe dummy σ so that its gradient stays finite.
  """
  if not isinstance(order, int) or order < 1:
    raise ValueError(f"The multistep order must be a positive integer, got {order!r}")
  gauss_x, gauss_w = np.polynomial.legendre.leggauss(num_nodes)
  decays, rows = [], []
  for i in range(sigmas.shape[0] - 1):
    to_zero = sigmas[i + 1] == 0
    sigma_next = jnp.where(to_zero, sigmas[i] / 2, sigmas[i + 1])
    log_a, log_b = jnp.log(sigmas[i]), jnp.log(sigma_next)
    tau = jnp.exp(log_a + (log_b - log_a) * (gauss_x + 1) / 2)
    quad_w = gauss_w * (log_b - log_a) / 2 / tau  # dτ/τ² = dv/τ, v = log τ
    nodes = [sigmas[i - j] for j in range(min(i + 1, order))]
    row = []
    for j, node in enumerate(nodes):
      basis = jnp.ones_like(tau)
      for k, other in enumerate(nodes):
        if k != j:
          basis = basis * (tau - other) / (node - other)
      row.append(-sigma_next * jnp.sum(quad_w * basis))
    row = jnp.stack(row + [jnp.zeros((), sigmas.dtype)] * (order - len(row)))
    first = jnp.zeros((order,), sigmas.dtype).at[0].set(1)
    rows.append(jnp.where(to_zero, first, row))
    decays.append(jnp.where(to_zero, 0.0, sigma_next / sigmas[i]))
  return jnp.stack(decays), jnp.stack(rows)


class _LMSState(NamedTuple):
  history: jax.Array  # (order, ...) g_i, g_{i−1}, …, newest first
  count: jax.Array  # steps taken so far


class LinearMultistep(diffrax.AbstractSolver):
  """Linear multistep in σ: x_{i+1} = decay_i·x_i + Σ_j weights_ij·g_{i−j}, g = the term.

  * `lms` (k-diffusion's `sample_lms`): the term is the σ-time vector field
    d = (x − D(x; σ))/σ (EDM eq. 4), decay = 1, weights from `lms_coefficients`.
  * `lms_data`: the term is the data prediction D(x; σ), decay and weights from
    `lms_data_coefficients` (the linear part integrated exactly).

  One evaluation per step, at σ_i only, so a step to a final σ = 0 is an ordinary step.
  `decay` (N,) and `weights` (N, order) belong to one concrete grid (row i for step i).
  """

  decay: jax.Array  # (N,)
  weights: jax.Array  # (N, order)
  term_structure: ClassVar = diffrax.AbstractTerm
  interpolation_cls: ClassVar = diffrax.LocalLinearInterpolation

  def order(self, terms):
    return self.weights.shape[1]

  def func(self, terms, t0, y0, args):
    return terms.vf(t0, y0, args)

  def init(self, terms, t0, t1, y0, args):
    history = jnp.zeros((self.weights.shape[1],) + y0.shape, y0.dtype)
    return _LMSState(history, jnp.zeros((), jnp.int32))

  def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
    del made_jump
    g = terms.vf(t0, y0, args).astype(y0.dtype)
    history = jnp.concatenate([g[None], solver_state.history[:-1]])
    i = solver_state.count
    y1 = (self.decay[i].astype(y0.dtype) * y0
          + jnp.tensordot(self.weights[i].astype(y0.dtype), history, axes=1))
    state = _LMSState(history, i + 1)
    return y1, None, dict(y0=y0, y1=y1), state, diffrax.RESULTS.successful
