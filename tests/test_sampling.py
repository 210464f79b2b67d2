"""Samplers against exact answers: closed-form Gaussian flows and laws, k-diffusion's
update rules (transcribed in NumPy below), DDIM identities, NFE counts of every solver,
the solver records, the denoiser contract (σ a () array), trajectories, bad input.

All in float64. Every distinct (solver, grid length, denoiser) costs one diffrax compile
(~2 s), so the problems share denoiser objects and grid sizes.
"""

import ast
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genode import formulations
from genode import ode
from genode import sampling
from genode.benchmarks import kdiffusion_reference as kdiff
from genode.denoiser import per_sample
from genode.gaussians import Gaussian
from genode.gaussians import GaussianMixture
from genode.likelihood import log_likelihood

SIGMA_MIN, SIGMA_MAX = 0.05, 80.0


@pytest.fixture(scope="module")
def gaussian():
  with jax.enable_x64(True):
    return Gaussian.random(jax.random.key(0), 8)


@pytest.fixture(scope="module")
def ring():
  with jax.enable_x64(True):
    return GaussianMixture.ring()


def _start(key, sigma, shape):
  return sigma * jax.random.normal(jax.random.key(key), shape, jnp.float64)


def _max_err(a, b):
  return float(jnp.max(jnp.abs(a - b)))


# ---------------------------------------------------------------------------
# Convergence orders on the Gaussian's exact flow.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("solver, order, tolerance", [
    ("euler", 1, 0.3), ("heun", 2, 0.3), ("dpmpp_2m", 2, 0.3), ("dpmpp_3m_taylor", 3, 0.3),
    # The published 3M update halves the D'' term: second order (see DPMSolverPP3M).
    ("dpmpp_3m", 2, 0.3),
    # LMS(4)'s first three steps are of order 1–3: 3.6 at these sizes.
    ("lms", 4, 0.5),
    # (lms_data's order 4 is pre-asymptotic here, 3.2, 3.75 from 64 to 128 steps; its
    # weights' exactness on cubics is tested below.)
    ("lms_data:2", 2, 0.3)])
def test_fixed_grid_order_on_gaussian_flow(x64, gaussian, solver, order, tolerance):
  x = _start(1, SIGMA_MAX, (8, 8))
  solver, _, lms_order = solver.partition(":")
  options = {"order": int(lms_order)} if lms_order else {}
  errors = []
  for n in (32, 64):
    sigmas = sampling.karras_sigmas(n, SIGMA_MIN, SIGMA_MAX)
    out, info = sampling.sample(gaussian.denoiser, x, sigmas, solver, **options)
    assert int(info.num_steps) == n - 1 and bool(info.finite)
    errors.append(_max_err(out, gaussian.flow(x, SIGMA_MAX, SIGMA_MIN)))
  measured = math.log2(errors[0] / errors[1])
  assert abs(measured - order) < tolerance, (errors, measured)


def test_adaptive_solvers_reach_the_exact_flow(x64, gaussian):
  x = _start(1, SIGMA_MAX, (8, 8))
  sigmas = sampling.karras_sigmas(8, SIGMA_MIN, SIGMA_MAX)
  out, info = sampling.sample(gaussian.denoiser, x, sigmas, "tsit5", rtol=1e-10, atol=1e-10)
  assert _max_err(out, gaussian.flow(x, SIGMA_MAX, SIGMA_MIN)) < 1e-6
  assert int(info.num_steps) == int(info.num_accepted_steps) + int(info.num_rejected_steps)
  # With a final 0: integrate to the last positive σ, then denoise.
  out, info = sampling.sample(gaussian.denoiser, x, sampling.append_zero(sigmas), "dopri5",
                              rtol=1e-10, atol=1e-10)
  exact = gaussian.denoiser(gaussian.flow(x, SIGMA_MAX, SIGMA_MIN), SIGMA_MIN)
  assert _max_err(out, exact) < 1e-6 and bool(info.finite)


def test_initial_step_is_hairers_on_a_linear_ode(x64):
  """dy/dt = a·y: d1 = |a|·d0, h0 = 0.01/|a|, d2 = a²·d0, h = min(100·h0, (0.01/max)^{1/5})."""
  y0, a, tol = jnp.asarray([1.0, -2.0, 3.0]), -40.0, 1e-3
  step = ode.initial_step(lambda t, y, args: a * y, y0, 1.0, 0.0, rtol=tol, atol=tol)
  d0 = float(jnp.sqrt(jnp.mean((y0 / (tol + tol * jnp.abs(y0))) ** 2)))
  h0 = 0.01 / abs(a)
  expected = min(100 * h0, (0.01 / max(abs(a) * d0, a**2 * d0)) ** (1 / 5))
  np.testing.assert_allclose(step, -expected, rtol=1e-12)  # signed: t decreases


def test_coarse_tolerance_takes_small_first_steps(x64, gaussian):
  # (With the first grid step 80 → 0.05 as the first step, tol 0.1 accepted it whole.)
  x = _start(1, SIGMA_MAX, (8, 8))
  sigmas = sampling.karras_sigmas(8, SIGMA_MIN, SIGMA_MAX)
  out, info = sampling.sample(gaussian.denoiser, x, sigmas, "dopri5", rtol=0.1, atol=0.1)
  assert int(info.num_accepted_steps) >= 4
  assert _max_err(out, gaussian.flow(x, SIGMA_MAX, SIGMA_MIN)) < 0.3


def test_edm_stochastic_without_churn_is_heun(x64, gaussian):
  x = _start(1, SIGMA_MAX, (8, 8))
  sigmas = sampling.karras_sigmas(32, SIGMA_MIN, SIGMA_MAX)  # heun's compile is shared
  heun, _ = sampling.sample(gaussian.denoiser, x, sigmas, "heun")
  edm, info = sampling.sample(gaussian.denoiser, x, sigmas, "edm_stochastic",
                              key=jax.random.key(0), S_churn=0.0)
  assert _max_err(heun, edm) < 1e-10 and int(info.nfe) == 2 * 31


# ---------------------------------------------------------------------------
# The ring mixture: k-diffusion's update rules, and convergence to a tight reference.
# ---------------------------------------------------------------------------


def _ring_denoiser_np(ring, x, sigma):
  means, std = np.asarray(ring.means), float(ring.stds[0])
  var = std**2 + sigma**2
  logits = -0.5 * np.sum((x[:, None, :] - means) ** 2, -1) / var
  post = np.exp(logits - logits.max(1, keepdims=True))
  post /= post.sum(1, keepdims=True)
  shrink = std**2 / var
  return np.einsum("bk,bkd->bd", post, means + shrink * (x[:, None, :] - means))


def _kdiffusion(solver, model, x, sigmas):
  """NumPy transcriptions of k-diffusion's sample_euler, sample_heun, sample_dpmpp_2m and
  sample_dpmpp_3m_sde(eta=0) (crowsonkb/k-diffusion, k_diffusion/sampling.py, MIT);
  "dpmpp_3m_taylor" is the latter with the Taylor-consistent d2 (twice k-diffusion's)."""
  old, older, h_1, h_2 = None, None, None, None
  for i in range(len(sigmas) - 1):
    s, s_next = sigmas[i], sigmas[i + 1]
    denoised = model(x, s)
    if solver in ("euler", "heun"):
      d = (x - denoised) / s
      x_2 = x + d * (s_next - s)
      if solver == "heun" and s_next != 0:
        d_2 = (x_2 - model(x_2, s_next)) / s_next
        x_2 = x + (d + d_2) / 2 * (s_next - s)
      x = x_2
    elif s_next == 0:
      x = denoised
    elif solver == "dpmpp_2m":
      t, t_next = -np.log(s), -np.log(s_next)
      h = t_next - t
      if old is None:
        x = (np.exp(-t_next) / np.exp(-t)) * x - np.expm1(-h) * denoised
      else:
        r = h_1 / h
        denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old
        x = (np.exp(-t_next) / np.exp(-t)) * x - np.expm1(-h) * denoised_d
      h_1, old = h, denoised
      continue
    else:  # dpmpp_3m(_taylor), eta = 0
      h = -np.log(s_next) + np.log(s)
      x = np.exp(-h) * x - np.expm1(-h) * denoised
      phi_2 = np.expm1(-h) / h + 1
      if h_2 is not None:
        r0, r1 = h_1 / h, h_2 / h
        d1_0, d1_1 = (denoised - old) / r0, (old - older) / r1
        d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
        d2 = (d1_0 - d1_1) / (r0 + r1) * (2 if solver.endswith("taylor") else 1)
        x = x + phi_2 * d1 - (phi_2 / h - 0.5) * d2
      elif h_1 is not None:
        x = x + phi_2 * (denoised - old) / (h_1 / h)
    if solver.startswith("dpmpp"):
      old, older, h_1, h_2 = denoised, old, h, h_1
  return x


def test_ring_kdiffusion_rules_and_convergence(x64, ring):
  # (Euler = DDIM is checked exactly in the DDIM test, its order on the Gaussian.)
  x = _start(2, SIGMA_MAX, (32, 2))
  coarse, fine = (sampling.get_sigmas("karras", n, 0.002, SIGMA_MAX) for n in (8, 64))
  reference, _ = sampling.sample(ring.denoiser, x, coarse, "dopri5", rtol=1e-10, atol=1e-10)
  model = lambda x, s: _ring_denoiser_np(ring, x, s)  # noqa: E731
  for solver in ("heun", "dpmpp_2m", "dpmpp_3m", "dpmpp_3m_taylor"):
    out, _ = sampling.sample(ring.denoiser, x, coarse, solver)
    expected = _kdiffusion(solver, model, np.asarray(x), coarse)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-10, err_msg=solver)
    if solver == "dpmpp_3m":  # (second order: 8× the steps gives ~64×, borderline here)
      continue
    fine_out, _ = sampling.sample(ring.denoiser, x, fine, solver)
    errors = _max_err(out, reference), _max_err(fine_out, reference)
    # 8× the steps: the error falls ≥ 40× (second order would give 64×) to < 0.02.
    assert errors[0] > 40 * errors[1] and errors[1] < 0.02, (solver, errors)


@pytest.mark.parametrize("problem", ["ring", "gaussian"])
def test_lms_equals_kdiffusion_sample_lms(x64, ring, gaussian, problem):
  dist = {"ring": ring, "gaussian": gaussian}[problem]
  x = _start(6, SIGMA_MAX, (16, 2 if problem == "ring" else 8))
  sigmas = sampling.get_sigmas("karras", 9, 0.002, SIGMA_MAX)  # 9 steps, the last to 0
  model = lambda x_, s: np.asarray(dist.denoiser(jnp.asarray(x_), s))  # noqa: E731
  for order in (4, 2):
    out, info = sampling.sample(dist.denoiser, x, sigmas, "lms", order=order)
    expected = kdiff.sample_lms(model, np.asarray(x), sigmas, order=order)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-11, err_msg=str(order))
    assert int(info.nfe) == int(info.num_steps) == 9 and bool(info.finite)


def test_lms_coefficients_are_exact_and_need_a_concrete_grid(x64):
  # Σ_j c_ij = σ_{i+1} − σ_i (the Lagrange basis sums to 1), and they integrate cubics
  # exactly: Σ_j c_ij·p(σ_{i−j}) = ∫ p for p(σ) = σ³.
  sigmas = sampling.get_sigmas("karras", 7, 0.002, SIGMA_MAX)
  c = ode.solvers.lms_coefficients(sigmas, 4)
  np.testing.assert_allclose(c.sum(1), np.diff(sigmas), rtol=1e-12)
  for i in range(3, 7):
    cubic = sum(c[i, j] * sigmas[i - j] ** 3 for j in range(4))
    np.testing.assert_allclose(cubic, (sigmas[i + 1] ** 4 - sigmas[i] ** 4) / 4, rtol=1e-10)
  assert np.all(c[0, 1:] == 0) and np.all(c[1, 2:] == 0)
  with pytest.raises(ValueError, match="concrete grid"):  # (lms_data: tests/test_schedules.py)
    jax.jit(lambda s: sampling.sample(lambda x, _: x, jnp.ones((2, 2)), s, "lms"))(
        jnp.asarray(sigmas))


def test_lms_data_weights_integrate_cubics_exactly(x64):
  """x_{i+1} = σ_{i+1}/σ_i·x_i − σ_{i+1}∫D/τ² dτ is exact for D(σ) = σ^k, k < p_i."""
  sigmas = sampling.get_sigmas("karras", 7, 0.002, SIGMA_MAX)
  decay, weights = ode.solvers.lms_data_coefficients(sigmas, 4)
  np.testing.assert_allclose(decay[:-1], sigmas[1:-1] / sigmas[:-2], rtol=1e-15)
  np.testing.assert_allclose(decay[:-1] + weights[:-1].sum(1), 1, rtol=1e-12)  # D = const
  for i in range(3, 6):
    a, b = sigmas[i], sigmas[i + 1]
    exact = {1: np.log(b / a), 2: b - a, 3: (b**2 - a**2) / 2}  # ∫ τ^{k−2} dτ
    for k, integral in exact.items():
      np.testing.assert_allclose(sum(weights[i, j] * sigmas[i - j] ** k for j in range(4)),
                                 -b * integral, rtol=1e-11, err_msg=str((i, k)))
  # The step to σ = 0 is the final denoise: x = D(x; σ_last).
  assert decay[-1] == 0 and np.all(weights[-1] == [1, 0, 0, 0])
  x = _start(2, SIGMA_MAX, (4, 3))
  constant = lambda x_, s: jnp.full_like(x_, 0.5)  # noqa: E731  x(σ) = ½ + σ/σ_0·(x_0 − ½)
  out, _ = sampling.sample(constant, x, sigmas[:-1], "lms_data")
  np.testing.assert_allclose(out, 0.5 + sigmas[-2] / sigmas[0] * (x - 0.5), rtol=1e-12)


# ---------------------------------------------------------------------------
# Stochastic samplers: the exact law of the discretised sampler on a Gaussian.
# ---------------------------------------------------------------------------


def _heun_multiplier(lam, sigma, sigma_next):
  """Heun on du/dσ = σ/(λ + σ²)·u (the Gaussian's flow in its eigenbasis)."""
  k1 = sigma / (lam + sigma**2)
  k2 = sigma_next / (lam + sigma_next**2) * (1 + (sigma_next - sigma) * k1)
  return 1 + (sigma_next - sigma) * (k1 + k2) / 2


def _exact_law(gaussian, sigmas, solver, churn=0.0):
  """Per-eigendirection mean and variance of the sampler's output, from x = σ_0·n."""
  lam = np.asarray(gaussian.eigenvalues)
  mean = -np.asarray(gaussian.mean @ gaussian.eigenvectors)
  var = np.full_like(lam, sigmas[0] ** 2)
  n_steps = len(sigmas) - 1
  for i in range(n_steps):
    s, s_next = sigmas[i], sigmas[i + 1]
    if solver == "edm_stochastic":
      s_hat = s * (1 + min(churn / n_steps, math.sqrt(2) - 1))
      var = var + s_hat**2 - s**2
      a = lam / (lam + s_hat**2) if s_next == 0 else _heun_multiplier(lam, s_hat, s_next)
    else:  # reverse_sde: Euler–Maruyama, then a final denoise
      if s_next == 0:
        a = lam / (lam + s**2)
      else:
        a = 1 - 2 * (s - s_next) * s / (lam + s**2)
        var = a**2 * var + 2 * s * (s - s_next)
        mean = a * mean
        continue
    mean, var = a * mean, a**2 * var
  return mean, var


@pytest.mark.parametrize("solver, options, steps", [
    ("edm_stochastic", {"S_churn": 10.0}, 64),
    ("reverse_sde", {}, 512),  # Euler–Maruyama is weakly first order: many cheap steps
])
def test_stochastic_samplers_have_the_gaussians_law(x64, solver, options, steps):
  g = Gaussian.random(jax.random.key(5), 4)
  num = 4000
  x = _start(3, SIGMA_MAX, (num, 4))
  sigmas = sampling.get_sigmas("karras", steps, 0.002, SIGMA_MAX)
  key = jax.random.key(7)
  out, info = sampling.sample(g.denoiser, x, sigmas, solver, key=key, **options)
  again, _ = sampling.sample(g.denoiser, x, sigmas, solver, key=key, **options)
  other, _ = sampling.sample(g.denoiser, x, sigmas, solver, key=jax.random.key(8), **options)
  np.testing.assert_array_equal(out, again)
  assert _max_err(out, other) > 1e-3
  assert int(info.nfe) == (2 * steps - 1 if solver == "edm_stochastic" else steps)

  mean, var = _exact_law(g, sigmas, solver, options.get("S_churn", 0.0))
  # The discretised law is close to the data's: variance within 5%, mean within 0.02.
  np.testing.assert_allclose(var, g.eigenvalues, rtol=0.05)
  np.testing.assert_allclose(mean, 0, atol=0.02)
  u = np.asarray((out - g.mean[None]) @ g.eigenvectors)  # eigenbasis: independent directions
  cov = np.cov(u.T)
  # Statistical tolerance (5 standard errors) around the exact discretised law.
  np.testing.assert_allclose(u.mean(0), mean, atol=5 * np.sqrt(var / num).max())
  np.testing.assert_allclose(np.diag(cov), var, rtol=5 * np.sqrt(2 / num))
  off = cov - np.diag(np.diag(cov))
  assert np.all(np.abs(off) < 5 * np.sqrt(np.outer(var, var) / num))


# ---------------------------------------------------------------------------
# Native coordinates and DDIM.
# ---------------------------------------------------------------------------


def _ddim(ddpm, denoiser, x_bar, sigmas):
  """Song et al. 2021 eq. 12 (η = 0) in the DDPM variables x = √ᾱ·x̄, on ᾱ = 1/(1 + σ²)."""
  alpha_bar = 1 / (1 + sigmas**2)
  x = np.sqrt(alpha_bar[0]) * x_bar
  for i in range(len(sigmas) - 1):
    a, a_next = alpha_bar[i], alpha_bar[i + 1]
    x0 = np.asarray(denoiser(x / np.sqrt(a), sigmas[i]))
    eps = (x - np.sqrt(a) * x0) / np.sqrt(1 - a)
    x = np.sqrt(a_next) * x0 + np.sqrt(1 - a_next) * eps
  return x / np.sqrt(alpha_bar[-1])


def test_ddim_is_euler_in_sigma_and_rectified_flow_euler(x64, gaussian):
  ddpm = formulations.DDPM()
  sigmas = sampling.ddpm_timestep_sigmas(ddpm, 12)
  x = _start(4, sigmas[0], (8, 8))
  ddim = _ddim(ddpm, gaussian.denoiser, np.asarray(x), sigmas)
  euler, info = sampling.sample(gaussian.denoiser, x, sigmas, "euler")
  rf_euler, _ = sampling.sample(gaussian.denoiser, x, sigmas, "euler",
                                formulation=formulations.RectifiedFlow())
  np.testing.assert_allclose(euler, ddim, rtol=1e-11, atol=1e-11)
  np.testing.assert_allclose(rf_euler, ddim, rtol=1e-11, atol=1e-11)
  assert int(info.nfe) == 11


def test_vp_native_heun_converges_to_the_exact_flow(x64, gaussian):
  vp = formulations.VP()
  x = _start(5, vp.sigma_max, (8, 8))
  errors = []
  for n in (24, 48):
    sigmas = sampling.uniform_t_sigmas(vp, n)
    out, info = sampling.sample(gaussian.denoiser, x, sigmas, "heun", formulation=vp)
    errors.append(_max_err(out, gaussian.flow(x, sigmas[0], sigmas[-1])))
  assert abs(math.log2(errors[0] / errors[1]) - 2) < 0.3, errors
  assert errors[1] < 1e-2


# ---------------------------------------------------------------------------
# NFE, jit, non-finite values, bad input.
# ---------------------------------------------------------------------------


def _counting(denoiser):
  calls = [0]

  def count():
    calls[0] += 1

  def counted(x, sigma):
    jax.debug.callback(count)
    return denoiser(x, sigma)

  return counted, calls


@pytest.mark.parametrize("solver", list(sampling.SOLVERS))
def test_nfe_counts_every_denoiser_call(x64, gaussian, solver):
  record = sampling.get_solver(solver)
  denoiser, calls = _counting(gaussian.denoiser)
  sigmas = sampling.get_sigmas("karras", 6, SIGMA_MIN, SIGMA_MAX)  # N = 6 steps, last to 0
  _, info = sampling.sample(denoiser, _start(1, SIGMA_MAX, (4, 8)), sigmas, record,
                            key=jax.random.key(0) if record.stochastic else None)
  jax.effects_barrier()
  assert int(info.nfe) == calls[0] and bool(info.finite)
  if record.adaptive:  # 2 (starting step) + 1 (FSAL) + 6/step (+ first-step retries) + 1
    assert calls[0] >= 3 + record.nfe_per_step * int(info.num_steps - 1) + 1
  elif record.final_step is None:  # a multistep step to 0 (lms, lms_data)
    assert calls[0] == record.nfe_per_step * 6
  else:  # e.g. EDM Algorithm 1: no correction on the step to 0
    assert calls[0] == record.nfe_per_step * 5 + 1


def test_solver_records(x64, gaussian):
  """The records say what their users need; a record is accepted wherever a name is."""
  solvers = sampling.SOLVERS
  assert [n for n, s in solvers.items() if s.adaptive] == ["tsit5", "dopri5"]
  assert [n for n, s in solvers.items() if s.stochastic] == ["edm_stochastic", "reverse_sde"]
  assert {n: s.nfe_per_step for n, s in solvers.items() if s.nfe_per_step != 1} == {
      "heun": 2, "tsit5": 6, "dopri5": 6, "edm_stochastic": 2}
  assert all(name == s.name for name, s in solvers.items())
  assert solvers["dopri5"].options_type is sampling.AdaptiveOptions
  assert sampling.get_solver(solvers["heun"]) is solvers["heun"]
  x = _start(1, SIGMA_MAX, (4, 8))
  sigmas = sampling.get_sigmas("karras", 4, SIGMA_MIN, SIGMA_MAX)
  by_name, _ = sampling.sample(gaussian.denoiser, x, sigmas, "heun")
  by_record, _ = sampling.sample(gaussian.denoiser, x, sigmas, solvers["heun"])
  np.testing.assert_array_equal(by_name, by_record)


# ---------------------------------------------------------------------------
# The denoiser contract: σ is a () array, in sample and in log_likelihood alike.
# ---------------------------------------------------------------------------


def _two_written_denoisers(g):
  """The Gaussian's ideal D, written for a scalar σ only, and per sample with `per_sample`."""
  u, lam = g.eigenvectors, g.eigenvalues

  def scalar_written(x, sigma):
    assert jnp.ndim(sigma) == 0, jnp.shape(sigma)
    shrink = u @ jnp.diag(lam / (lam + sigma**2)) @ u.T  # (d, d): needs one σ
    return g.mean[None] + (x - g.mean[None]) @ shrink.T

  def batch_written(x, sigma):
    s = per_sample(sigma, x)  # (B, 1) from a () or (B,) σ
    return g.mean[None] + (((x - g.mean[None]) @ u) * (lam[None] / (lam[None] + s**2))) @ u.T

  return scalar_written, batch_written


def test_scalar_and_batch_written_denoisers_agree_in_sample_and_likelihood(x64, gaussian):
  scalar_written, batch_written = _two_written_denoisers(gaussian)
  x = _start(1, SIGMA_MAX, (4, 8))
  sigmas = sampling.get_sigmas("karras", 4, SIGMA_MIN, SIGMA_MAX)
  outs = [sampling.sample(d, x, sigmas, "heun")[0] for d in (scalar_written, batch_written)]
  np.testing.assert_allclose(outs[0], outs[1], rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(outs[0], sampling.sample(gaussian.denoiser, x, sigmas, "heun")[0],
                             rtol=1e-12, atol=1e-12)
  data = gaussian.sample(jax.random.key(2), 3, sigma=SIGMA_MIN)
  logps = [log_likelihood(d, data, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)[0]
           for d in (scalar_written, batch_written)]
  np.testing.assert_allclose(logps[0], logps[1], rtol=1e-10)
  np.testing.assert_allclose(logps[0], gaussian.model_log_prob(data, SIGMA_MIN, SIGMA_MAX),
                             atol=1e-3)


# ---------------------------------------------------------------------------
# Trajectories: the states at every grid point.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["euler", "heun", "dpmpp_2m", "lms", "edm_stochastic",
                                    "reverse_sde", "euler:rf"])
def test_trajectory_ends_at_samples_output(x64, gaussian, solver):
  solver, _, native = solver.partition(":")
  formulation = formulations.RectifiedFlow() if native else None
  sigmas = (sampling.get_sigmas("karras", 5, formulation.sigma_min, 50.0) if native else
            sampling.get_sigmas("karras", 5, SIGMA_MIN, SIGMA_MAX))
  x = _start(1, sigmas[0], (4, 8))
  kwargs = dict(key=jax.random.key(3)) if sampling.SOLVERS[solver].stochastic else {}
  if solver == "edm_stochastic":
    kwargs["S_churn"] = 5.0
  xs, info = sampling.trajectory(gaussian.denoiser, x, sigmas, solver, formulation=formulation,
                                 **kwargs)
  out, sample_info = sampling.sample(gaussian.denoiser, x, sigmas, solver,
                                     formulation=formulation, **kwargs)
  assert xs.shape == (6, 4, 8) and bool(info.finite)
  np.testing.assert_array_equal(xs[0], x)
  np.testing.assert_allclose(xs[-1], out, rtol=1e-12, atol=1e-12)
  assert int(info.nfe) == int(sample_info.nfe)
  if solver == "euler":  # every row is the Euler step from the previous one
    d = jnp.stack([(xs[i] - gaussian.denoiser(xs[i], sigmas[i])) / sigmas[i] for i in range(5)])
    expected = xs[:-1] + (sigmas[1:] - sigmas[:-1])[:, None, None] * d
    np.testing.assert_allclose(xs[1:], expected, rtol=1e-10, atol=1e-10)


def test_trajectory_needs_a_fixed_grid_solver():
  with pytest.raises(ValueError, match="'dopri5' is adaptive"):
    sampling.trajectory(lambda x, s: x, jnp.zeros((2, 3)), np.array([2.0, 1.0, 0.0]), "dopri5")


def test_traced_grid_under_jit_matches_eager(x64, gaussian):
  x = _start(1, SIGMA_MAX, (4, 8))
  run = jax.jit(lambda x, s: sampling.sample(gaussian.denoiser, x, s, "dpmpp_2m"))
  for sigmas in (sampling.get_sigmas("karras", 5, SIGMA_MIN, SIGMA_MAX),
                 sampling.karras_sigmas(6, SIGMA_MIN, SIGMA_MAX)):
    out, info = run(x, jnp.asarray(sigmas))
    eager, eager_info = sampling.sample(gaussian.denoiser, x, sigmas, "dpmpp_2m")
    np.testing.assert_allclose(out, eager, rtol=1e-13, atol=1e-13)
    assert int(info.nfe) == int(eager_info.nfe) == 5


def test_non_finite_denoiser_is_flagged_and_raised(x64, gaussian):
  def broken(x, sigma):
    return jnp.where(sigma < 1.0, jnp.nan, gaussian.denoiser(x, sigma))

  x = _start(1, SIGMA_MAX, (4, 8))
  sigmas = sampling.get_sigmas("karras", 5, SIGMA_MIN, SIGMA_MAX)
  _, info = sampling.sample(broken, x, sigmas, "euler")
  assert not bool(info.finite)  # (the other tests assert finite on healthy denoisers)
  with pytest.raises(RuntimeError, match="denoiser produced non-finite values"):
    sampling.sample(broken, x, sigmas, "euler", raise_on_nonfinite=True)


@pytest.mark.parametrize("kwargs, message", [
    (dict(solver="rk4"), "valid solvers: .*'euler'"),
    (dict(solver="heun", rtol=1e-3), "Unknown options \\['rtol'\\] for solver 'heun'"),
    (dict(solver="dopri5", s_churn=1.0), "its options: \\['rtol', 'atol', 'max_steps'\\]"),
    (dict(solver="reverse_sde"), "stochastic: pass key"),
    (dict(solver="edm_stochastic", key=0, formulation=formulations.VP()), "native"),
    (dict(sigmas=np.array([1.0, 2.0, 0.0])), "strictly decreasing"),
    (dict(sigmas=np.array([1.0, -1.0])), "non-negative"),
    (dict(sigmas=np.array([1.0])), "at least 2"),
    (dict(sigmas=np.array([500.0, 1.0]), formulation=formulations.DDPM()),
     "does not map into the time t"),
])
def test_bad_input(kwargs, message):
  args = dict(sigmas=np.array([2.0, 1.0, 0.0]), solver="heun")
  args.update(kwargs)
  with pytest.raises(ValueError, match=message):
    sampling.sample(lambda x, s: x, jnp.zeros((2, 3)), args.pop("sigmas"), **args)


def test_only_genode_ode_imports_diffrax():
  """DESIGN.md §3: one package owns diffrax (sampling and the likelihood go through it)."""
  package = pathlib.Path(sampling.__file__).parent.parent
  importers = set()
  for path in package.rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
      if any(n.split(".")[0] == "diffrax" for n in names):
        importers.add(path.relative_to(package).parts[0])
  assert importers == {"ode"}, importers
