"""The sampler benchmark: its k-diffusion transcription, and a `--quick` run end to end."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genode.benchmarks import kdiffusion_reference as kdiff
from genode.benchmarks import report
from genode.benchmarks import sampling
from genode.gaussians import Gaussian
from genode.sampling import append_zero, karras_sigmas, sample

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_kdiffusion_samplers_converge_at_their_order():
  """1-D Gaussian data N(0, 1): D(x; σ) = x/(1 + σ²), x(σ) ∝ √(1 + σ²) (grids without the 0).

  Halving the steps divides the error by 2 (Euler), 4 (Heun, DPM-2), more (LMS); an
  exponential integrator (DPM-Solver++) is exact for D = 0, where x(σ) ∝ σ.
  """
  x = np.ones((2, 3))
  model = lambda x_, s: x_ / (1 + s[:, None] ** 2)
  expected = x * np.sqrt((1 + 0.5**2) / (1 + 4.0**2))

  def error(name, n):
    sampler = kdiff.SAMPLERS[name][0]
    return np.abs(sampler(model, x, kdiff.get_sigmas_karras(n, 0.5, 4.0)[:-1]) - expected).max()

  for name, (lo, hi) in {"euler": (1.9, 2.1), "heun": (3.9, 4.3), "dpm_2": (3.9, 4.3),
                         "lms": (5.0, 8.0)}.items():
    ratios = [error(name, n) / error(name, 2 * n - 1) for n in (9, 17)]
    assert all(lo < r < hi for r in ratios), (name, ratios)
  assert error("dpmpp_2m", 33) < error("dpmpp_2m", 9) / 50
  zero_model = lambda x_, s: np.zeros_like(x_)
  np.testing.assert_allclose(
      kdiff.sample_dpmpp_2m(zero_model, x, kdiff.get_sigmas_karras(8, 0.5, 4.0)[:-1]),
      x * 0.5 / 4.0, rtol=1e-13)


def test_linear_multistep_coeffs_integrate_polynomials():
  """The LMS weights integrate the interpolating polynomial: Σ_j c_j = t[i+1] − t[i]."""
  t = np.array([5.0, 3.0, 2.0, 1.2, 0.7])
  for order in (1, 2, 3, 4):
    coeffs = [kdiff.linear_multistep_coeff(order, t, 3, j) for j in range(order)]
    np.testing.assert_allclose(sum(coeffs), t[4] - t[3], rtol=1e-10)
  with pytest.raises(ValueError, match="Order 4 too high for step 1"):
    kdiff.linear_multistep_coeff(4, t, 1, 0)


def test_genode_heun_equals_kdiffusion_heun(x64):
  g = Gaussian.random(jax.random.key(0), 3)
  x_t = 80.0 * jax.random.normal(jax.random.key(1), (4, 3))
  sigmas = kdiff.get_sigmas_karras(6, 0.002, 80.0)
  np.testing.assert_array_equal(sigmas, append_zero(karras_sigmas(6, 0.002, 80.0)))
  x_genode, info = sample(g.denoiser, x_t, sigmas, "heun")
  x_kdiff = kdiff.sample_heun(lambda x, s: np.asarray(g.denoiser(jnp.asarray(x), s)),
                              np.asarray(x_t), sigmas)
  assert int(info.nfe) == kdiff.SAMPLERS["heun"][1](6) == 11
  np.testing.assert_allclose(x_genode, x_kdiff, rtol=0, atol=1e-12)


def test_steps_for_budget():
  assert set(sampling.KDIFFUSION_NFE_PER_STEP) == set(kdiff.SAMPLERS)
  for budget in (5, 10, 18, 32):
    for name, (_, nfe_of) in kdiff.SAMPLERS.items():
      nfe = nfe_of(sampling.steps_for_budget(sampling.KDIFFUSION_NFE_PER_STEP[name], budget))
      assert budget - 1 <= nfe <= budget
  # genode's solvers: the records' NFE per step, and the step to 0 costs 1.
  assert [s.name for s in sampling.FIXED_GRID_SOLVERS] == [
      "euler", "heun", "dpmpp_2m", "dpmpp_3m", "dpmpp_3m_taylor", "lms", "lms_data"]
  assert [s.name for s in sampling.ADAPTIVE_SOLVERS] == ["tsit5", "dopri5"]
  assert [sampling.steps_for_budget(2, b) for b in (5, 10, 18, 32)] == [3, 5, 9, 16]
  assert [sampling.steps_for_budget(1, b) for b in (5, 10, 18, 32)] == [5, 10, 18, 32]


def test_markdown_table_and_jsonable():
  table = report.markdown_table(["a", "b"], [[1, 0.5], ["x", 1.23456e-7]])
  assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.5 |", "| x | 1.23e-07 |"]
  with pytest.raises(ValueError, match="has 1 cells; the header has 2"):
    report.markdown_table(["a", "b"], [[1]])
  assert report.to_jsonable({"x": np.float32(2.0), "y": (jnp.arange(2), float("inf"))}) == {
      "x": 2.0, "y": [[0, 1], "inf"]}


@pytest.mark.slow
def test_quick_benchmark_writes_reports(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "launch.benchmark", "sampling", "--quick", f"--out={tmp_path}"],
      cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / "sampling.json") as f:
    results = json.load(f)
  markdown = (tmp_path / "sampling.md").read_text()
  assert results["quick"] and results["environment"]["backend"] == "cpu"
  for accuracy in results["accuracy"]:
    assert accuracy["heun_vs_kdiffusion_max_abs_diff"] < 1e-10
    assert accuracy["lms_vs_kdiffusion_max_abs_diff"] < 1e-10
    assert accuracy["karras_grid_vs_kdiffusion_max_abs_diff"] == 0.0
    genode_euler, kdiff_euler = (
        [r["rms_error"] for r in accuracy["runs"] if r["library"] == lib and r["solver"] == "euler"]
        for lib in ("genode", "k-diffusion"))
    np.testing.assert_allclose(genode_euler, kdiff_euler, rtol=1e-9)
  for timing in results["timing"]["solvers"].values():
    assert timing["max_abs_diff"] <= 1e-4 * max(1.0, timing["output_scale"])
  assert "best k-diffusion" in markdown and "genode `heun` vs k-diffusion" in markdown
  assert "diffrax vs `lax.scan`" in markdown
  # The optimized-grid rows come after the accuracy and speed tables, which they leave alone.
  assert markdown.index("## Optimized σ grids vs Karras") > markdown.index("diffrax vs `lax.scan`")
  grids = {r["grid"] for r in results["schedules"]["records"]}
  assert grids == {"karras", "optimized"} and results["schedules"]["best_per_budget"]
