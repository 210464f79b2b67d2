"""`sample`: every sampler is one `diffrax.diffeqsolve` of the probability-flow ODE.

The ODE is dx/dσ = (x − D(x; σ))/σ (EDM eq. 4 with σ(t) = t, s = 1), integrated down a
grid of σ's (k-diffusion's convention: a last 0 means a final step to σ = 0). Solvers:

| name           | diffrax solver           | time   | NFE                    | options |
|----------------|--------------------------|--------|------------------------|---------|
| euler          | `Euler` (= DDIM)         | σ or t | 1/step                 | —       |
| heun           | `Heun` (EDM Alg. 1)      | σ or t | 2/step                 | —       |
| dpmpp_2m       | `DPMSolverPP2M`          | λ      | 1/step                 | —       |
| dpmpp_3m       | `DPMSolverPP3M`          | λ      | 1/step                 | —       |
| dpmpp_3m_taylor | `DPMSolverPP3M(taylor=True)` | λ | 1/step                | —       |
| lms            | `LinearMultistep`        | σ      | 1/step                 | order (4) |
| lms_data       | `LinearMultistep`        | σ      | 1/step                 | order (4) |
| tsit5, dopri5  | `Tsit5`/`Dopri5` + PID   | σ or t | 6/step + 3 (+retries)  | rtol, atol, max_steps |
| edm_stochastic | `EDMStochasticHeun`      | λ      | 2/step                 | S_churn, S_tmin, S_tmax, S_noise |
| reverse_sde    | `Euler` (Euler–Maruyama) | σ      | 1/step                 | —       |

("step" counts rejected steps too. `dpmpp_3m` is the published DPM-Solver++(3M) update,
k-diffusion's `sample_dpmpp_3m_sde(eta=0)` exactly, second order asymptotically but the
more accurate at 5–32 steps; `dpmpp_3m_taylor` is the Taylor-consistent third-order
variant: see `DPMSolverPP3M`. `lms` is k-diffusion's `sample_lms`, linear multistep of
order `order` in σ on d = (x − D)/σ; `lms_data` is linear multistep on the data
prediction D, polynomial in σ, with the linear part integrated exactly (see
`lms_data_coefficients`): the most accurate here at 5–32 NFE on the benchmark's ring.
Both compute their coefficients once from the grid: they need a concrete (non-traced)
grid.) The final step to σ = 0, when the grid ends at 0, is
x = D(x; σ_last) for every solver except `lms` (which takes its multistep step to 0, as
k-diffusion does): it *is* the Euler step to 0 (k-diffusion's Euler/Heun/DPM-Solver++
all end this way), for `edm_stochastic` it follows Algorithm 2's churn at σ_last, for
`reverse_sde` it is the usual last denoising ("noise removal", Song et al. 2021) and
for the adaptive solvers, which integrate from the first to the last positive σ (the
grid's interior points are ignored; the first step size is Hairer's starting step,
`genode.sampling.adaptive.initial_step`, 2 NFE), it is a final denoise. It costs 1 NFE.

Native coordinates (`formulation=`, for euler/heun/tsit5/dopri5): the formulation's own
ODE dx/dt = (σ̇/σ + ṡ/s)·x − (σ̇·s/σ)·D(x/s; σ) (EDM eq. 4) in its time t = σ⁻¹(σ_i) on
the same grid, with x = s(t)·x̄; inputs and outputs stay in s = 1 coordinates x̄.
DPM-Solver++ is the same update in any formulation's coordinates (Lu et al. 2022), so
`formulation` does not change it; the stochastic samplers are defined in σ only.

Shapes: x is (B, ...), batched on axis 0; the denoiser gets x and a scalar σ.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax
import numpy as np

from genode.formulations import Formulation
from genode.sampling import adaptive
from genode.sampling import grids
from genode.sampling import solvers as custom

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]


class SampleInfo(NamedTuple):
  """What a sampling run cost and whether it produced finite numbers."""

  nfe: jax.Array  # denoiser evaluations on the batch, rejected steps included
  num_steps: jax.Array  # steps taken (accepted + rejected), incl. a final step to σ = 0
  num_accepted_steps: jax.Array
  num_rejected_steps: jax.Array
  finite: jax.Array  # bool: every output entry is finite (and an adaptive solve finished)


# ---------------------------------------------------------------------------
# Options of each solver (unknown names are rejected, listing these fields).
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NoOptions:
  """The solver takes no options."""


@dataclasses.dataclass(frozen=True)
class AdaptiveOptions:
  """`diffrax.PIDController(rtol, atol)` and the step budget of an adaptive solve."""

  rtol: float = 1e-5
  atol: float = 1e-5
  max_steps: int = 4096


@dataclasses.dataclass(frozen=True)
class LMSOptions:
  """The order of k-diffusion's linear multistep sampler (lower at the first steps)."""

  order: int = 4


@dataclasses.dataclass(frozen=True)
class ChurnOptions:
  """EDM Algorithm 2's stochasticity: S_churn, S_tmin, S_tmax, S_noise."""

  S_churn: float = 0.0
  S_tmin: float = 0.0
  S_tmax: float = math.inf
  S_noise: float = 1.0


# ---------------------------------------------------------------------------
# The vector fields (equinox modules, so that diffrax's jit cache recognises them).
# ---------------------------------------------------------------------------


class _SigmaODE(eqx.Module):
  """dx/dσ = (x − D(x; σ))/σ (EDM eq. 4, σ(t) = t, s = 1)."""

  denoiser: Denoiser

  def __call__(self, sigma, x, args):
    return (x - self.denoiser(x, sigma)) / sigma


class _NativeODE(eqx.Module):
  """dx/dt = (σ̇/σ + ṡ/s)·x − (σ̇·s/σ)·D(x/s; σ) (EDM eq. 4) in the formulation's t."""

  denoiser: Denoiser
  formulation: Formulation = eqx.field(static=True)

  def __call__(self, t, x, args):
    f = self.formulation
    sigma, sigma_dot = f.sigma(t), f.sigma_deriv(t)
    s, s_dot = f.scale(t), f.scale_deriv(t)
    return (sigma_dot / sigma + s_dot / s) * x - (sigma_dot * s / sigma) * self.denoiser(x / s, sigma)


class _DataPrediction(eqx.Module):
  """D(x; σ = e^{−λ}), the term of the solvers in `genode.sampling.solvers`."""

  denoiser: Denoiser

  def __call__(self, lam, x, args):
    return self.denoiser(x, custom.sigma_of_lambda(lam))


class _Denoised(eqx.Module):
  """D(x; σ) with σ itself as the time (the term of `lms_data`)."""

  denoiser: Denoiser

  def __call__(self, sigma, x, args):
    return self.denoiser(x, sigma)


class _ReverseDrift(eqx.Module):
  """Drift of the reverse SDE in σ: −2σ·∇log p = 2(x − D(x; σ))/σ."""

  denoiser: Denoiser

  def __call__(self, sigma, x, args):
    return 2 * (x - self.denoiser(x, sigma)) / sigma


def _reverse_diffusion(sigma, x, args):
  """Diffusion of the reverse SDE in σ: √(2σ), elementwise (g² = dσ²/dσ)."""
  return lineax.DiagonalLinearOperator(jnp.full_like(x, jnp.sqrt(2 * sigma)))


# ---------------------------------------------------------------------------
# One route per solver: integrate over a positive grid (≥ 2 entries).
# ---------------------------------------------------------------------------


class _Problem(NamedTuple):
  denoiser: Denoiser
  sigmas: jax.Array  # (M,) strictly decreasing, M ≥ 2, positive (a last 0 only if the
  #                    method has no separate final step)
  num_steps: int  # steps of the caller's whole grid (incl. a final step to 0)
  key: Any
  formulation: Formulation | None
  prepared: Any  # the method's `prepare` output (e.g. LMS coefficients), or None


_Counts = adaptive.Counts


def _ode_in_coordinates(problem: _Problem, x):
  """(vector field, times, y0, map back to x̄): σ-time, or the formulation's own t."""
  f = problem.formulation
  if f is None:
    return _SigmaODE(problem.denoiser), problem.sigmas, x, lambda y, t: y
  ts = f.sigma_inv(problem.sigmas)
  return (_NativeODE(problem.denoiser, f), ts, f.scale(ts[0]) * x,
          lambda y, t: y / f.scale(t))


def _counts(sol, nfe_per_step: int) -> _Counts:
  steps = sol.stats["num_steps"]
  return _Counts(nfe_per_step * steps, steps, sol.stats["num_accepted_steps"],
                 sol.stats["num_rejected_steps"], sol.result == diffrax.RESULTS.successful)


def _fixed_grid_solve(terms, solver, ts, y0, **kwargs):
  """One diffeqsolve stepping exactly to each point of `ts` (no dense output)."""
  return diffrax.diffeqsolve(
      terms, solver, t0=ts[0], t1=ts[-1], dt0=None, y0=y0,
      stepsize_controller=diffrax.StepTo(ts), saveat=diffrax.SaveAt(t1=True),
      max_steps=ts.shape[0], throw=False, **kwargs)


def _runge_kutta(solver: diffrax.AbstractSolver, nfe_per_step: int):
  """Euler or Heun on the fixed grid, in σ or the formulation's t."""

  def integrate(problem: _Problem, x, options: NoOptions):
    del options
    vector_field, ts, y0, to_xbar = _ode_in_coordinates(problem, x)
    sol = _fixed_grid_solve(diffrax.ODETerm(vector_field), solver, ts, y0)
    return to_xbar(sol.ys[0], ts[-1]), _counts(sol, nfe_per_step)

  return integrate


def _adaptive(solver: str):
  """Tsit5/Dopri5 from the first to the last σ of the grid, PIDController(rtol, atol).

  The first step size is diffrax's initial step selection; NFE as in
  `genode.sampling.adaptive`: 6 per step (rejected ones too), 2 for the step size
  selection, 1 for the FSAL start, 1 per retry of a rejected first step.
  """

  def integrate(problem: _Problem, x, options: AdaptiveOptions):
    vector_field, ts, y0, to_xbar = _ode_in_coordinates(problem, x)
    y1, counts = adaptive.solve_adaptive(vector_field, y0, ts[0], ts[-1], solver=solver,
                                         rtol=options.rtol, atol=options.atol,
                                         max_steps=options.max_steps)
    return to_xbar(y1, ts[-1]), counts

  return integrate


def _multistep(solver: diffrax.AbstractSolver):
  """DPM-Solver++ in λ = −log σ on the fixed grid (1 NFE per step)."""

  def integrate(problem: _Problem, x, options: NoOptions):
    del options
    ts = custom.lambda_of_sigma(problem.sigmas)
    sol = _fixed_grid_solve(diffrax.ODETerm(_DataPrediction(problem.denoiser)), solver, ts, x)
    return sol.ys[0], _counts(sol, 1)

  return integrate


def _lms_coefficients(sigmas: np.ndarray, options: LMSOptions):
  weights = custom.lms_coefficients(sigmas, options.order)
  return np.ones(weights.shape[0]), weights


def _lms_data_coefficients(sigmas: np.ndarray, options: LMSOptions):
  return custom.lms_data_coefficients(sigmas, options.order)


def _linear_multistep(term: type[eqx.Module]):
  """`LinearMultistep` in σ over the whole grid, a final 0 included (1 NFE/step)."""

  def integrate(problem: _Problem, x, options: LMSOptions):
    del options
    solver = custom.LinearMultistep(*problem.prepared)
    sol = _fixed_grid_solve(diffrax.ODETerm(term(problem.denoiser)), solver,
                            problem.sigmas, x)
    return sol.ys[0], _counts(sol, 1)

  return integrate


def _edm_solver(problem: _Problem, options: ChurnOptions) -> custom.EDMStochasticHeun:
  return custom.EDMStochasticHeun(problem.num_steps, problem.key, **dataclasses.asdict(options))


def _edm_stochastic(problem: _Problem, x, options: ChurnOptions):
  ts = custom.lambda_of_sigma(problem.sigmas)
  sol = _fixed_grid_solve(diffrax.ODETerm(_DataPrediction(problem.denoiser)),
                          _edm_solver(problem, options), ts, x)
  return sol.ys[0], _counts(sol, 2)


def _reverse_sde(problem: _Problem, x, options: NoOptions):
  """Euler–Maruyama for dx = −2σ∇log p(x; σ) dσ + √(2σ) dW̄ (Song et al. 2021, VE), σ ↓."""
  del options
  brownian = diffrax.UnsafeBrownianPath(jax.ShapeDtypeStruct(x.shape, x.dtype), problem.key)
  terms = diffrax.MultiTerm(diffrax.ODETerm(_ReverseDrift(problem.denoiser)),
                            diffrax.ControlTerm(_reverse_diffusion, brownian))
  sol = _fixed_grid_solve(terms, diffrax.Euler(), problem.sigmas, x,
                          adjoint=diffrax.ForwardMode())
  return sol.ys[0], _counts(sol, 1)


def _final_denoise(problem: _Problem, x, options):
  """The step from σ_last to 0: x = D(x; σ_last)."""
  del options
  return problem.denoiser(x, problem.sigmas[-1])


def _final_churn_denoise(problem: _Problem, x, options: ChurnOptions):
  """Algorithm 2's last step: churn at σ_last, then the Euler step to 0, x = D(x̂; σ̂)."""
  x_hat, sigma_hat = _edm_solver(problem, options).churn(problem.num_steps - 1, x,
                                                         problem.sigmas[-1])
  return problem.denoiser(x_hat, sigma_hat)


@dataclasses.dataclass(frozen=True)
class _Method:
  integrate: Callable  # (problem, x, options) -> (x̄ at sigmas[-1], _Counts)
  options: type = NoOptions
  # (problem, x, options) -> x̄ at σ = 0 (1 NFE); None: `integrate` steps to the 0 itself.
  final_step: Callable | None = _final_denoise
  # (concrete grid (M,) float64, options) -> arrays the solver needs (`problem.prepared`);
  # a method with `prepare` needs a concrete grid.
  prepare: Callable | None = None
  native: bool = False  # honours formulation= (its own ODE in its time t)
  stochastic: bool = False  # needs key


SOLVERS: dict[str, _Method] = {
    "euler": _Method(_runge_kutta(diffrax.Euler(), 1), native=True),
    "heun": _Method(_runge_kutta(diffrax.Heun(), 2), native=True),
    "dpmpp_2m": _Method(_multistep(custom.DPMSolverPP2M()), native=True),
    "dpmpp_3m": _Method(_multistep(custom.DPMSolverPP3M()), native=True),
    "dpmpp_3m_taylor": _Method(_multistep(custom.DPMSolverPP3M(taylor=True)), native=True),
    "lms": _Method(_linear_multistep(_SigmaODE), LMSOptions, final_step=None,
                   prepare=_lms_coefficients),
    "lms_data": _Method(_linear_multistep(_Denoised), LMSOptions, final_step=None,
                        prepare=_lms_data_coefficients),
    "tsit5": _Method(_adaptive("tsit5"), AdaptiveOptions, native=True),
    "dopri5": _Method(_adaptive("dopri5"), AdaptiveOptions, native=True),
    "edm_stochastic": _Method(_edm_stochastic, ChurnOptions, _final_churn_denoise,
                              stochastic=True),
    "reverse_sde": _Method(_reverse_sde, stochastic=True),
}


def get_solver(name: str) -> _Method:
  """The table entry of a solver name; ValueError listing the valid names."""
  try:
    return SOLVERS[name]
  except (KeyError, TypeError):
    raise ValueError(f"Unknown solver {name!r}; valid solvers: {list(SOLVERS)}") from None


def _parse_options(name: str, method: _Method, options: dict):
  fields = [f.name for f in dataclasses.fields(method.options)]
  unknown = sorted(set(options) - set(fields))
  if unknown:
    raise ValueError(f"Unknown options {unknown} for solver {name!r}; "
                     f"its options: {fields or 'none'}")
  return method.options(**options)


def sample(denoiser: Denoiser, x, sigmas, solver: str = "heun", *, key=None,
           formulation: Formulation | None = None, raise_on_nonfinite: bool = False,
           **options) -> tuple[jax.Array, SampleInfo]:
  """Integrates x from sigmas[0] down the grid with the named solver.

  Args:
    denoiser: D(x; σ), any JAX-traceable callable; x (B, ...), σ a scalar.
    x: (B, ...) the start at sigmas[0], e.g. sigmas[0]·noise.
    sigmas: (M,) strictly decreasing, M ≥ 2; a last 0 means a final denoising step
      (k-diffusion's convention), a positive last entry returns x at that σ.
    solver: a name in `SOLVERS`.
    key: PRNG key of the stochastic solvers (edm_stochastic, reverse_sde).
    formulation: integrate the formulation's own ODE in its time t (euler, heun, tsit5,
      dopri5; DPM-Solver++ is unchanged by it). Inputs/outputs stay in s = 1 coordinates.
    raise_on_nonfinite: raise (also under jit, via `equinox.error_if`) if the result is
      not finite.
    **options: the solver's options (see the module docstring).

  Returns:
    (x_out (B, ...) at sigmas[-1], SampleInfo).
  """
  method = get_solver(solver)
  opts = _parse_options(solver, method, options)
  if method.stochastic and key is None:
    raise ValueError(f"Solver {solver!r} is stochastic: pass key=<PRNG key>.")
  if isinstance(key, int):
    key = jax.random.key(key)
  if formulation is not None and not method.native:
    raise ValueError(f"Solver {solver!r} is defined in σ (s = 1) only; native coordinates "
                     "(formulation=...) work with "
                     f"{[n for n, m in SOLVERS.items() if m.native]}.")
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"Expected a floating-point x, got dtype {x.dtype}.")
  grids.check_sigmas(sigmas)
  prepared = None
  if isinstance(sigmas, jax.core.Tracer):
    if method.prepare is not None:
      raise ValueError(f"Solver {solver!r} computes its coefficients from the grid once, in "
                       "NumPy: pass a concrete grid (a NumPy array, e.g. from get_sigmas), "
                       "not a traced one (make the grid a static argument of your jit).")
    ends_at_zero = None  # decided at run time
  else:
    sigmas = np.asarray(sigmas)
    ends_at_zero = bool(sigmas[-1] == 0)
    if formulation is not None:
      _check_native_grid(formulation, sigmas[:-1] if ends_at_zero else sigmas)
    if method.prepare is not None:
      prepared = jax.tree.map(lambda a: jnp.asarray(a, x.dtype),
                              method.prepare(sigmas.astype(np.float64), opts))
  return _sample(denoiser, x, jnp.asarray(sigmas, x.dtype), key, method, opts,
                 formulation, ends_at_zero, raise_on_nonfinite, prepared)


def _check_native_grid(formulation: Formulation, sigmas: np.ndarray) -> None:
  """The grid must map into the formulation's time: σ(σ⁻¹(σ_i)) = σ_i, t strictly decreasing."""
  with jax.ensure_compile_time_eval():
    ts = formulation.sigma_inv(jnp.asarray(sigmas))
    round_trip = np.asarray(formulation.sigma(ts))
  ts = np.asarray(ts)
  if (not np.all(np.isfinite(ts)) or np.any(np.diff(ts) >= 0)
      or not np.allclose(round_trip, sigmas, rtol=1e-4, atol=0)):
    raise ValueError(f"The grid {sigmas} does not map into the time t of {formulation} "
                     f"(t = {ts}, σ(t) = {round_trip}): keep it within the formulation's "
                     f"[sigma_min, sigma_max] = [{formulation.sigma_min}, {formulation.sigma_max}].")


@eqx.filter_jit
def _sample(denoiser, x, sigmas, key, method, options, formulation, ends_at_zero,
            raise_on_nonfinite, prepared):
  """The whole sampler in one jit; `ends_at_zero=None` picks the route at run time."""

  def route(final_zero: bool):
    def run(x):
      separate_final = final_zero and method.final_step is not None
      positive = sigmas[:-1] if separate_final else sigmas
      problem = _Problem(denoiser, positive, sigmas.shape[0] - 1, key, formulation, prepared)
      zero = jnp.zeros((), jnp.int32)
      counts = _Counts(zero, zero, zero, zero, jnp.ones((), bool))
      if positive.shape[0] >= 2:
        x, counts = method.integrate(problem, x, options)
      counts = _Counts(*(jnp.asarray(c, jnp.int32) for c in counts[:4]), counts.successful)
      if separate_final:
        x = method.final_step(problem, x, options)
        counts = counts._replace(nfe=counts.nfe + 1, num_steps=counts.num_steps + 1,
                                 num_accepted_steps=counts.num_accepted_steps + 1)
      return x, counts
    return run

  if ends_at_zero is None:
    x_out, counts = jax.lax.cond(sigmas[-1] == 0, route(True), route(False), x)
  else:
    x_out, counts = route(ends_at_zero)(x)
  finite = jnp.all(jnp.isfinite(x_out)) & counts.successful
  if raise_on_nonfinite:
    x_out = eqx.error_if(
        x_out, ~finite,
        "genode.sampling.sample: the result is not finite: the denoiser produced "
        "non-finite values (NaN/Inf), or an adaptive solve failed (max_steps).")
  info = SampleInfo(counts.nfe, counts.num_steps, counts.num_accepted_steps,
                    counts.num_rejected_steps, finite)
  return x_out, info
