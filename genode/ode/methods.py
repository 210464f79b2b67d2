"""The backend's two small tables: Runge–Kutta methods and adjoints, by name.

`RUNGE_KUTTA[name]` is the diffrax solver class with its cost per step; `ADJOINTS[name]`
is how diffrax differentiates a solve (`diffrax.RecursiveCheckpointAdjoint`, its default,
`BacksolveAdjoint` — the continuous adjoint of FFJORD/Neural ODEs — or `DirectAdjoint`).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, TypeVar

import diffrax

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class RungeKutta:
  """A diffrax Runge–Kutta method and what one step of it costs."""

  solver: type[diffrax.AbstractSolver]
  evals_per_step: int  # new vector-field evaluations per step (accepted or rejected)
  fsal: bool  # first same as last: one extra evaluation at the start of a solve
  adaptive: bool  # `solve_adaptive` runs it (an embedded 5(4) pair with FSAL)


RUNGE_KUTTA: dict[str, RungeKutta] = {
    "euler": RungeKutta(diffrax.Euler, 1, fsal=False, adaptive=False),
    "heun": RungeKutta(diffrax.Heun, 2, fsal=False, adaptive=False),
    "tsit5": RungeKutta(diffrax.Tsit5, 6, fsal=True, adaptive=True),
    "dopri5": RungeKutta(diffrax.Dopri5, 6, fsal=True, adaptive=True),
}

ADJOINTS: dict[str, type[diffrax.AbstractAdjoint]] = {
    "recursive_checkpoint": diffrax.RecursiveCheckpointAdjoint,  # diffrax's default
    "backsolve": diffrax.BacksolveAdjoint,  # solve the adjoint ODE backwards (O(1) memory)
    "direct": diffrax.DirectAdjoint,
}


def lookup(table: Mapping[str, T], name, kind: str) -> T:
  """table[name]; ValueError listing the valid names otherwise."""
  try:
    return table[name]
  except (KeyError, TypeError):
    raise ValueError(f"Unknown {kind} {name!r}; valid: {list(table)}") from None


def adaptive_method(name) -> RungeKutta:
  """The `RUNGE_KUTTA` entry `solve_adaptive` can run; ValueError listing them."""
  valid = {k: m for k, m in RUNGE_KUTTA.items() if m.adaptive}
  return lookup(valid, name, "solver")


def adjoint(name: str) -> diffrax.AbstractAdjoint:
  """The named adjoint (see `ADJOINTS`), default-constructed."""
  return lookup(ADJOINTS, name, "adjoint")()
