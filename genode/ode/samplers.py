"""How each sampler integrates the PF-ODE over a positive σ grid: one diffrax solve each.

A route is `integrate(problem, x, options) -> (x̄ at problem.sigmas[-1], Counts)`, or,
with `problem.trajectory`, (M, B, ...) x̄ at every σ of the grid. The routes are the
private callables of the public solver records (`genode.sampling.SOLVERS`); the final
step to σ = 0 and the grid checks are `genode.sampling.sample`'s.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from genode.denoiser import Denoiser
from genode.formulations import Formulation
from genode.ode import adaptive
from genode.ode import solvers
from genode.ode import terms
from genode.ode.fixed import grid_counts, solve_on_grid


class GridProblem(NamedTuple):
  denoiser: Denoiser
  sigmas: jax.Array  # (M,) strictly decreasing, M ≥ 2, positive (a last 0 only if the
  #                    method has no separate final step)
  num_steps: int  # steps of the caller's whole grid (incl. a final step to 0)
  key: Any
  formulation: Formulation | None
  prepared: Any  # the method's `prepare` output (e.g. LMS coefficients), or None
  trajectory: bool = False  # return x̄ at every grid point (M, B, ...)


def _ode_in_coordinates(problem: GridProblem, x):
  """(vector field, times, y0, map back to x̄): σ-time, or the formulation's own t."""
  f = problem.formulation
  if f is None:
    return terms.SigmaODE(problem.denoiser), problem.sigmas, x, lambda y, t: y
  ts = f.sigma_inv(problem.sigmas)

  def to_xbar(y, t):  # y (B, ...) at t (), or (M, B, ...) at t (M,)
    s = f.scale(t)
    return y / s.reshape(s.shape + (1,) * (y.ndim - s.ndim))

  return terms.NativeODE(problem.denoiser, f), ts, f.scale(ts[0]) * x, to_xbar


def runge_kutta(solver: diffrax.AbstractSolver, nfe_per_step: int):
  """Euler or Heun on the fixed grid, in σ or the formulation's t."""

  def integrate(problem: GridProblem, x, options):
    del options
    vector_field, ts, y0, to_xbar = _ode_in_coordinates(problem, x)
    y, sol = solve_on_grid(diffrax.ODETerm(vector_field), solver, ts, y0,
                           trajectory=problem.trajectory)
    return to_xbar(y, ts if problem.trajectory else ts[-1]), grid_counts(sol, nfe_per_step)

  return integrate


def adaptive_runge_kutta(solver: str):
  """Tsit5/Dopri5 from the first to the last σ of the grid, PIDController(rtol, atol).

  The first step size is Hairer's starting step (`genode.ode.adaptive.initial_step`);
  NFE as in `genode.ode.adaptive`: 6 per step (rejected ones too), 2 for the starting
  step size, 1 for the FSAL start, 1 per retry of a rejected first step.
  """

  def integrate(problem: GridProblem, x, options):
    vector_field, ts, y0, to_xbar = _ode_in_coordinates(problem, x)
    y1, counts = adaptive.solve_adaptive(vector_field, y0, ts[0], ts[-1], solver=solver,
                                         rtol=options.rtol, atol=options.atol,
                                         max_steps=options.max_steps)
    return to_xbar(y1, ts[-1]), counts

  return integrate


def multistep(solver: diffrax.AbstractSolver):
  """DPM-Solver++ in λ = −log σ on the fixed grid (1 NFE per step)."""

  def integrate(problem: GridProblem, x, options):
    del options
    ts = solvers.lambda_of_sigma(problem.sigmas)
    y, sol = solve_on_grid(diffrax.ODETerm(terms.DataPrediction(problem.denoiser)), solver,
                           ts, x, trajectory=problem.trajectory)
    return y, grid_counts(sol, 1)

  return integrate


def lms_coefficients(sigmas: np.ndarray, options):
  weights = solvers.lms_coefficients(sigmas, options.order)
  return np.ones(weights.shape[0]), weights


def lms_data_coefficients(sigmas: np.ndarray, options):
  return solvers.lms_data_coefficients(sigmas, options.order)


def lms_data_coefficients_traced(sigmas, options):
  return solvers.lms_data_coefficients_traced(sigmas, options.order)


def linear_multistep(term: type):
  """`LinearMultistep` in σ over the whole grid, a final 0 included (1 NFE/step)."""

  def integrate(problem: GridProblem, x, options):
    del options
    solver = solvers.LinearMultistep(*problem.prepared)
    y, sol = solve_on_grid(diffrax.ODETerm(term(problem.denoiser)), solver, problem.sigmas,
                           x, trajectory=problem.trajectory)
    return y, grid_counts(sol, 1)

  return integrate


def _edm_solver(problem: GridProblem, options) -> solvers.EDMStochasticHeun:
  return solvers.EDMStochasticHeun(problem.num_steps, problem.key,
                                   **dataclasses.asdict(options))


def edm_stochastic(problem: GridProblem, x, options):
  """EDM Algorithm 2 in λ on the fixed grid (2 NFE per step)."""
  ts = solvers.lambda_of_sigma(problem.sigmas)
  y, sol = solve_on_grid(diffrax.ODETerm(terms.DataPrediction(problem.denoiser)),
                         _edm_solver(problem, options), ts, x, trajectory=problem.trajectory)
  return y, grid_counts(sol, 2)


def reverse_sde(problem: GridProblem, x, options):
  """Euler–Maruyama for dx = −2σ∇log p(x; σ) dσ + √(2σ) dW̄ (Song et al. 2021, VE), σ ↓."""
  del options
  brownian = diffrax.UnsafeBrownianPath(jax.ShapeDtypeStruct(x.shape, x.dtype), problem.key)
  sde = diffrax.MultiTerm(diffrax.ODETerm(terms.ReverseDrift(problem.denoiser)),
                          diffrax.ControlTerm(terms.reverse_diffusion, brownian))
  y, sol = solve_on_grid(sde, diffrax.Euler(), problem.sigmas, x,
                         trajectory=problem.trajectory, adjoint=diffrax.ForwardMode())
  return y, grid_counts(sol, 1)


def final_denoise(problem: GridProblem, x, options):
  """The step from σ_last to 0: x = D(x; σ_last)."""
  del options
  return problem.denoiser(x, problem.sigmas[-1])


def final_churn_denoise(problem: GridProblem, x, options):
  """Algorithm 2's last step: churn at σ_last, then the Euler step to 0, x = D(x̂; σ̂)."""
  x_hat, sigma_hat = _edm_solver(problem, options).churn(problem.num_steps - 1, x,
                                                         problem.sigmas[-1])
  return problem.denoiser(x_hat, sigma_hat)


def zero_counts() -> adaptive.Counts:
  zero = jnp.zeros((), jnp.int32)
  return adaptive.Counts(zero, zero, zero, zero, jnp.ones((), bool))
