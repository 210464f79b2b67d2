"""genode.likelihood against closed forms: Gaussian data, where the PF-ODE is linear.

The prior-mismatch bound. Let T be the exact flow from σ_min to s = σ_max and
z = T(x). T carries the true noisy marginal N(μ, Σ + σ_min² I) to N(μ, C),
C = Σ + s² I, while the model carries its prior N(0, s² I) back through the same
T, with the same Jacobian. So the log-det terms cancel and

    Δ(x) = log p_model(x) − log N(x; μ, Σ + σ_min² I) = log N(z; 0, s² I) − log N(z; μ, C).

In the eigenbasis (w = Uᵀz, m = Uᵀμ, c_i = λ_i + s²),

    2Δ = Σ_i [(w_i − m_i)²/c_i − w_i²/s² + ln(c_i/s²)]
       = Σ_i [−λ_i (w_i − m_i)²/(c_i s²) + (m_i² − 2 w_i m_i)/s² + ln(1 + λ_i/s²)],

and with 0 ≤ ln(1 + a) ≤ a,

    |Δ(x)| ≤ ½ Σ_i [λ_i (w_i − m_i)²/(c_i s²) + |m_i² − 2 w_i m_i|/s² + λ_i/s²] =: bound(x),

which is O(|μ|·|z|/s²) = O(|μ|√d/s) for typical z: it vanishes as σ_max → ∞.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genode.gaussians import Gaussian, GaussianMixture
from genode.likelihood import log_likelihood

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
DIM = 6



def _counting(denoiser):
  """`denoiser` wrapped to append to the returned list at every evaluation (an NFE count)."""
  calls = []

  def counting_denoiser(x, sigma):
    jax.debug.callback(lambda: calls.append(1))
    return denoiser(x, sigma)

  return counting_denoiser, calls


def prior_mismatch_bound(gaussian, x, sigma_min, sigma_max):
  """bound(x) of the module docstring, per sample (B,)."""
  lam, s2 = gaussian.eigenvalues[None], sigma_max**2  # (1, d)
  w = gaussian.flow(x, sigma_min, sigma_max) @ gaussian.eigenvectors
  m = (gaussian.mean @ gaussian.eigenvectors)[None]
  terms = lam * (w - m) ** 2 / ((lam + s2) * s2) + jnp.abs(m**2 - 2 * w * m) / s2 + lam / s2
  return 0.5 * jnp.sum(terms, -1)


@pytest.fixture(scope="module")
def exact_solve():
  """One tight exact-trace solve on a 6-d Gaussian, counting denoiser calls."""
  with jax.enable_x64(True):
    gaussian = Gaussian.random(jax.random.key(0), DIM)
    x = gaussian.sample(jax.random.key(1), 4, sigma=SIGMA_MIN)
    counting_denoiser, calls = _counting(gaussian.denoiser)
    logp, info = log_likelihood(counting_denoiser, x, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX,
                                rtol=1e-7, atol=1e-7)
    return gaussian, x, np.asarray(logp), info, len(calls)


def test_exact_trace_matches_closed_form(exact_solve, x64):
  gaussian, x, logp, info, _ = exact_solve
  expected = gaussian.model_log_prob(x, SIGMA_MIN, SIGMA_MAX)
  assert logp.shape == (4,) and logp.dtype == np.float64
  np.testing.assert_allclose(logp, expected, rtol=0, atol=1e-4 * DIM)
  np.testing.assert_allclose(info.latent, gaussian.flow(x, SIGMA_MIN, SIGMA_MAX), atol=1e-4)
  np.testing.assert_allclose(info.prior_logp + info.delta_logp, logp, rtol=1e-12)
  # ∫∇·f dσ is the flow's log-determinant, the same for every x.
  np.testing.assert_allclose(info.delta_logp, gaussian.flow_log_det(SIGMA_MIN, SIGMA_MAX),
                             atol=1e-4 * DIM)
  assert info.num_probes == 0 and info.stderr is None


def test_exact_trace_within_prior_mismatch_bound(exact_solve, x64):
  gaussian, x, logp, _, _ = exact_solve
  true_logp = gaussian.log_prob(x, SIGMA_MIN)
  bound = prior_mismatch_bound(gaussian, x, SIGMA_MIN, SIGMA_MAX)
  gap = np.abs(logp - true_logp)
  assert np.all(gap <= bound + 1e-4 * DIM), (gap, bound)
  assert np.all(bound < 0.1)  # the bound itself is small at σ_max = 80


def test_nfe_counts_denoiser_calls(exact_solve):
  _, _, _, info, num_calls = exact_solve
  assert int(info.nfe) == num_calls
  assert int(info.num_steps) == int(info.num_accepted_steps) + int(info.num_rejected_steps)


def test_ring_mixture_close_to_true_density_and_nfe_counted(x64):
  """A nonlinear denoiser: the 8-Gaussian ring, whose noisy marginal is closed form.

  The prior mismatch at σ_max = 80 is O(radius²/σ_max²) ≈ 6e-4 nats; the solve has
  rejected steps, and `info.nfe` still counts every denoiser call.
  """
  ring = GaussianMixture.ring()
  x = ring.sample(jax.random.key(10), 5, sigma=SIGMA_MIN)
  counting_denoiser, calls = _counting(ring.denoiser)
  logp, info = log_likelihood(counting_denoiser, x, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX,
                              rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(logp, ring.log_prob(x, SIGMA_MIN), atol=1e-3)
  assert int(info.num_rejected_steps) > 0 and int(info.nfe) == len(calls)


def test_image_shaped_input_and_single_rademacher_probe(x64):
  """(B, 2, 2) inputs; with a diagonal Jacobian one Rademacher probe is exact (ε_i² = 1)."""
  gaussian = Gaussian.random(jax.random.key(2), 4)
  gaussian = Gaussian(gaussian.mean, gaussian.eigenvalues, jnp.eye(4))  # diagonal Σ
  x = gaussian.sample(jax.random.key(3), 3, sigma=SIGMA_MIN)

  def image_denoiser(x_img, sigma):  # (B, 2, 2) in, (B, 2, 2) out
    return gaussian.denoiser(x_img.reshape(-1, 4), sigma).reshape(x_img.shape)

  logp, info = log_likelihood(image_denoiser, x.reshape(3, 2, 2), sigma_min=SIGMA_MIN,
                              sigma_max=SIGMA_MAX, trace="hutchinson", key=jax.random.key(4),
                              rtol=1e-7, atol=1e-7)
  assert info.latent.shape == (3, 2, 2) and info.num_probes == 1 and info.stderr is None
  np.testing.assert_allclose(logp, gaussian.model_log_prob(x, SIGMA_MIN, SIGMA_MAX), atol=4e-4)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(probe, x64):
  gaussian = Gaussian.random(jax.random.key(4), 4)
  x = gaussian.sample(jax.random.key(5), 3, sigma=SIGMA_MIN)
  num_probes = 256
  logp, info = log_likelihood(gaussian.denoiser, x, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX,
                              trace="hutchinson", key=jax.random.key(6), num_probes=num_probes,
                              probe=probe, rtol=1e-7, atol=1e-7)
  exact = gaussian.model_log_prob(x, SIGMA_MIN, SIGMA_MAX)
  assert info.num_probes == num_probes and info.stderr.shape == (3,)
  # The estimator has variance (the Jacobian is not diagonal), and its mean is exact.
  assert np.all(info.stderr > 1e-3)
  assert np.all(np.abs(logp - exact) <= 3 * info.stderr + 1e-3), (logp - exact) / info.stderr


@pytest.mark.parametrize("kwargs, match", [
    (dict(sigma_min=0.0, sigma_max=1.0), "sigma_min must be > 0"),
    (dict(sigma_min=-1.0, sigma_max=1.0), "sigma_min must be > 0"),
    (dict(sigma_min=1.0, sigma_max=1.0), "sigma_max must be > sigma_min"),
    (dict(sigma_min=0.1, sigma_max=1.0, trace="diagonal"), "Unknown trace 'diagonal'"),
    (dict(sigma_min=0.1, sigma_max=1.0, solver="rk4"), r"Unknown solver 'rk4'.*dopri5"),
    (dict(sigma_min=0.1, sigma_max=1.0, trace="hutchinson"), "needs a PRNG `key`"),
    (dict(sigma_min=0.1, sigma_max=1.0, trace="hutchinson", key=jax.random.key(0),
          probe="sphere"), "Unknown probe 'sphere'"),
    (dict(sigma_min=0.1, sigma_max=1.0, trace="hutchinson", key=jax.random.key(0),
          num_probes=0), "num_probes must be ≥ 1"),
])
def test_bad_input_errors(kwargs, match):
  gaussian = Gaussian.random(jax.random.key(0), 2)
  with pytest.raises(ValueError, match=match):
    log_likelihood(gaussian.denoiser, jnp.zeros((1, 2)), **kwargs)
