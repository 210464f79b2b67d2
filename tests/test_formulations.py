"""Identities of the EDM design space (genode.formulations, genode.denoiser), in float64."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from genode import denoiser as denoiser_lib
from genode.formulations import FORMULATIONS, get_formulation
from genode.gaussians import Gaussian

NAMES = sorted(FORMULATIONS)


def interior_times(formulation, num=7):
  """`num` times strictly inside [t_min, t_max], off DDPM's integer knots."""
  lo, hi = formulation.t_min, formulation.t_max
  return jnp.linspace(lo, hi, num + 2)[1:-1] + 1e-3 * (hi - lo) / num


def random_network(key, dim):
  """A fixed nonlinear F(x_in (B, d), c_noise (B,)) -> (B, d) with random weights."""
  k1, k2, k3 = jax.random.split(key, 3)
  w1 = jax.random.normal(k1, (dim, 16)) / math.sqrt(dim)
  b = jax.random.normal(k2, (16,))
  w2 = jax.random.normal(k3, (16, dim)) / 4
  return lambda x, c: jnp.tanh(x @ w1 + c[:, None] * b[None]) @ w2


@pytest.mark.parametrize("name", NAMES)
def test_sigma_inverse_round_trips(name, x64):
  f = get_formulation(name)
  t = interior_times(f)
  np.testing.assert_allclose(f.sigma_inv(f.sigma(t)), t, rtol=1e-9, atol=1e-9)
  np.testing.assert_allclose(f.sigma(f.t_min), f.sigma_min, rtol=1e-9)
  np.testing.assert_allclose(f.sigma(f.t_max), f.sigma_max, rtol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_derivatives_match_autodiff(name, x64):
  f = get_formulation(name)
  t = interior_times(f)
  grad_sigma = jax.vmap(jax.grad(lambda u: f.sigma(u)))(t)
  grad_scale = jax.vmap(jax.grad(lambda u: jnp.asarray(f.scale(u), float)))(t)
  np.testing.assert_allclose(f.sigma_deriv(t), grad_sigma, rtol=1e-9)
  np.testing.assert_allclose(f.scale_deriv(t), grad_scale, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["vp", "ddpm"])
def test_variance_preserving_scale(name, x64):
  """s = 1/√(1 + σ²), i.e. s² + (sσ)² = 1 (VP and DDPM)."""
  f = get_formulation(name)
  t = interior_times(f)
  np.testing.assert_allclose(f.scale(t), 1 / jnp.sqrt(1 + f.sigma(t) ** 2), rtol=1e-12)


def test_rectified_flow_schedule(x64):
  """x_t = (1 − t)·y + t·n: s(t) = 1 − t and s(t)·σ(t) = t."""
  f = get_formulation("rf")
  t = interior_times(f)
  np.testing.assert_allclose(f.scale(t), 1 - t, rtol=1e-12)
  np.testing.assert_allclose(f.scale(t) * f.sigma(t), t, rtol=1e-12)


def test_ddpm_matches_discrete_alpha_bar(x64):
  """At integer steps j: s_j = √ᾱ_j, σ_j = √((1 − ᾱ_j)/ᾱ_j), ᾱ_j = ∏_{i≤j}(1 − β_i)."""
  f = get_formulation("ddpm")
  alpha_bar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
  j = np.array([0, 1, 10, 500, 998, 999])
  np.testing.assert_allclose(f.scale(j.astype(float)), np.sqrt(alpha_bar[j]), rtol=1e-10)
  np.testing.assert_allclose(f.sigma(j.astype(float)), np.sqrt((1 - alpha_bar[j]) / alpha_bar[j]),
                             rtol=1e-10)


def test_vp_default_sampling_range(x64):
  """EDM Table 1: σ_min = σ(ε_s = 10⁻³), σ_max = σ(1) for β_d = 19.9, β_min = 0.1."""
  f = get_formulation("vp")
  np.testing.assert_allclose(f.sigma_max, math.sqrt(math.expm1(0.5 * 19.9 + 0.1)), rtol=1e-12)
  np.testing.assert_allclose(f.sigma_min, math.sqrt(math.expm1(0.5 * 19.9e-6 + 1e-4)),
                             rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_preconditioning_with_zero_network_is_skip(name, x64):
  f = get_formulation(name)
  x = jax.random.normal(jax.random.key(0), (5, 3))
  sigma = jnp.geomspace(f.sigma_min, f.sigma_max, 5)
  d = denoiser_lib.precondition(f, lambda x_in, c: jnp.zeros_like(x_in))(x, sigma)
  np.testing.assert_allclose(d, f.preconditioning(sigma).c_skip[:, None] * x, rtol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_loss_weight_times_c_out_squared_is_one(name, x64):
  """λ(σ)·c_out(σ)² = 1 (EDM §5): every formulation's effective training target has unit weight."""
  f = get_formulation(name)
  sigma = jnp.geomspace(f.sigma_min, f.sigma_max, 9)
  np.testing.assert_allclose(f.loss_weight(sigma) * f.preconditioning(sigma).c_out ** 2, 1.0,
                             rtol=1e-12)


# The training σ laws, as (formulation, transform of σ, scipy distribution).
TRAINING_LAWS = {
    "edm": (get_formulation("edm"), np.log, stats.norm(-1.2, 1.2)),
    "ve": (get_formulation("ve"), np.log,
           stats.uniform(math.log(0.02), math.log(100.0) - math.log(0.02))),
    "vp": (get_formulation("vp"), lambda s: get_formulation("vp").sigma_inv(s),
           stats.uniform(1e-5, 1 - 1e-5)),
    "rf": (get_formulation("rf"), lambda s: s / (1 + s), stats.uniform(0, 1)),
    "rf_logit_normal": (get_formulation("rf", logit_normal=True, logit_mean=0.5, logit_std=0.8),
                        np.log, stats.norm(0.5, 0.8)),
}


@pytest.mark.parametrize("law", sorted(TRAINING_LAWS))
def test_training_sigma_law(law, x64):
  formulation, transform, dist = TRAINING_LAWS[law]
  sigma = formulation.sample_training_sigma(jax.random.key(0), (4000,))
  values = np.asarray(transform(sigma))
  assert stats.kstest(values, dist.cdf).pvalue > 1e-3
  # The test can fail: the same sample is far from a shifted law.
  shifted = stats.norm(dist.mean() + 0.2 * dist.std(), dist.std())
  assert stats.kstest(values, shifted.cdf).pvalue < 1e-6


def test_logit_normal_t_is_normal_log_sigma(x64):
  """t = sigmoid(m + s·z) is the same law as ln σ = m + s·z, since σ = t/(1 − t)."""
  f = get_formulation("rf", logit_normal=True, logit_mean=-0.3, logit_std=1.1)
  sigma = f.sample_training_sigma(jax.random.key(1), (4000,))
  t = np.asarray(f.sigma_inv(sigma))
  logit_t = np.log(t) - np.log1p(-t)
  assert stats.kstest(logit_t, stats.norm(-0.3, 1.1).cdf).pvalue > 1e-3


def test_ddpm_training_sigma_is_uniform_over_steps(x64):
  f = get_formulation("ddpm", num_timesteps=10)
  steps = np.asarray(f.sigma_inv(f.sample_training_sigma(jax.random.key(2), (5000,))))
  np.testing.assert_allclose(steps, np.round(steps), atol=1e-6)
  counts = np.bincount(np.round(steps).astype(int), minlength=10)
  assert counts.shape == (10,)
  assert stats.chisquare(counts).pvalue > 1e-3


def test_get_formulation_errors_and_params():
  f = get_formulation("edm", sigma_data=1.0)
  assert f.sigma_data == 1.0 and hash(f) == hash(get_formulation("edm", sigma_data=1.0))
  with pytest.raises(ValueError, match=r"Unknown formulation 'edn'.*'edm'"):
    get_formulation("edn")
  with pytest.raises(ValueError, match=r"Unknown parameters \['sigma_dat'\].*sigma_data"):
    get_formulation("edm", sigma_dat=1.0)


# ---------------------------------------------------------------------------
# genode.denoiser conversions, on the ideal denoiser of Gaussian data.
# ---------------------------------------------------------------------------


def test_score_of_ideal_denoiser_is_true_score(x64):
  g = Gaussian.random(jax.random.key(3), 5)
  x = g.sample(jax.random.key(4), 6, sigma=0.7)
  sigma = jnp.linspace(0.1, 3.0, 6)
  true_score = jax.vmap(jax.grad(lambda xi, s: g.log_prob(xi[None], s)[0]))(x, sigma)
  np.testing.assert_allclose(denoiser_lib.score(g.denoiser, x, sigma), true_score, rtol=1e-10)
  np.testing.assert_allclose(denoiser_lib.epsilon(g.denoiser, x, sigma),
                             -sigma[:, None] * true_score, rtol=1e-10)


def test_velocity_of_ideal_denoiser_is_rectified_flow_velocity(x64):
  """v̂(x̄; σ(t)) = d/dt [s(t)·x̄(σ(t))] along the exact flow: RF's ODE is the PF-ODE."""
  f = get_formulation("rf")
  g = Gaussian.random(jax.random.key(5), 4)
  x0 = g.sample(jax.random.key(6), 3, sigma=1.0)  # x̄ at σ = 1 (t = 1/2)

  def x_t(t):  # the RF state along the exact PF-ODE trajectory through x0
    return f.scale(t) * g.flow(x0, 1.0, f.sigma(t))

  for t in [0.2, 0.5, 0.8]:
    _, dx_dt = jax.jvp(x_t, (t,), (1.0,))
    x_bar = g.flow(x0, 1.0, f.sigma(t))
    np.testing.assert_allclose(denoiser_lib.velocity(g.denoiser, x_bar, f.sigma(t)), dx_dt,
                               rtol=1e-9, atol=1e-12)


def test_precondition_accepts_scalar_and_per_sample_sigma(x64):
  f = get_formulation("edm")
  d = denoiser_lib.precondition(f, random_network(jax.random.key(7), 3))
  x = jax.random.normal(jax.random.key(8), (4, 3))
  np.testing.assert_allclose(d(x, 0.5), d(x, jnp.full((4,), 0.5)), rtol=1e-14)
  per_sample = d(x, jnp.array([0.1, 1.0, 10.0, 0.5]))
  np.testing.assert_allclose(per_sample[3], d(x, 0.5)[3], rtol=1e-14)
