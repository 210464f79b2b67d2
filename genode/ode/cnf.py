"""Continuous normalizing flows: log-likelihood by the instantaneous change of variables.

For dx/dt = f(x, t) from x(t0) = x to z = x(t1) (FFJORD, Grathwohl et al. 2019, eq. 4,
integrated forward from the data to the prior),

    log p(x) = log p_prior(z) + ∫_{t0}^{t1} ∇·f(x(t), t) dt.

The state (x, ∫∇·f) is solved as one ODE by genode's diffrax backend: adaptively
(`solve_adaptive`, the default, for evaluation) or in `num_steps` equal steps
(`solve_constant_steps`, a common choice for training), differentiable w.r.t. the
drift's parameters through the chosen adjoint (`genode.ode.methods.ADJOINTS`).

The divergence is exact (one JVP per dimension, for small d) or Hutchinson's estimate
εᵀ(∂f/∂x)ε with Rademacher or Gaussian probes ε drawn once per solve from `key` and
fixed along the trajectory (FFJORD §2.2). Both assume f treats the samples of a batch
independently (no batch statistics).

With `regularize=True` the state also carries RNODE's two integrals (Finlay et al. 2020,
"How to train your neural ODE", eq. 5): the kinetic energy ∫‖f‖² dt and the Jacobian's
squared Frobenius norm ∫‖∇f‖_F² dt, per sample. The exact trace's d JVPs give ‖∇f‖_F²
exactly (Σᵢ‖J eᵢ‖²); Hutchinson's gives ‖J ε‖², an unbiased estimate for probes with
E[εεᵀ] = I (RNODE §3.2), from the JVP the divergence already computes.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from genode.ode import adaptive
from genode.ode import fixed
from genode.ode import methods

Drift = Callable[[jax.Array, jax.Array], jax.Array]  # f(x (B, ...), t ()) -> (B, ...)
TRACES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


class CNFInfo(NamedTuple):
  """Diagnostics of one likelihood solve (B = batch size)."""

  nfe: jax.Array  # () drift evaluations (each: one call of f plus its JVPs)
  num_steps: jax.Array  # () steps taken, accepted + rejected
  num_accepted_steps: jax.Array  # ()
  num_rejected_steps: jax.Array  # ()
  num_probes: int  # Hutchinson probes per sample; 0 for the exact trace
  stderr: jax.Array | None  # (B,) standard error of logp over probes; None unless num_probes > 1
  latent: jax.Array  # (B, ...) z = x(t1), the encoding of x
  prior_logp: jax.Array  # (B,) log p_prior(z)
  delta_logp: jax.Array  # (B,) ∫ ∇·f dt (the probe mean for Hutchinson)
  kinetic: jax.Array | None = None  # (B,) ∫‖f‖² dt (regularize=True), else None
  jacobian_frobenius: jax.Array | None = None  # (B,) ∫‖∇f‖_F² dt (probe mean), or None


def cnf_log_likelihood(drift: Drift, x: jax.Array, t0: float, t1: float,
                       prior_logp: Callable[[jax.Array], jax.Array], *, trace: str = "exact",
                       key: jax.Array | None = None, num_probes: int = 1,
                       probe: str = "rademacher", rtol: float = 1e-5, atol: float = 1e-5,
                       solver: str = "dopri5", max_steps: int = 4096,
                       num_steps: int | None = None, adjoint: str = "recursive_checkpoint",
                       regularize: bool = False) -> tuple[jax.Array, CNFInfo]:
  """log p(x) = log p_prior(x(t1)) + ∫_{t0}^{t1} ∇·f dt (FFJORD eq. 4), per sample.

  Args:
    drift: f(x, t), x (B, ...), t a () array of x's dtype, -> (B, ...). To differentiate
      w.r.t. its parameters under every adjoint, make it a pytree that holds them
      (`jax.tree_util.Partial(f, params)` or an `equinox.Module`); a pytree also lets
      diffrax's jit cache recognise a repeated solve.
    x: (B, ...) data points at t0.
    t0, t1: the interval, t0 ≠ t1 (Python floats).
    prior_logp: z (B, ...) -> (B,) log-density of the prior at t1.
    trace: "exact" (d JVPs per evaluation) or "hutchinson" (`num_probes` JVPs).
    key: PRNG key for the Hutchinson probes (required for trace="hutchinson").
    num_probes: probes per sample; with > 1, `info.stderr` is the standard error.
    probe: "rademacher" (±1) or "gaussian" (N(0, 1)) probe entries.
    rtol, atol: tolerances of the adaptive solve's `PIDController`.
    solver: "dopri5" or "tsit5" (adaptive); with `num_steps`, any name in
      `genode.ode.methods.RUNGE_KUTTA`.
    max_steps: the adaptive solve's step limit; exceeding it raises. Keep it tight when
      training through the solve (the checkpointed adjoint's cost grows with it).
    num_steps: None (adaptive) or a fixed number of equal steps.
    adjoint: a name in `genode.ode.methods.ADJOINTS`.
    regularize: also integrate RNODE's ∫‖f‖² dt and ∫‖∇f‖_F² dt (`info.kinetic`,
      `info.jacobian_frobenius`; integrated over t0 → t1, so negative if t1 < t0).

  NFE is counted as in `genode.ode.adaptive` (adaptive) or `genode.ode.fixed`.

  Returns:
    logp (B,) in nats, and a `CNFInfo`.
  """
  t0, t1 = float(t0), float(t1)
  if t0 == t1:
    raise ValueError(f"cnf_log_likelihood needs t0 ≠ t1, got both {t0}")
  if num_steps is None:
    methods.adaptive_method(solver)  # fail before tracing anything
  else:
    methods.lookup(methods.RUNGE_KUTTA, solver, "solver")
  methods.lookup(methods.ADJOINTS, adjoint, "adjoint")
  if trace not in TRACES:
    raise ValueError(f"Unknown trace {trace!r}; expected one of {list(TRACES)}")
  probes = _probes(key, probe, num_probes, x) if trace == "hutchinson" else None

  div0 = jnp.zeros(x.shape[:1] if probes is None else probes.shape[:2], x.dtype)
  y0 = (x, div0) + ((jnp.zeros(x.shape[:1], x.dtype), div0) if regularize else ())
  vector_field = _AugmentedODE(drift, probes, bool(regularize))
  if num_steps is None:
    y1, counts = adaptive.solve_adaptive(
        vector_field, y0, t0, t1, solver=solver, rtol=rtol, atol=atol,
        max_steps=max_steps, throw=True, adjoint=adjoint)
  else:
    y1, counts = fixed.solve_constant_steps(
        vector_field, y0, t0, t1, num_steps=num_steps, solver=solver, adjoint=adjoint)
  latent, div = y1[:2]
  kinetic, frobenius = (y1[2], y1[3]) if regularize else (None, None)
  if frobenius is not None and probes is not None:
    frobenius = jnp.mean(frobenius, axis=0)

  prior = prior_logp(latent)
  stderr = None
  if probes is not None:
    if num_probes > 1:
      stderr = jnp.std(div, axis=0, ddof=1) / math.sqrt(num_probes)
    div = jnp.mean(div, axis=0)
  info = CNFInfo(
      nfe=counts.nfe, num_steps=counts.num_steps,
      num_accepted_steps=counts.num_accepted_steps,
      num_rejected_steps=counts.num_rejected_steps,
      num_probes=0 if probes is None else num_probes, stderr=stderr, latent=latent,
      prior_logp=prior, delta_logp=div, kinetic=kinetic, jacobian_frobenius=frobenius)
  return prior + div, info


class _AugmentedODE(eqx.Module):
  """d(x, ∫∇·f)/dt = (f, ∇·f) (FFJORD eq. 4); with `regularize`, also d/dt of RNODE's
  ∫‖f‖² and ∫‖∇f‖_F² (per sample; per probe and sample for Hutchinson).

  An equinox module, so that diffrax's jit cache recognises a repeated solve (same
  drift, new x or probes) and does not recompile.
  """

  drift: Drift
  probes: jax.Array | None  # (K, B, ...) Hutchinson probes, or None for the exact trace
  regularize: bool = eqx.field(static=True, default=False)

  def __call__(self, t, state, args):
    del args
    x = state[0]
    t = jnp.asarray(t).astype(x.dtype)
    fn = lambda z: self.drift(z, t)
    if not self.regularize:
      if self.probes is None:
        return exact_divergence(fn, x)
      return hutchinson_divergence(fn, x, self.probes)
    if self.probes is None:
      value, div, frobenius = exact_divergence(fn, x, frobenius=True)
    else:
      value, div, frobenius = hutchinson_divergence(fn, x, self.probes, frobenius=True)
    kinetic = jnp.sum((value * value).reshape(x.shape[0], -1), -1)
    return value, div, kinetic, frobenius


def exact_divergence(fn, x, frobenius: bool = False):
  """fn(x) and ∇·fn per sample, tr(∂fn/∂x) as d JVPs with the basis vectors: (B, ...), (B,);
  with `frobenius`, also ‖∂fn/∂x‖_F² = Σᵢ‖J eᵢ‖² per sample (B,) from the same JVPs."""
  batch, dim = x.shape[0], math.prod(x.shape[1:])
  value, jvp = jax.linearize(fn, x)
  basis = jnp.eye(dim, dtype=x.dtype).reshape((dim, 1) + x.shape[1:])

  def entries(e):  # e_iᵀ J e_i (and ‖J e_i‖²) for every sample at once
    tangent = jnp.broadcast_to(e, x.shape)
    column = jvp(tangent).reshape(batch, dim)
    diagonal = jnp.sum(column * tangent.reshape(batch, dim), -1)
    return (diagonal, jnp.sum(column * column, -1)) if frobenius else (diagonal,)

  sums = [jnp.sum(a, 0) for a in jax.lax.map(entries, basis, batch_size=min(dim, 64))]
  return (value, *sums)


def hutchinson_divergence(fn, x, probes, frobenius: bool = False):
  """fn(x) and εᵀ(∂fn/∂x)ε for each probe ε: probes (K, B, ...) -> (B, ...), (K, B); with
  `frobenius`, also ‖(∂fn/∂x)ε‖² (K, B), unbiased for ‖∂fn/∂x‖_F² when E[εεᵀ] = I."""
  value, jvp = jax.linearize(fn, x)
  columns = jax.vmap(jvp)(probes)
  flat = lambda a: a.reshape(probes.shape[:2] + (-1,))
  div = jnp.sum(flat(columns * probes), -1)
  if frobenius:
    return value, div, jnp.sum(flat(columns * columns), -1)
  return value, div


def _probes(key, probe, num_probes, x):
  if key is None:
    raise ValueError("trace='hutchinson' needs a PRNG `key` for its probes")
  if num_probes < 1:
    raise ValueError(f"num_probes must be ≥ 1, got {num_probes}")
  shape = (num_probes,) + x.shape
  if probe == "rademacher":
    return jax.random.rademacher(key, shape, x.dtype)
  if probe == "gaussian":
    return jax.random.normal(key, shape, x.dtype)
  raise ValueError(f"Unknown probe {probe!r}; expected one of {list(PROBES)}")


def gaussian_log_prob(x, sigma):
  """log N(x; 0, σ² I) per sample, x (B, ...) -> (B,)."""
  dim = math.prod(x.shape[1:])
  sq = jnp.sum(x.reshape(x.shape[0], -1) ** 2, -1)
  return -0.5 * sq / sigma**2 - 0.5 * dim * math.log(2 * math.pi * sigma**2)
