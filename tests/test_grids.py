"""Noise-level grids: k-diffusion's conventions, closed-form spacings, bad input."""

import numpy as np
import pytest

from genode import formulations
from genode import sampling


def test_karras_matches_kdiffusion_and_is_rho_spaced():
  n, lo, hi, rho = 10, 0.002, 80.0, 7.0
  sigmas = sampling.karras_sigmas(n, lo, hi, rho)
  # k-diffusion get_sigmas_karras(n, ..., concat_zero=False): n entries, no 0.
  ramp = np.linspace(0, 1, n)
  expected = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
  np.testing.assert_array_equal(sigmas, expected)
  np.testing.assert_allclose(sigmas[[0, -1]], [hi, lo], rtol=1e-14)
  # EDM eq. 5: σ^{1/ρ} is linear in the step index.
  np.testing.assert_allclose(np.diff(sigmas ** (1 / rho), 2), 0, atol=1e-14)


def test_loglinear_is_uniform_in_log_snr():
  sigmas = sampling.loglinear_sigmas(7, 0.01, 100.0)
  assert sigmas.shape == (7,)
  np.testing.assert_allclose(sigmas[[0, -1]], [100.0, 0.01], rtol=1e-14)
  log_snr = -2 * np.log(sigmas)
  np.testing.assert_allclose(np.diff(log_snr), np.diff(log_snr)[0], rtol=1e-12)


@pytest.mark.parametrize("name", ["vp", "ve", "rf"])
def test_uniform_t_is_uniform_in_the_formulations_time(x64, name):
  f = formulations.get_formulation(name)
  sigmas = sampling.uniform_t_sigmas(f, 6)
  assert sigmas.shape == (6,)
  t = np.asarray(f.sigma_inv(sigmas))
  np.testing.assert_allclose(t[[0, -1]], [f.t_max, f.t_min], rtol=1e-10)
  np.testing.assert_allclose(np.diff(t), (f.t_min - f.t_max) / 5, rtol=1e-9)


def test_vp_uniform_t_is_the_vp_papers_grid(x64):
  # VP: t from 1 to ε_s = 1e-3, σ(t) = √(e^{½β_d t² + β_min t} − 1).
  t = np.linspace(1, 1e-3, 5)
  expected = np.sqrt(np.expm1(0.5 * 19.9 * t**2 + 0.1 * t))
  np.testing.assert_allclose(sampling.uniform_t_sigmas(formulations.VP(), 5), expected,
                             rtol=1e-12)


def test_get_sigmas_appends_zero():
  for grid in ("karras", "loglinear"):
    sigmas = sampling.get_sigmas(grid, 5, 0.01, 10.0)
    assert sigmas.shape == (6,) and sigmas[-1] == 0
    sampling.check_sigmas(sigmas)
  np.testing.assert_array_equal(sampling.get_sigmas("karras", 5, 0.01, 10.0, rho=3.0)[:-1],
                                sampling.karras_sigmas(5, 0.01, 10.0, rho=3.0))
  edm = formulations.EDM()
  np.testing.assert_array_equal(sampling.get_sigmas("karras", 4, formulation=edm),
                                sampling.append_zero(sampling.karras_sigmas(4, 0.002, 80.0)))
  uniform = sampling.get_sigmas("uniform_t", 4, formulation=formulations.VE())
  np.testing.assert_allclose(uniform, [100.0, np.sqrt((1e4 * 2 + 4e-4) / 3), np.sqrt(
      (1e4 + 2 * 4e-4) / 3), 0.02, 0.0], rtol=1e-6)
  np.testing.assert_array_equal(sampling.append_zero(np.array([2.0, 1.0])), [2.0, 1.0, 0.0])


@pytest.mark.parametrize("name", sorted(formulations.FORMULATIONS))
def test_uniform_t_sigmas_endpoints(name, x64):
  f = formulations.get_formulation(name)
  sigmas = sampling.uniform_t_sigmas(f, 11)
  assert sigmas.shape == (11,)
  np.testing.assert_allclose([sigmas[0], sigmas[-1]], [f.sigma_max, f.sigma_min], rtol=1e-9)
  assert np.all(np.diff(sigmas) < 0)
  np.testing.assert_allclose(np.diff(np.asarray(f.sigma_inv(sigmas))),
                             (f.t_min - f.t_max) / 10, rtol=1e-6)
  custom = sampling.uniform_t_sigmas(f, 4, sigma_min=0.5, sigma_max=5.0)
  np.testing.assert_allclose([custom[0], custom[-1]], [5.0, 0.5], rtol=1e-9)


def test_ddpm_timesteps_is_ddims_integer_grid(x64):
  ddpm = formulations.DDPM()
  sigmas = sampling.get_sigmas("ddpm_timesteps", 4, formulation=ddpm)
  np.testing.assert_allclose(sigmas[:-1], ddpm.sigma(np.array([999.0, 666.0, 333.0, 0.0])),
                             rtol=1e-12)
  assert sigmas[-1] == 0
  np.testing.assert_array_equal(sampling.ddpm_timestep_sigmas(ddpm, 4), sigmas[:-1])
  with pytest.raises(ValueError, match="discrete-time formulation"):
    sampling.get_sigmas("ddpm_timesteps", 4, formulation=formulations.VP())
  with pytest.raises(ValueError, match="formulation=<DDPM>"):
    sampling.get_sigmas("ddpm_timesteps", 4, 0.01, 1.0)


def test_grids_table_rules_give_n_sigmas(x64):
  """Every rule of the table: (n, σ_min, σ_max, formulation) -> (n,) decreasing, from σ_max."""
  ddpm = formulations.DDPM()
  assert list(sampling.GRIDS) == ["karras", "loglinear", "uniform_t", "ddpm_timesteps"]
  for name, rule in sampling.GRIDS.items():
    sigmas = rule(5, ddpm.sigma_min, ddpm.sigma_max, ddpm)
    assert sigmas.shape == (5,) and np.all(np.diff(sigmas) < 0), name
    np.testing.assert_allclose(sigmas[[0, -1]], [ddpm.sigma_max, ddpm.sigma_min], rtol=1e-9)
    np.testing.assert_array_equal(sampling.get_sigmas(name, 5, formulation=ddpm)[:-1], sigmas)


def test_as_sigmas_checks_an_explicit_grid():
  sigmas = sampling.as_sigmas([80, 10.0, 1.0, 0.1])
  assert sigmas.dtype == np.float64
  np.testing.assert_array_equal(sigmas, [80.0, 10.0, 1.0, 0.1])
  np.testing.assert_array_equal(sampling.as_sigmas((2.0, 1.0), append_zero=True), [2.0, 1.0, 0])
  with pytest.raises(ValueError, match="strictly decreasing"):
    sampling.as_sigmas([1.0, 2.0])
  with pytest.raises(ValueError, match="strictly decreasing"):
    sampling.as_sigmas([1.0, 0.0], append_zero=True)


def test_grid_errors():
  with pytest.raises(ValueError, match="valid grids: \\['karras', 'loglinear', 'uniform_t'"):
    sampling.get_sigmas("cosine", 5, 0.01, 1.0)
  with pytest.raises(ValueError, match="Unknown parameters \\['rho'\\] for grid 'loglinear'"):
    sampling.get_sigmas("loglinear", 5, 0.01, 1.0, rho=3.0)
  with pytest.raises(ValueError, match="formulation"):
    sampling.get_sigmas("uniform_t", 5, 0.01, 1.0)
  with pytest.raises(ValueError, match="sigma_min and sigma_max"):
    sampling.get_sigmas("karras", 5)
  with pytest.raises(ValueError, match="0 < sigma_min <= sigma_max"):
    sampling.karras_sigmas(5, 1.0, 0.1)
  with pytest.raises(ValueError, match="positive integer"):
    sampling.loglinear_sigmas(0, 0.1, 1.0)


@pytest.mark.parametrize("bad, message", [
    ([1.0, 2.0, 0.0], "strictly decreasing"),
    ([1.0, 1.0], "strictly decreasing"),
    ([1.0, -0.5], "non-negative"),
    ([1.0], "at least 2"),
    ([[1.0, 0.0]], "1-D"),
    ([np.inf, 1.0], "finite"),
])
def test_check_sigmas_rejects(bad, message):
  with pytest.raises(ValueError, match=message):
    sampling.check_sigmas(np.asarray(bad))
