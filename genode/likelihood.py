"""Exact likelihoods of the probability-flow ODE (instantaneous change of variables).

Convention (FFJORD, Grathwohl et al. 2019; score_sde, Song et al. 2021, App. D.2):
the model is the PF-ODE dx/dσ = f(x; σ) = (x − D(x; σ))/σ (EDM eq. 4 with σ(t) = t,
s = 1) with prior x(σ_max) ~ N(0, σ_max² I). Its density at σ_min is

    log p(x) = log N(x(σ_max); 0, σ_max² I) + ∫_{σ_min}^{σ_max} ∇·f(x(σ); σ) dσ,

x(σ_min) = x (FFJORD eq. 4, integrated forward from the data to the prior): the CNF
likelihood `genode.ode.cnf_log_likelihood` of the drift f with t = σ, solved by
diffrax's adaptive Dopri5/Tsit5 with a `PIDController`. (The same ODE in u = ln σ,
dx/du = x − D, needs ~1.5× the steps for the same error on the closed-form Gaussian and
ring problems: the tolerance is relative and x grows with σ.)

The divergence is exact (one JVP per dimension, for small d) or Hutchinson's estimate
with Rademacher or Gaussian probes drawn once per solve (`genode.ode.cnf`). Both assume
the denoiser treats the samples of a batch independently (no batch statistics).

Bits per dimension and dequantization of 8-bit data: `genode.bits`.
"""

from __future__ import annotations

import jax

from genode.denoiser import Denoiser
from genode.ode import cnf
from genode.ode import terms

LikelihoodInfo = cnf.CNFInfo


def log_likelihood(denoiser: Denoiser, x: jax.Array, *, sigma_min: float, sigma_max: float,
                   trace: str = "exact", key: jax.Array | None = None, num_probes: int = 1,
                   probe: str = "rademacher", rtol: float = 1e-5, atol: float = 1e-5,
                   solver: str = "dopri5", max_steps: int = 4096
                   ) -> tuple[jax.Array, LikelihoodInfo]:
  """log p(x) in nats of the PF-ODE model with prior N(0, σ_max² I), per sample.

  Args:
    denoiser: D(x; σ), x (B, ...), σ a () array -> (B, ...) (`genode.denoiser.Denoiser`).
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
  `genode.ode.adaptive`: 2 for the starting step size, 1 for the first FSAL stage
  (+1 per retry of the first step), 6 per step.

  Returns:
    logp (B,) in nats, and a `LikelihoodInfo` (`genode.ode.CNFInfo`).
  """
  sigma_min, sigma_max = _check_range(sigma_min, sigma_max)
  return cnf.cnf_log_likelihood(
      terms.SigmaDrift(denoiser), x, sigma_min, sigma_max,
      lambda z: cnf.gaussian_log_prob(z, sigma_max), trace=trace, key=key,
      num_probes=num_probes, probe=probe, rtol=rtol, atol=atol, solver=solver,
      max_steps=max_steps)


def _check_range(sigma_min, sigma_max):
  sigma_min, sigma_max = float(sigma_min), float(sigma_max)
  if not sigma_min > 0:
    raise ValueError(f"sigma_min must be > 0, got {sigma_min}")
  if not sigma_max > sigma_min:
    raise ValueError(f"sigma_max must be > sigma_min = {sigma_min}, got {sigma_max}")
  return sigma_min, sigma_max
