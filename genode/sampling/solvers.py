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
* `DPMSolverPP3M`: DPM-Solver++(3M) (1 NFE/step), third order; `kdiffusion=True` is
  k-diffusion's `sample_dpmpp_3m_sde` with η = 0 exactly (second order, see the class).
* `EDMStochasticHeun`: EDM Algorithm 2 (Karras et al. 2022): churn, then a Heun step
  (2 NFE/step); the churn noise of step i is drawn from `fold_in(key, i)`.

The multistep history (previous denoised outputs and step sizes) lives in the solver
state. The final step to σ = 0 (λ = ∞) is not a diffrax step: `genode.sampling.sample`
makes it (k-diffusion's multistep samplers and Algorithm 2 both end with x = D(x; σ)).
"""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import diffrax
import jax
import jax.numpy as jnp


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
  """DPM-Solver++(3M) (Lu et al. 2022), third order, in k-diffusion's conventions.

  With the data-prediction form in λ the exact step is
  x(λ + h) = e^{−h}·x + (1 − e^{−h})·D + h·φ₂·D' − h²·φ₃·D'' + O(h⁴),
  φ₂ = (e^{−h} − 1)/h + 1, φ₃ = φ₂/h − ½. From the last three D's (step ratios
  r0 = h_{i−1}/h, r1 = h_{i−2}/h): d₁_0 = (D_i − D_{i−1})/r0, d₁_1 = (D_{i−1} − D_{i−2})/r1,
  d₁ = d₁_0 + (d₁_0 − d₁_1)·r0/(r0 + r1) ≈ h·D', and the second divided difference
  d₂ = 2·(d₁_0 − d₁_1)/(r0 + r1) ≈ h²·D'':

      x_{i+1} = e^{−h}·x_i + (1 − e^{−h})·D_i + φ₂·d₁ − φ₃·d₂.

  The second step uses φ₂·d₁_0 only, the first none (as k-diffusion).

  `kdiffusion=True` reproduces k-diffusion's `sample_dpmpp_3m_sde` (η = 0) exactly,
  which (like the DPM-Solver reference code) uses d₂ = (d₁_0 − d₁_1)/(r0 + r1) ≈ h²D''/2:
  its D'' term is half the Taylor one, so its local error is O(h³) and it converges at
  second order only (tests/test_sampling.py measures both).
  """

  kdiffusion: bool = False

  def order(self, terms):
    return 2 if self.kdiffusion else 3

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
    d2 = (1 if self.kdiffusion else 2) * (d1_0 - d1_1) / (r0 + r1)
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


class FirstStepRetryCounter(diffrax.AbstractAdaptiveStepSizeController):
  """A step size controller that also counts the retries of the first step.

  FSAL Runge–Kutta solvers (Tsit5, Dopri5) evaluate the vector field 6 times per step
  plus once for the first stage of the very first step, which they redo each time
  that first step is rejected. So NFE = 6·num_steps + 1 + retries, with `retries` (steps
  rejected before the first accepted one) read from this controller's final state
  (`SaveAt(controller_state=True)`).
  """

  controller: diffrax.AbstractAdaptiveStepSizeController

  @property
  def rtol(self):
    return self.controller.rtol

  @property
  def atol(self):
    return self.controller.atol

  @property
  def norm(self):
    return self.controller.norm

  def wrap(self, direction):
    return FirstStepRetryCounter(self.controller.wrap(direction))

  def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
    t_next, state = self.controller.init(terms, t0, t1, y0, dt0, args, func, error_order)
    return t_next, (state, jnp.zeros((), bool), jnp.zeros((), jnp.int32))

  def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order,
                      controller_state):
    state, accepted_any, retries = controller_state
    keep, t_prev, t_next, made_jump, state, result = self.controller.adapt_step_size(
        t0, t1, y0, y1_candidate, args, y_error, error_order, state)
    retries = retries + jnp.where(accepted_any | keep, 0, 1).astype(jnp.int32)
    return keep, t_prev, t_next, made_jump, (state, accepted_any | keep, retries), result
