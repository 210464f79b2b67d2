"""`solve_adaptive`: one adaptive Runge–Kutta solve (Tsit5/Dopri5 + `PIDController`).

genode's one adaptive `diffrax.diffeqsolve`: the samplers' tsit5/dopri5 and the CNF
likelihood (`genode.ode.cnf`, hence `genode.likelihood`) both use it. It is
differentiable through the chosen adjoint (`genode.ode.methods.ADJOINTS`).

The first step size is Hairer & Wanner's starting step (Solving ODEs I, §II.4,
"Starting step size"; DOPRI5's `hinit`), computed here by `initial_step`: it evaluates
the vector field twice (at y0 and after one tiny Euler step). (diffrax's own
`dt0=None` selection is a no-op inside `diffeqsolve` in diffrax 0.7: it sees a wrapped
term, not an `ODETerm`, and returns 0.01 in any time unit.) Dopri5 and Tsit5 are
7-stage first-same-as-last: 6 new evaluations per step (accepted or rejected), plus 1
for the first stage of the first step, redone at each retry of that step. So

    NFE = 2 + 1 + retries + 6·num_steps,

with `retries` (rejections before the first accepted step) read from
`FirstStepRetryCounter`'s final state (counted with a callback in the tests).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import diffrax
import jax
import jax.numpy as jnp

from genode.ode import methods

_EVALS_INITIAL_STEP = 2  # `initial_step`: Hairer's starting step size
_EVALS_AT_START = 1  # the first FSAL stage


class Counts(NamedTuple):
  """What a solve cost, and whether it succeeded (all () arrays)."""

  nfe: jax.Array  # vector field evaluations, rejected steps included
  num_steps: jax.Array  # accepted + rejected
  num_accepted_steps: jax.Array
  num_rejected_steps: jax.Array
  successful: jax.Array  # bool: diffrax finished (e.g. within max_steps)


def solve_adaptive(vector_field: Callable[[Any, Any, Any], Any], y0, t0, t1, *,
                   solver: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
                   max_steps: int = 4096, throw: bool = False,
                   adjoint: str = "recursive_checkpoint") -> tuple[Any, Counts]:
  """y(t1) of dy/dt = vector_field(t, y, None) from y(t0) = y0, adaptively.

  Args:
    vector_field: (t, y, args) -> dy/dt, y any pytree. Make it an `equinox.Module` (a
      callable whose fields are the denoiser etc.), so that diffrax's jit cache
      recognises a repeated solve and does not recompile.
    y0: the state at t0 (a pytree of arrays).
    t0, t1: the time interval (t1 < t0 integrates backwards, e.g. σ decreasing).
    solver: an adaptive name in `genode.ode.methods.RUNGE_KUTTA` ("dopri5", "tsit5").
    rtol, atol: the `PIDController`'s tolerances.
    max_steps: diffrax's step limit. Keep it tight when differentiating: the
      checkpointed adjoint's cost grows with it (diffrax issue #76).
    throw: raise if the solve fails (max_steps exceeded); otherwise see `successful`.
    adjoint: how gradients flow through the solve, a name in `methods.ADJOINTS`.

  Returns:
    (y(t1), Counts).
  """
  method = methods.adaptive_method(solver)
  controller = FirstStepRetryCounter(diffrax.PIDController(rtol=rtol, atol=atol))
  dt0 = initial_step(vector_field, y0, t0, t1, rtol=rtol, atol=atol)
  sol = diffrax.diffeqsolve(
      diffrax.ODETerm(vector_field), method.solver(), t0=t0, t1=t1, dt0=dt0, y0=y0,
      stepsize_controller=controller, saveat=diffrax.SaveAt(t1=True, controller_state=True),
      max_steps=max_steps, throw=throw, adjoint=methods.adjoint(adjoint))
  _, _, retries = sol.controller_state
  steps = sol.stats["num_steps"]
  nfe = _EVALS_INITIAL_STEP + _EVALS_AT_START + retries + method.evals_per_step * steps
  counts = Counts(jnp.asarray(nfe, jnp.int32), jnp.asarray(steps, jnp.int32),
                  jnp.asarray(sol.stats["num_accepted_steps"], jnp.int32),
                  jnp.asarray(sol.stats["num_rejected_steps"], jnp.int32),
                  sol.result == diffrax.RESULTS.successful)
  return jax.tree.map(lambda leaf: leaf[-1], sol.ys), counts


def initial_step(vector_field, y0, t0, t1, *, rtol: float, atol: float, order: int = 5):
  """Hairer & Wanner's starting step size (Solving ODEs I, §II.4), signed like t1 − t0.

  With sc = atol + |y0|·rtol and the RMS norm ‖·‖ of y/sc: d0 = ‖y0‖, d1 = ‖f(t0, y0)‖,
  h0 = 0.01·d0/d1 (10⁻⁶ if either is < 10⁻⁵), an Euler step y1 = y0 + h0·f0,
  d2 = ‖f(t0 + h0, y1) − f0‖/h0, h1 = (0.01/max(d1, d2))^{1/order} (10⁻³·h0 if that max is
  ≤ 10⁻¹⁵); the step is min(100·h0, h1, |t1 − t0|). Two evaluations of `vector_field`.
  `order` is the error order of the 5(4) pair (DOPRI5's `iord` = 5).
  """
  t0, t1 = jnp.asarray(t0), jnp.asarray(t1)
  direction = jnp.where(t1 >= t0, 1.0, -1.0).astype(t0.dtype)
  scale = jax.tree.map(lambda y: atol + jnp.abs(y) * rtol, y0)

  def norm(tree):  # RMS over every entry of the pytree, as diffrax's controller
    leaves = jax.tree.leaves(jax.tree.map(lambda a, s: a / s, tree, scale))
    size = sum(leaf.size for leaf in leaves)
    return jnp.sqrt(sum(jnp.sum(jnp.abs(leaf) ** 2) for leaf in leaves) / size)

  f0 = vector_field(t0, y0, None)
  d0, d1 = norm(y0), norm(f0)
  small = (d0 < 1e-5) | (d1 < 1e-5)
  h0 = jnp.where(small, 1e-6, 0.01 * d0 / jnp.where(small, 1.0, d1))
  y1 = jax.tree.map(lambda y, f: y + direction * h0 * f, y0, f0)
  f1 = vector_field(t0 + direction * h0, y1, None)
  d2 = norm(jax.tree.map(lambda a, b: a - b, f1, f0)) / h0
  max_d = jnp.maximum(d1, d2)
  h1 = jnp.where(max_d <= 1e-15, jnp.maximum(1e-6, h0 * 1e-3),
                 (0.01 / jnp.maximum(max_d, 1e-15)) ** (1.0 / order))
  step = jnp.minimum(jnp.minimum(100 * h0, h1), jnp.abs(t1 - t0))
  return jax.lax.stop_gradient(direction * step)


class FirstStepRetryCounter(diffrax.AbstractAdaptiveStepSizeController):
  """A step size controller that also counts the retries of the first step.

  FSAL Runge–Kutta solvers (Tsit5, Dopri5) evaluate their first stage once more each
  time the very first step is rejected; `retries` (steps rejected before the first
  accepted one) is the last entry of this controller's final state
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
