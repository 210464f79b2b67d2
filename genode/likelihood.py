"""Exact likelihoods of the probability-flow ODE (instantaneous change of variables).

Convention (FFJORD, Grathwohl et al. 2019; score_sde, Song et al. 2021, App. D.2):
the model is the PF-ODE dx/dσ = f(x; σ) = (x − D(x; σ))/σ (EDM eq. 4 with σ(t) = t,
s = 1) with prior x(σ_max) ~ N(0, σ_max² I). Its density at σ_min is

    log p(x) = log N(x(σ_max); 0, σ_max² I) + ∫_{σ_min}^{σ_max} ∇·f(x(σ); σ) dσ,

x(σ_min) = x (FFJORD eq. 4, integrated forward from the data to the prior). The
ODE and the divergence integral are solved together by
`genode.sampling.solve_adaptive` (diffrax's adaptive Dopri5/Tsit5 with a
`PIDController`), with σ itself as the time. (The
same ODE in u = ln σ, dx/du = x − D, needs ~1.5× the steps for the same error on
the closed-form Gaussian and ring problems: the tolerance is relative and x grows
with σ.)

The divergence is exact (one JVP per dimension, vmapped over basis vectors: for
small d) or Hutchinson's estimate εᵀ(∂f/∂x)ε with Rademacher or Gaussian probes ε,
drawn once per solve from `key` (FFJORD §2.2). Both assume the denoiser treats the
samples of a batch independently (no batch statistics).

Bits per dimension follow the score_sde/FFJORD convention for 8-bit data scaled to
[−1, 1] with uniform dequantization: x = 2(k + u)/256 − 1, k ∈ {0…255}^d,
u ~ U[0, 1)^d. The density of the dequantized v = k + u is p(x)·(2/256)^d, and

    bits/dim = −(log p(x) + d·ln(2/256)) / (d·ln 2) = −log p(x)/(d·ln 2) + 7,

an upper bound on the discrete model's negative log-likelihood in bits.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from genode.denoiser import Denoiser
from genode.sampling import adaptive

_TRACES = ("exact", "hutchinson")
_PROBES = ("rademacher", "gaussian")


class LikelihoodInfo(NamedTuple):
  """Diagnostics of one likelihood solve (B = batch size)."""

  nfe: jax.Array  # () drift evaluations (each: one denoiser call plus its JVPs)
  num_steps: jax.Array  # () adaptive steps taken, accepted + rejected
  num_accepted_steps: jax.Array  # ()
  num_rejected_steps: jax.Array  # ()
  num_probes: int  # Hutchinson probes per sample; 0 for the exact trace
  stderr: jax.Array | None  # (B,) standard error of logp over probes; None unless num_probes > 1
  latent: jax.Array  # (B, ...) x(σ_max), the encoding of x
  prior_logp: jax.Array  # (B,) log N(x(σ_max); 0, σ_max² I)
  delta_logp: jax.Array  # (B,) ∫ ∇·f dσ (the probe mean for Hutchinson)


def log_likelihood(denoiser: Denoiser, x: jax.Array, *, sigma_min: float, sigma_max: float,
                   trace: str = "exact", key: jax.Array | None = None, num_probes: int = 1,
                   probe: str = "rademacher", rtol: float = 1e-5, atol: float = 1e-5,
                   solver: str = "dopri5", max_steps: int = 4096
                   ) -> tuple[jax.Array, LikelihoodInfo]:
  """log p(x) in nats of the PF-ODE model with prior N(0, σ_max² I), per sample.

  Args:
    denoiser: D(x; σ), x (B, ...), σ (B,) -> (B, ...).
    x: (B, ...) data points (at noise level σ_min).
    sigma_min, sigma_max: the integration range, 0 < σ_min < σ_max (Python floats).
    trace: "exact" (d JVPs per evaluation) or "hutchinson" (`num_probes` JVPs).
    key: PRNG key for the Hutchinson probes (required for trace="hutchinson").
    num_probes: probes per sample; with > 1, `info.stderr` is the standard error.
    probe: "rademacher" (±1) or "gaussian" (N(0, 1)) probe entries.
    rtol, atol: tolerances of the `PIDController`.
    solver: "dopri5" or "tsit5".
    max_steps: diffrax's step limit; exceeding it raises.

  NFE (drift evaluations, each a denoiser call and its JVPs) is counted as in
  `genode.sampling.adaptive`: 2 for the starting step size, 1 for the first FSAL stage
  (+1 per retry of the first step), 6 per step.

  Returns:
    logp (B,) in nats, and a `LikelihoodInfo`.
  """
  sigma_min, sigma_max = _check_range(sigma_min, sigma_max)
  _lookup(solver, adaptive.ADAPTIVE_SOLVERS, "solver")  # fail before tracing anything
  if trace not in _TRACES:
    raise ValueError(f"Unknown trace {trace!r}; expected one of {list(_TRACES)}")
  probes = None
  if trace == "hutchinson":
    probes = _probes(key, probe, num_probes, x)

  div0 = jnp.zeros(x.shape[:1] if probes is None else probes.shape[:2], x.dtype)
  (latent, div), counts = adaptive.solve_adaptive(
      _AugmentedODE(denoiser, probes), (x, div0), sigma_min, sigma_max, solver=solver,
      rtol=rtol, atol=atol, max_steps=max_steps, throw=True)

  prior_logp = _gaussian_log_prob(latent, sigma_max)
  stderr = None
  if probes is not None:
    if num_probes > 1:
      stderr = jnp.std(div, axis=0, ddof=1) / math.sqrt(num_probes)
    div = jnp.mean(div, axis=0)
  info = LikelihoodInfo(
      nfe=counts.nfe, num_steps=counts.num_steps,
      num_accepted_steps=counts.num_accepted_steps,
      num_rejected_steps=counts.num_rejected_steps,
      num_probes=0 if probes is None else num_probes, stderr=stderr, latent=latent,
      prior_logp=prior_logp, delta_logp=div)
  return prior_logp + div, info


class _AugmentedODE(eqx.Module):
  """d(x, ∫∇·f)/dσ = (f, ∇·f) (FFJORD eq. 4), f = (x − D(x; σ))/σ (EDM eq. 4).

  An equinox module, so that diffrax's jit cache recognises a repeated solve (same
  denoiser, new x or probes) and does not recompile.
  """

  denoiser: Denoiser
  probes: jax.Array | None  # (K, B, ...) Hutchinson probes, or None for the exact trace

  def drift(self, x, sigma):
    sigma = sigma.astype(x.dtype)
    return (x - self.denoiser(x, jnp.broadcast_to(sigma, x.shape[:1]))) / sigma

  def __call__(self, sigma, state, args):
    del args
    x, _ = state
    fn = lambda z: self.drift(z, sigma)
    if self.probes is None:
      return _exact_divergence(fn, x)
    return _hutchinson_divergence(fn, x, self.probes)


def _exact_divergence(fn, x):
  """fn(x) and ∇·fn per sample, tr(∂fn/∂x) as d JVPs with the basis vectors."""
  batch, dim = x.shape[0], math.prod(x.shape[1:])
  value, jvp = jax.linearize(fn, x)
  basis = jnp.eye(dim, dtype=x.dtype).reshape((dim, 1) + x.shape[1:])

  def diagonal_entry(e):  # e_iᵀ J e_i for every sample at once
    tangent = jnp.broadcast_to(e, x.shape)
    return jnp.sum((jvp(tangent) * tangent).reshape(batch, dim), -1)

  return value, jnp.sum(jax.lax.map(diagonal_entry, basis, batch_size=min(dim, 64)), 0)


def _hutchinson_divergence(fn, x, probes):
  """fn(x) and εᵀ(∂fn/∂x)ε for each probe ε: probes (K, B, ...) -> (K, B)."""
  value, jvp = jax.linearize(fn, x)
  products = jax.vmap(jvp)(probes) * probes
  return value, jnp.sum(products.reshape(probes.shape[:2] + (-1,)), -1)


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
  raise ValueError(f"Unknown probe {probe!r}; expected one of {list(_PROBES)}")


def _gaussian_log_prob(x, sigma):
  """log N(x; 0, σ² I) per sample, x (B, ...) -> (B,)."""
  dim = math.prod(x.shape[1:])
  sq = jnp.sum(x.reshape(x.shape[0], -1) ** 2, -1)
  return -0.5 * sq / sigma**2 - 0.5 * dim * math.log(2 * math.pi * sigma**2)


def _check_range(sigma_min, sigma_max):
  sigma_min, sigma_max = float(sigma_min), float(sigma_max)
  if not sigma_min > 0:
    raise ValueError(f"sigma_min must be > 0, got {sigma_min}")
  if not sigma_max > sigma_min:
    raise ValueError(f"sigma_max must be > sigma_min = {sigma_min}, got {sigma_max}")
  return sigma_min, sigma_max


def _lookup(name, table, kind):
  try:
    return table[name]
  except KeyError:
    raise ValueError(f"Unknown {kind} {name!r}; valid: {sorted(table)}") from None


# ---------------------------------------------------------------------------
# Discrete data: bits per dimension and uniform dequantization.
# ---------------------------------------------------------------------------


def bits_per_dim(logp_nats, num_dims: int, *, data_scale: float = 2.0, num_levels: int = 256):
  """Bits/dim of `num_levels`-level data from the log-density of its scaled version.

  The data x = data_scale·(k + u)/num_levels + offset, k ∈ {0…num_levels−1}^d,
  u ~ U[0, 1)^d (the default: 8-bit data in [−1, 1]). The density of v = k + u is
  p(x)·(data_scale/num_levels)^d, so

      bits/dim = −(log p(x)/d + ln(data_scale/num_levels)) / ln 2.

  Args:
    logp_nats: log p(x) in nats, any shape.
    num_dims: d, the number of dimensions of one sample.
  """
  logp_nats = jnp.asarray(logp_nats)
  return -(logp_nats / num_dims + math.log(data_scale / num_levels)) / math.log(2.0)


def dequantize(key, levels, *, num_levels: int = 256, low: float = -1.0, high: float = 1.0):
  """x = low + (high − low)·(k + u)/num_levels, u ~ U[0, 1): integer levels k -> [low, high).

  Args:
    key: PRNG key for u.
    levels: integer array (e.g. uint8 images) with entries in {0…num_levels−1}.

  Returns:
    A float array of the same shape (the default float dtype). Use
    `bits_per_dim(..., data_scale=high − low, num_levels=num_levels)` with it.
  """
  levels = jnp.asarray(levels)
  if not jnp.issubdtype(levels.dtype, jnp.integer):
    raise ValueError(f"dequantize expects integer levels (e.g. uint8), got dtype {levels.dtype}")
  dtype = jnp.result_type(float)
  u = jax.random.uniform(key, levels.shape, dtype)
  return low + (high - low) * (levels.astype(dtype) + u) / num_levels
