"""Fixed-step solves: exactly onto a given grid (`StepTo`), or in equal steps.

`solve_on_grid` is the samplers' solve (one step per grid interval, no dense output);
with `trajectory=True` it also returns the state at every grid point (what reflow's
straightness S(Z) is measured on). `solve_constant_steps` is the fixed-step solve of a
CNF's training loss (FFJORD trains with either this or an adaptive solve).
"""

from __future__ import annotations

from typing import Any, Callable

import diffrax
import jax
import jax.numpy as jnp

from genode.ode import methods
from genode.ode.adaptive import Counts


def solve_on_grid(terms, solver: diffrax.AbstractSolver, ts, y0, *, trajectory: bool = False,
                  **kwargs):
  """One `diffeqsolve` stepping exactly to each point of `ts` (M,), M ≥ 2.

  Returns (y at ts[-1], or (M, ...) y at every ts[i] if `trajectory`; the diffrax
  solution, for its stats). Trajectory states are the solver's own step ends
  (`SaveAt(t0=True, steps=True)`), not interpolations.
  """
  num = ts.shape[0]
  saveat = (diffrax.SaveAt(t0=True, steps=True) if trajectory else diffrax.SaveAt(t1=True))
  sol = diffrax.diffeqsolve(
      terms, solver, t0=ts[0], t1=ts[-1], dt0=None, y0=y0,
      stepsize_controller=diffrax.StepTo(ts), saveat=saveat,
      max_steps=num, throw=False, **kwargs)
  ys = jax.tree.map(lambda leaf: leaf[:num] if trajectory else leaf[0], sol.ys)
  return ys, sol


def grid_counts(sol, nfe_per_step: int) -> Counts:
  """`Counts` of a fixed-grid solve whose steps each cost `nfe_per_step` evaluations."""
  steps = sol.stats["num_steps"]
  return Counts(nfe_per_step * steps, steps, sol.stats["num_accepted_steps"],
                sol.stats["num_rejected_steps"], sol.result == diffrax.RESULTS.successful)


def solve_constant_steps(vector_field: Callable[[Any, Any, Any], Any], y0, t0, t1, *,
                         num_steps: int, solver: str = "tsit5",
                         adjoint: str = "recursive_checkpoint") -> tuple[Any, Counts]:
  """y(t1) of dy/dt = vector_field(t, y, None) in `num_steps` equal steps from t0.

  Args:
    vector_field: (t, y, args) -> dy/dt (an `equinox.Module`, as for `solve_adaptive`).
    y0: the state at t0 (a pytree of arrays).
    t0, t1: the interval (either direction).
    num_steps: the number of equal steps h = (t1 − t0)/num_steps.
    solver: a name in `genode.ode.methods.RUNGE_KUTTA`.
    adjoint: a name in `methods.ADJOINTS`.

  NFE = evals_per_step·num_steps, + 1 for the first stage of an FSAL method.

  Returns:
    (y(t1), Counts).
  """
  method = methods.lookup(methods.RUNGE_KUTTA, solver, "solver")
  if int(num_steps) != num_steps or num_steps < 1:
    raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
  t0, t1 = float(t0), float(t1)
  sol = diffrax.diffeqsolve(
      diffrax.ODETerm(vector_field), method.solver(), t0=t0, t1=t1,
      dt0=(t1 - t0) / num_steps, y0=y0, stepsize_controller=diffrax.ConstantStepSize(),
      saveat=diffrax.SaveAt(t1=True), max_steps=int(num_steps), throw=True,
      adjoint=methods.adjoint(adjoint))
  steps = sol.stats["num_steps"]
  nfe = int(method.fsal) + method.evals_per_step * steps
  counts = Counts(jnp.asarray(nfe, jnp.int32), jnp.asarray(steps, jnp.int32),
                  jnp.asarray(sol.stats["num_accepted_steps"], jnp.int32),
                  jnp.asarray(sol.stats["num_rejected_steps"], jnp.int32),
                  sol.result == diffrax.RESULTS.successful)
  return jax.tree.map(lambda leaf: leaf[-1], sol.ys), counts
