"""k-diffusion's fixed-grid samplers, transcribed to NumPy float64 as a reference.

A line-for-line transcription of `k_diffusion/sampling.py` (Katherine Crowson,
crowsonkb/k-diffusion at commit 686dbad0f39640ea25c8a8c6a6e56bb40eacefa2, MIT
License, Copyright (c) 2022 Katherine Crowson): `get_sigmas_karras`, `to_d`,
`sample_euler`, `sample_heun`, `sample_dpm_2`, `linear_multistep_coeff`, `sample_lms`
and `sample_dpmpp_2m`. Torch is replaced by NumPy; the deterministic path only
(s_churn = 0: the churn branches, callbacks and progress bars are dropped), so that
genode's samplers can be checked against, and compared with, the de-facto reference
implementations without installing torch.

`model(x, sigma)` takes x (B, ...) and σ (B,) (k-diffusion calls it with
`sigma * s_in`) and returns the denoised x, as NumPy arrays.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import integrate

Model = Callable[[np.ndarray, np.ndarray], np.ndarray]


def append_zero(x):
  return np.concatenate([x, np.zeros([1], x.dtype)])


def get_sigmas_karras(n, sigma_min, sigma_max, rho=7.0):
  """Constructs the noise schedule of Karras et al. (2022)."""
  ramp = np.linspace(0, 1, n)
  min_inv_rho = sigma_min ** (1 / rho)
  max_inv_rho = sigma_max ** (1 / rho)
  sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
  return append_zero(sigmas)


def to_d(x, sigma, denoised):
  """Converts a denoiser output to a Karras ODE derivative."""
  return (x - denoised) / _append_dims(sigma, x.ndim)


def _append_dims(x, target_dims):
  """k_diffusion.utils.append_dims: trailing singleton dimensions up to target_dims."""
  x = np.asarray(x)
  return x[(...,) + (None,) * (target_dims - x.ndim)]


def sample_euler(model: Model, x, sigmas):
  """Implements Algorithm 2 (Euler steps) from Karras et al. (2022), s_churn = 0."""
  s_in = np.ones([x.shape[0]], x.dtype)
  for i in range(len(sigmas) - 1):
    sigma_hat = sigmas[i]
    denoised = model(x, sigma_hat * s_in)
    d = to_d(x, sigma_hat, denoised)
    dt = sigmas[i + 1] - sigma_hat
    # Euler method
    x = x + d * dt
  return x


def sample_heun(model: Model, x, sigmas):
  """Implements Algorithm 2 (Heun steps) from Karras et al. (2022), s_churn = 0."""
  s_in = np.ones([x.shape[0]], x.dtype)
  for i in range(len(sigmas) - 1):
    sigma_hat = sigmas[i]
    denoised = model(x, sigma_hat * s_in)
    d = to_d(x, sigma_hat, denoised)
    dt = sigmas[i + 1] - sigma_hat
    if sigmas[i + 1] == 0:
      # Euler method
      x = x + d * dt
    else:
      # Heun's method
      x_2 = x + d * dt
      denoised_2 = model(x_2, sigmas[i + 1] * s_in)
      d_2 = to_d(x_2, sigmas[i + 1], denoised_2)
      d_prime = (d + d_2) / 2
      x = x + d_prime * dt
  return x


def sample_dpm_2(model: Model, x, sigmas):
  """A sampler inspired by DPM-Solver-2 and Algorithm 2 from Karras et al. (2022)."""
  s_in = np.ones([x.shape[0]], x.dtype)
  for i in range(len(sigmas) - 1):
    sigma_hat = sigmas[i]
    denoised = model(x, sigma_hat * s_in)
    d = to_d(x, sigma_hat, denoised)
    if sigmas[i + 1] == 0:
      # Euler method
      dt = sigmas[i + 1] - sigma_hat
      x = x + d * dt
    else:
      # DPM-Solver-2: sigma_hat.log().lerp(sigmas[i + 1].log(), 0.5).exp()
      log_hat = np.log(sigma_hat)
      sigma_mid = np.exp(log_hat + 0.5 * (np.log(sigmas[i + 1]) - log_hat))
      dt_1 = sigma_mid - sigma_hat
      dt_2 = sigmas[i + 1] - sigma_hat
      x_2 = x + d * dt_1
      denoised_2 = model(x_2, sigma_mid * s_in)
      d_2 = to_d(x_2, sigma_mid, denoised_2)
      x = x + d_2 * dt_2
  return x


def linear_multistep_coeff(order, t, i, j):
  if order - 1 > i:
    raise ValueError(f"Order {order} too high for step {i}")

  def fn(tau):
    prod = 1.0
    for k in range(order):
      if j == k:
        continue
      prod *= (tau - t[i - k]) / (t[i - j] - t[i - k])
    return prod

  return integrate.quad(fn, t[i], t[i + 1], epsrel=1e-4)[0]


def sample_lms(model: Model, x, sigmas, order=4):
  s_in = np.ones([x.shape[0]], x.dtype)
  sigmas_cpu = np.asarray(sigmas, np.float64)
  ds = []
  for i in range(len(sigmas) - 1):
    denoised = model(x, sigmas[i] * s_in)
    d = to_d(x, sigmas[i], denoised)
    ds.append(d)
    if len(ds) > order:
      ds.pop(0)
    cur_order = min(i + 1, order)
    coeffs = [linear_multistep_coeff(cur_order, sigmas_cpu, i, j) for j in range(cur_order)]
    x = x + sum(coeff * d for coeff, d in zip(coeffs, reversed(ds)))
  return x


def sample_dpmpp_2m(model: Model, x, sigmas):
  """DPM-Solver++(2M)."""
  s_in = np.ones([x.shape[0]], x.dtype)
  sigma_fn = lambda t: np.exp(-t)
  t_fn = lambda sigma: -np.log(sigma)
  old_denoised = None

  for i in range(len(sigmas) - 1):
    denoised = model(x, sigmas[i] * s_in)
    with np.errstate(divide="ignore"):  # t_fn(0) = inf on the last step, as in torch
      t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
    h = t_next - t
    if old_denoised is None or sigmas[i + 1] == 0:
      x = (sigma_fn(t_next) / sigma_fn(t)) * x - np.expm1(-h) * denoised
    else:
      h_last = t - t_fn(sigmas[i - 1])
      r = h_last / h
      denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
      x = (sigma_fn(t_next) / sigma_fn(t)) * x - np.expm1(-h) * denoised_d
    old_denoised = denoised
  return x


# Name -> (sampler, NFE on a grid of n positive σ's plus a final 0, i.e. n steps).
SAMPLERS: dict[str, tuple[Callable, Callable[[int], int]]] = {
    "euler": (sample_euler, lambda n: n),
    "heun": (sample_heun, lambda n: 2 * n - 1),
    "dpm_2": (sample_dpm_2, lambda n: 2 * n - 1),
    "lms": (sample_lms, lambda n: n),
    "dpmpp_2m": (sample_dpmpp_2m, lambda n: n),
}
