"""The vector fields of the probability-flow ODE and the reverse SDE, as equinox modules.

Every one is written from a denoiser D(x; σ) (`genode.denoiser.Denoiser`: x (B, ...), σ
a () array). Being `equinox.Module`s (callables whose fields are the denoiser etc.), a
repeated solve with the same denoiser hits diffrax's jit cache instead of recompiling.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import lineax

from genode.denoiser import Denoiser
from genode.formulations import Formulation
from genode.ode.solvers import sigma_of_lambda


def pf_ode_drift(denoiser: Denoiser, x, sigma):
  """dx/dσ = (x − D(x; σ))/σ: EDM eq. 4 with σ(t) = t, s = 1 (k-diffusion's `to_d`)."""
  return (x - denoiser(x, sigma)) / sigma


class SigmaODE(eqx.Module):
  """The PF-ODE in σ-time, diffrax's (t, y, args) signature: t = σ."""

  denoiser: Denoiser

  def __call__(self, sigma, x, args):
    return pf_ode_drift(self.denoiser, x, sigma)


class SigmaDrift(eqx.Module):
  """The PF-ODE drift f(x, σ) = (x − D(x; σ))/σ with the CNF's (x, t) signature, t = σ
  (`genode.ode.cnf`, `genode.likelihood`)."""

  denoiser: Denoiser

  def __call__(self, x, sigma):
    return pf_ode_drift(self.denoiser, x, sigma)


class NativeODE(eqx.Module):
  """dx/dt = (σ̇/σ + ṡ/s)·x − (σ̇·s/σ)·D(x/s; σ) (EDM eq. 4) in the formulation's t."""

  denoiser: Denoiser
  formulation: Formulation = eqx.field(static=True)

  def __call__(self, t, x, args):
    f = self.formulation
    sigma, sigma_dot = f.sigma(t), f.sigma_deriv(t)
    s, s_dot = f.scale(t), f.scale_deriv(t)
    return (sigma_dot / sigma + s_dot / s) * x - (sigma_dot * s / sigma) * self.denoiser(x / s, sigma)


class DataPrediction(eqx.Module):
  """D(x; σ = e^{−λ}), the term of the exponential solvers in `genode.ode.solvers`."""

  denoiser: Denoiser

  def __call__(self, lam, x, args):
    return self.denoiser(x, sigma_of_lambda(lam))


class Denoised(eqx.Module):
  """D(x; σ) with σ itself as the time (the term of `lms_data`)."""

  denoiser: Denoiser

  def __call__(self, sigma, x, args):
    return self.denoiser(x, sigma)


class ReverseDrift(eqx.Module):
  """Drift of the reverse SDE in σ: −2σ·∇log p = 2(x − D(x; σ))/σ."""

  denoiser: Denoiser

  def __call__(self, sigma, x, args):
    return 2 * (x - self.denoiser(x, sigma)) / sigma


def reverse_diffusion(sigma, x, args):
  """Diffusion of the reverse SDE in σ: √(2σ), elementwise (g² = dσ²/dσ)."""
  return lineax.DiagonalLinearOperator(jnp.full_like(x, jnp.sqrt(2 * sigma)))
