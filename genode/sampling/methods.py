"""The solvers as data: one public `Solver` record per sampler, in the `SOLVERS` table.

| name            | diffrax solver               | time   | NFE per step           | options |
|-----------------|------------------------------|--------|------------------------|---------|
| euler           | `Euler` (= DDIM)             | σ or t | 1                      | —       |
| heun            | `Heun` (EDM Alg. 1)          | σ or t | 2                      | —       |
| dpmpp_2m        | `DPMSolverPP2M`              | λ      | 1                      | —       |
| dpmpp_3m        | `DPMSolverPP3M`              | λ      | 1                      | —       |
| dpmpp_3m_taylor | `DPMSolverPP3M(taylor=True)` | λ      | 1                      | —       |
| lms             | `LinearMultistep`            | σ      | 1                      | order (4) |
| lms_data        | `LinearMultistep`            | σ      | 1                      | order (4) |
| tsit5, dopri5   | `Tsit5`/`Dopri5` + PID       | σ or t | 6, + 3 (+ retries)     | rtol, atol, max_steps |
| edm_stochastic  | `EDMStochasticHeun`          | λ      | 2                      | S_churn, S_tmin, S_tmax, S_noise |
| reverse_sde     | `Euler` (Euler–Maruyama)     | σ      | 1                      | —       |

("step" counts rejected steps too; the final step to σ = 0, where a grid ends at 0, costs
1 NFE for every solver. `dpmpp_3m` is the published DPM-Solver++(3M) update,
k-diffusion's `sample_dpmpp_3m_sde(eta=0)` exactly, second order asymptotically but the
more accurate at 5–32 steps; `dpmpp_3m_taylor` is the Taylor-consistent third-order
variant: see `genode.ode.solvers.DPMSolverPP3M`. `lms` is k-diffusion's `sample_lms`,
linear multistep of order `order` in σ on d = (x − D)/σ; `lms_data` is linear multistep
on the data prediction D, polynomial in σ, with the linear part integrated exactly (see
`genode.ode.solvers.lms_data_coefficients`): the most accurate here at 5–32 NFE on the
benchmark's ring. Both compute their coefficients once from the grid (`prepare`), in
NumPy; `lms_data` also from a traced grid, in jnp (`prepare_traced`), so its grid can be
differentiated (`genode.sampling.schedules`); `lms` needs a concrete grid.)

The final step to σ = 0, when the grid ends at 0, is x = D(x; σ_last) for every solver
except `lms` and `lms_data` (which take their multistep step to 0, as k-diffusion
does): it *is* the Euler step to 0 (k-diffusion's Euler/Heun/DPM-Solver++ all end this
way), for `edm_stochastic` it follows Algorithm 2's churn at σ_last, for `reverse_sde` it
is the usual last denoising ("noise removal", Song et al. 2021) and for the adaptive
solvers, which integrate from the first to the last positive σ (the grid's interior
points are ignored; the first step size is Hairer's starting step,
`genode.ode.adaptive.initial_step`, 2 NFE), it is a final denoise.

`accepts_formulation`: `sample(..., formulation=)` is allowed. Euler, Heun, Tsit5 and
Dopri5 then integrate the formulation's own ODE in its time t (EDM eq. 4);
DPM-Solver++ is the same update in any formulation's coordinates (Lu et al. 2022), so
the formulation does not change it. The stochastic samplers are defined in σ only.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable


from genode.ode import samplers as routes
from genode.ode import solvers as ode_solvers
from genode.ode import terms
from genode.ode.methods import RUNGE_KUTTA


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


@dataclasses.dataclass(frozen=True, kw_only=True)
class Solver:
  """A sampler: what it costs and accepts (public), and how it runs (private callables).

  `integrate(problem, x, options) -> (x̄ at problem.sigmas[-1] or the (M, B, ...)
  trajectory, Counts)` over a positive grid (`genode.ode.samplers.GridProblem`);
  `final_step(problem, x, options) -> x̄ at σ = 0` (1 NFE), or None if `integrate` steps
  to the grid's 0 itself; `prepare(concrete grid (M,) float64, options) -> arrays`
  (`problem.prepared`), for solvers whose coefficients depend on the grid;
  `prepare_traced(traced grid (M,), options) -> the same arrays` in jnp, where they can
  be differentiated in the grid (None: such a solver needs a concrete grid).
  """

  name: str
  nfe_per_step: int  # denoiser calls per step (rejected steps too); a final step to 0: 1
  adaptive: bool = False  # step sizes chosen by a controller; the grid's interior is ignored
  stochastic: bool = False  # needs key=
  accepts_formulation: bool = False  # sample(..., formulation=) is allowed
  options_type: type = NoOptions
  integrate: Callable = dataclasses.field(repr=False)
  final_step: Callable | None = dataclasses.field(default=routes.final_denoise, repr=False)
  prepare: Callable | None = dataclasses.field(default=None, repr=False)
  prepare_traced: Callable | None = dataclasses.field(default=None, repr=False)

  def parse_options(self, options: dict):
    """`options_type(**options)`; ValueError naming the unknown ones and the valid ones."""
    fields = [f.name for f in dataclasses.fields(self.options_type)]
    unknown = sorted(set(options) - set(fields))
    if unknown:
      raise ValueError(f"Unknown options {unknown} for solver {self.name!r}; "
                       f"its options: {fields or 'none'}")
    return self.options_type(**options)


def _runge_kutta(name: str) -> Solver:
  method = RUNGE_KUTTA[name]
  if method.adaptive:
    return Solver(name=name, nfe_per_step=method.evals_per_step, adaptive=True,
                  accepts_formulation=True, options_type=AdaptiveOptions,
                  integrate=routes.adaptive_runge_kutta(name))
  return Solver(name=name, nfe_per_step=method.evals_per_step, accepts_formulation=True,
                integrate=routes.runge_kutta(method.solver(), method.evals_per_step))


def _exponential(name: str, solver) -> Solver:
  return Solver(name=name, nfe_per_step=1, accepts_formulation=True,
                integrate=routes.multistep(solver))


SOLVERS: dict[str, Solver] = {s.name: s for s in (
    _runge_kutta("euler"),
    _runge_kutta("heun"),
    _exponential("dpmpp_2m", ode_solvers.DPMSolverPP2M()),
    _exponential("dpmpp_3m", ode_solvers.DPMSolverPP3M()),
    _exponential("dpmpp_3m_taylor", ode_solvers.DPMSolverPP3M(taylor=True)),
    Solver(name="lms", nfe_per_step=1, options_type=LMSOptions,
           integrate=routes.linear_multistep(terms.SigmaODE), final_step=None,
           prepare=routes.lms_coefficients),
    Solver(name="lms_data", nfe_per_step=1, options_type=LMSOptions,
           integrate=routes.linear_multistep(terms.Denoised), final_step=None,
           prepare=routes.lms_data_coefficients,
           prepare_traced=routes.lms_data_coefficients_traced),
    _runge_kutta("tsit5"),
    _runge_kutta("dopri5"),
    Solver(name="edm_stochastic", nfe_per_step=2, stochastic=True, options_type=ChurnOptions,
           integrate=routes.edm_stochastic, final_step=routes.final_churn_denoise),
    Solver(name="reverse_sde", nfe_per_step=1, stochastic=True, integrate=routes.reverse_sde),
)}


def get_solver(solver: str | Solver) -> Solver:
  """The `Solver` of a name in `SOLVERS` (a `Solver` passes through); ValueError listing
  the valid names."""
  if isinstance(solver, Solver):
    return solver
  try:
    return SOLVERS[solver]
  except (KeyError, TypeError):
    raise ValueError(f"Unknown solver {solver!r}; valid solvers: {list(SOLVERS)}") from None
