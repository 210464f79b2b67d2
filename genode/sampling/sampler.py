"""`sample` and `trajectory`: every sampler is one `diffrax.diffeqsolve` of the PF-ODE.

The ODE is dx/dσ = (x − D(x; σ))/σ (EDM eq. 4 with σ(t) = t, s = 1), integrated down a
grid of σ's (k-diffusion's convention: a last 0 means a final step to σ = 0), by a
solver of `genode.sampling.methods.SOLVERS` (its table lists them, their NFE, options
and final steps).

Native coordinates (`formulation=`, for solvers with `accepts_formulation`): the
formulation's own ODE dx/dt = (σ̇/σ + ṡ/s)·x − (σ̇·s/σ)·D(x/s; σ) (EDM eq. 4) in its time
t = σ⁻¹(σ_i) on the same grid, with x = s(t)·x̄; inputs and outputs stay in s = 1
coordinates x̄.

The denoiser contract (`genode.denoiser.Denoiser`): D(x, σ) with x (B, ...) batched on
axis 0 and σ a () array (one noise level for the whole batch), -> (B, ...).
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from genode.denoiser import Denoiser
from genode.formulations import Formulation
from genode.ode import samplers as routes
from genode.ode.adaptive import Counts
from genode.sampling import grids
from genode.sampling.methods import SOLVERS, Solver, get_solver


class SampleInfo(NamedTuple):
  """What a sampling run cost and whether it produced finite numbers."""

  nfe: jax.Array  # denoiser evaluations on the batch, rejected steps included
  num_steps: jax.Array  # steps taken (accepted + rejected), incl. a final step to σ = 0
  num_accepted_steps: jax.Array
  num_rejected_steps: jax.Array
  finite: jax.Array  # bool: every output entry is finite (and an adaptive solve finished)


def sample(denoiser: Denoiser, x, sigmas, solver: str | Solver = "heun", *, key=None,
           formulation: Formulation | None = None, raise_on_nonfinite: bool = False,
           **options) -> tuple[jax.Array, SampleInfo]:
  """Integrates x from sigmas[0] down the grid with the given solver.

  Args:
    denoiser: D(x; σ), any JAX-traceable callable; x (B, ...), σ a () array.
    x: (B, ...) the start at sigmas[0], e.g. sigmas[0]·noise.
    sigmas: (M,) strictly decreasing, M ≥ 2; a last 0 means a final denoising step
      (k-diffusion's convention), a positive last entry returns x at that σ.
    solver: a `Solver` or a name in `SOLVERS`.
    key: PRNG key of the stochastic solvers (edm_stochastic, reverse_sde).
    formulation: integrate the formulation's own ODE in its time t (solvers with
      `accepts_formulation`). Inputs/outputs stay in s = 1 coordinates.
    raise_on_nonfinite: raise (also under jit, via `equinox.error_if`) if the result is
      not finite.
    **options: the solver's options (its `options_type`'s fields).

  Returns:
    (x_out (B, ...) at sigmas[-1], SampleInfo).
  """
  args = _prepare(denoiser, x, sigmas, solver, key, formulation, options)
  return _sample(*args, raise_on_nonfinite, False)


def trajectory(denoiser: Denoiser, x, sigmas, solver: str | Solver = "heun", *, key=None,
               formulation: Formulation | None = None, **options
               ) -> tuple[jax.Array, SampleInfo]:
  """`sample`'s states at every point of the grid: (M, B, ...), xs[0] = x, xs[-1] = x_out.

  The states are the solver's own steps on the grid (no interpolation), so xs[-1] is
  exactly `sample`'s output; with native coordinates they are in s = 1 coordinates too.
  Reflow's straightness S(Z) is measured on them. Needs a fixed-grid solver (an adaptive
  one ignores the grid's interior points). Arguments as for `sample`.
  """
  method = get_solver(solver)
  if method.adaptive:
    raise ValueError(f"trajectory needs a fixed-grid solver; {method.name!r} is adaptive "
                     "(it ignores the grid's interior). Fixed-grid solvers: "
                     f"{[n for n, s in SOLVERS.items() if not s.adaptive]}.")
  args = _prepare(denoiser, x, sigmas, method, key, formulation, options)
  return _sample(*args, False, True)


def _prepare(denoiser, x, sigmas, solver, key, formulation, options):
  """Checks the inputs once, outside jit; the arguments of `_sample`."""
  method = get_solver(solver)
  opts = method.parse_options(options)
  if method.stochastic and key is None:
    raise ValueError(f"Solver {method.name!r} is stochastic: pass key=<PRNG key>.")
  if isinstance(key, int):
    key = jax.random.key(key)
  if formulation is not None and not method.accepts_formulation:
    raise ValueError(f"Solver {method.name!r} is defined in σ (s = 1) only; native "
                     "coordinates (formulation=...) work with "
                     f"{[n for n, s in SOLVERS.items() if s.accepts_formulation]}.")
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"Expected a floating-point x, got dtype {x.dtype}.")
  grids.check_sigmas(sigmas)
  prepared = None
  if isinstance(sigmas, jax.core.Tracer):
    if method.prepare is not None and method.prepare_traced is None:
      raise ValueError(f"Solver {method.name!r} computes its coefficients from the grid "
                       "once, in NumPy: pass a concrete grid (a NumPy array, e.g. from "
                       "get_sigmas), not a traced one (make the grid a static argument of "
                       "your jit).")
    if method.prepare_traced is not None:
      prepared = method.prepare_traced(jnp.asarray(sigmas, x.dtype), opts)
    ends_at_zero = None  # decided at run time
  else:
    sigmas = np.asarray(sigmas)
    ends_at_zero = bool(sigmas[-1] == 0)
    if formulation is not None:
      _check_native_grid(formulation, sigmas[:-1] if ends_at_zero else sigmas)
    if method.prepare is not None:
      prepared = jax.tree.map(lambda a: jnp.asarray(a, x.dtype),
                              method.prepare(sigmas.astype(np.float64), opts))
  return (denoiser, x, jnp.asarray(sigmas, x.dtype), key, method, opts, formulation,
          ends_at_zero, prepared)


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
def _sample(denoiser, x, sigmas, key, method, options, formulation, ends_at_zero, prepared,
            raise_on_nonfinite, save_trajectory):
  """The whole sampler in one jit; `ends_at_zero=None` picks the route at run time."""

  def route(final_zero: bool):
    def run(x):
      separate_final = final_zero and method.final_step is not None
      positive = sigmas[:-1] if separate_final else sigmas
      problem = routes.GridProblem(denoiser, positive, sigmas.shape[0] - 1, key, formulation,
                                   prepared, save_trajectory)
      counts = routes.zero_counts()
      xs = x[None]
      if positive.shape[0] >= 2:
        out, counts = method.integrate(problem, x, options)
        if save_trajectory:  # the start exactly as given (native coordinates round it)
          xs, x = jnp.concatenate([x[None], out[1:]]), out[-1]
        else:
          x = out
      counts = Counts(*(jnp.asarray(c, jnp.int32) for c in counts[:4]), counts.successful)
      if separate_final:
        x = method.final_step(problem, x, options)
        if save_trajectory:
          xs = jnp.concatenate([xs, x[None]])
        counts = counts._replace(nfe=counts.nfe + 1, num_steps=counts.num_steps + 1,
                                 num_accepted_steps=counts.num_accepted_steps + 1)
      return (xs if save_trajectory else x), counts
    return run

  if ends_at_zero is None:
    out, counts = jax.lax.cond(sigmas[-1] == 0, route(True), route(False), x)
  else:
    out, counts = route(ends_at_zero)(x)
  finite = jnp.all(jnp.isfinite(out)) & counts.successful
  if raise_on_nonfinite:
    out = eqx.error_if(
        out, ~finite,
        "genode.sampling.sample: the result is not finite: the denoiser produced "
        "non-finite values (NaN/Inf), or an adaptive solve failed (max_steps).")
  info = SampleInfo(counts.nfe, counts.num_steps, counts.num_accepted_steps,
                    counts.num_rejected_steps, finite)
  return out, info
