"""Sampler benchmark: error vs NFE on closed-form problems, and diffrax vs `lax.scan` speed.

    python -m launch.benchmark sampling [--out=benchmarks/out] [--quick]

1. Accuracy (float64). From x_T = σ_max·n, each sampler integrates the PF-ODE
   dx/dσ = (x − D(x; σ))/σ down the Karras grid (ρ = 7, σ ∈ [0.002, 80], final 0,
   EDM eq. 5) with the ideal denoiser of
   * a `Gaussian.random` in 64 dimensions: exact endpoint D(flow(x_T; σ_max → σ_min); σ_min),
   * the 2-D `GaussianMixture.ring()`: the same with the flow by a tight Dopri5
     (rtol = atol = 1e-12),
   i.e. the error of integrating the ODE to σ_min, through the final denoising step
   every sampler shares. Error = RMS over samples and dimensions. genode's solvers
   (`genode.sampling.sample`) and k-diffusion's (`kdiffusion_reference`, a NumPy
   transcription) run at NFE budgets ≈ 5, 10, 18, 32 (steps chosen per solver), the
   adaptive solvers over a tolerance sweep; genode's `heun` is checked against
   k-diffusion's `sample_heun` on the same grid.
2. Speed (float32). Euler and Heun through `genode.sampling.sample` (diffrax, `StepTo`)
   against a hand-written `lax.scan` of the same steps, with a small MLP denoiser,
   both jitted, timed interleaved after warm-up: the ratios of the median wall times,
   of the minima and of the median process CPU times (steadier on a shared machine),
   and the max |Δ| of the outputs.
3. Optimized σ grids (`genode.benchmarks.schedules`): on the same two problems, each
   traced solver's grid fitted by `optimize_sigmas` on one set of starting noises and
   measured on another, against the best solver on Karras (the section after 1–2; the
   tables of 1–2 are unchanged).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from genode.benchmarks import kdiffusion_reference as kdiff
from genode.benchmarks import report
from genode.benchmarks import schedules as schedules_bench
from genode.denoiser import precondition
from genode.formulations import EDM
from genode.gaussians import Gaussian, GaussianMixture
from genode.sampling import SOLVERS, append_zero, karras_sigmas, sample

# genode's deterministic solvers, read from the records: on the grid of an NFE budget,
# and adaptive over a tolerance sweep.
FIXED_GRID_SOLVERS = tuple(s for s in SOLVERS.values() if not s.adaptive and not s.stochastic)
ADAPTIVE_SOLVERS = tuple(s for s in SOLVERS.values() if s.adaptive and not s.stochastic)
# k-diffusion's reference samplers (not genode solvers): NFE per step, the step to 0 is 1.
KDIFFUSION_NFE_PER_STEP = {"euler": 1, "heun": 2, "dpm_2": 2, "lms": 1, "dpmpp_2m": 1}


@dataclasses.dataclass(frozen=True)
class SamplingBenchmark:
  """What to run; `QUICK` is the tiny version used by the tests."""

  budgets: tuple[int, ...] = (5, 10, 18, 32)
  gaussian_dim: int = 64
  num_samples: int = 256
  sigma_min: float = 0.002
  sigma_max: float = 80.0
  rho: float = 7.0
  adaptive_tols: tuple[float, ...] = (1e-1, 3e-2, 1e-2, 1e-3)
  timing_batch: int = 4096
  timing_steps: int = 32  # Karras σ's before the final 0
  timing_hidden: int = 256
  timing_repeats: int = 9
  seed: int = 0


QUICK = SamplingBenchmark(budgets=(5,), gaussian_dim=4, num_samples=8, adaptive_tols=(),
                          timing_batch=64, timing_steps=4, timing_hidden=16, timing_repeats=2)


class Problem(NamedTuple):
  """A closed-form problem: its ideal denoiser and the exact endpoint of each start."""

  name: str
  denoiser: Callable  # D(x; σ), x (B, dim)
  endpoint: Callable  # x_T (B, dim) -> D(x(σ_min); σ_min), x(σ_min) the exact flow of x_T
  dim: int
  closed_form: bool  # the endpoint is closed-form (else a tight Dopri5 solve)


def run(out_dir: str, quick: bool = False) -> dict:
  """Runs the benchmark, writes `<out_dir>/sampling.{json,md}`, returns the results."""
  bench = QUICK if quick else SamplingBenchmark()
  with jax.enable_x64(True):
    accuracy = [_accuracy(problem, bench) for problem in _problems(bench)]
  results = {"config": dataclasses.asdict(bench), "quick": quick, "accuracy": accuracy,
             "timing": _timing(bench)}
  schedule_bench = schedules_bench.QUICK if quick else schedules_bench.ScheduleBenchmark()
  records, schedule_markdown = schedules_bench.schedule_benchmark(schedule_bench)
  results["schedules"] = {"config": dataclasses.asdict(schedule_bench), "records": records,
                          "best_per_budget": schedules_bench.best_per_budget(records)}
  markdown = to_markdown(results) + "\n" + schedule_markdown.replace("# ", "## ", 1)
  results["paths"] = report.write_report(out_dir, "sampling", results, markdown)._asdict()
  return results


# ---------------------------------------------------------------------------
# 1. Accuracy against exact endpoints.
# ---------------------------------------------------------------------------


def _problems(bench: SamplingBenchmark) -> list[Problem]:
  s_min, s_max = bench.sigma_min, bench.sigma_max
  gaussian = Gaussian.random(jax.random.key(bench.seed), bench.gaussian_dim)
  ring = GaussianMixture.ring()

  def gaussian_endpoint(x_t):
    return gaussian.denoiser(gaussian.flow(x_t, s_max, s_min), s_min)

  def ring_endpoint(x_t):
    return ring.denoiser(tight_flow(ring.denoiser, x_t, s_max, s_min), s_min)

  return [Problem(f"gaussian{bench.gaussian_dim}", jax.jit(gaussian.denoiser),
                  jax.jit(gaussian_endpoint), bench.gaussian_dim, closed_form=True),
          Problem("ring", jax.jit(ring.denoiser), ring_endpoint, 2, closed_form=False)]


def tight_flow(denoiser, x, sigma_from: float, sigma_to: float, tol: float = 1e-12):
  """x(σ_to) of dx/dσ = (x − D(x; σ))/σ by genode's Dopri5 at rtol = atol = `tol`."""
  x_to, info = sample(denoiser, x, np.asarray([sigma_from, sigma_to]), "dopri5", rtol=tol,
                      atol=tol, max_steps=100_000)
  if not bool(info.finite):
    raise RuntimeError(f"The reference solve failed (finite={info.finite}, nfe={info.nfe}).")
  return x_to


def steps_for_budget(nfe_per_step: int, budget: int) -> int:
  """Grid size n (σ's before the final 0) whose NFE is at most `budget`, and closest.

  n − 1 steps of `nfe_per_step` NFE, and 1 NFE for the last step, to 0.
  """
  return (budget - 1) // nfe_per_step + 1


def _rms(a, b) -> float:
  return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def _accuracy(problem: Problem, bench: SamplingBenchmark) -> dict:
  key = jax.random.key(bench.seed + 1)
  x_t = bench.sigma_max * jax.random.normal(key, (bench.num_samples, problem.dim), jnp.float64)
  exact = np.asarray(problem.endpoint(x_t))
  reference_check = None
  if problem.closed_form:  # how exact the tight Dopri5 reference (used for the ring) is
    x_min = tight_flow(problem.denoiser, x_t, bench.sigma_max, bench.sigma_min)
    reference_check = _rms(problem.denoiser(x_min, bench.sigma_min), exact)
  runs, grid_diff = [], 0.0
  same_rule = {"heun": 0.0, "lms": 0.0}  # genode vs k-diffusion, max |Δ| on the same grid

  def numpy_model(x, sigma):  # k-diffusion's model(x, sigma * s_in)
    return np.asarray(problem.denoiser(jnp.asarray(x), jnp.asarray(sigma)))

  for budget in bench.budgets:
    genode_out = {}
    for solver in FIXED_GRID_SOLVERS:
      sigmas = append_zero(karras_sigmas(steps_for_budget(solver.nfe_per_step, budget),
                                         bench.sigma_min, bench.sigma_max, bench.rho))
      x, info = sample(problem.denoiser, x_t, sigmas, solver)
      runs.append(dict(library="genode", solver=solver.name, budget=budget,
                       steps=len(sigmas) - 1, nfe=int(info.nfe), rms_error=_rms(x, exact)))
      if solver.name in same_rule:
        genode_out[solver.name] = np.asarray(x)
    for name, (sampler, nfe_of) in kdiff.SAMPLERS.items():
      n = steps_for_budget(KDIFFUSION_NFE_PER_STEP[name], budget)
      sigmas = kdiff.get_sigmas_karras(n, bench.sigma_min, bench.sigma_max, bench.rho)
      grid_diff = max(grid_diff, float(np.max(np.abs(
          sigmas - append_zero(karras_sigmas(n, bench.sigma_min, bench.sigma_max, bench.rho))))))
      x = sampler(numpy_model, np.asarray(x_t), sigmas)
      runs.append(dict(library="k-diffusion", solver=name, budget=budget, steps=n,
                       nfe=nfe_of(n), rms_error=_rms(x, exact)))
      if name in same_rule:
        same_rule[name] = max(same_rule[name], float(np.max(np.abs(x - genode_out[name]))))

  endpoints = np.asarray([bench.sigma_max, bench.sigma_min, 0.0])
  for solver in ADAPTIVE_SOLVERS:
    for tol in bench.adaptive_tols:
      x, info = sample(problem.denoiser, x_t, endpoints, solver, rtol=tol, atol=tol)
      runs.append(dict(library="genode", solver=f"{solver.name} (tol {tol:g})", budget=None,
                       steps=int(info.num_steps), nfe=int(info.nfe), rms_error=_rms(x, exact)))
  return {"problem": problem.name, "dim": problem.dim, "num_samples": bench.num_samples,
          "data_scale": float(np.sqrt(np.mean(exact**2))), "runs": runs,
          "heun_vs_kdiffusion_max_abs_diff": same_rule["heun"],
          "lms_vs_kdiffusion_max_abs_diff": same_rule["lms"],
          "karras_grid_vs_kdiffusion_max_abs_diff": grid_diff,
          "tight_dopri5_vs_closed_form_rms": reference_check,
          "best_per_budget": _best_per_budget(runs, bench.budgets)}


def _best_per_budget(runs: list[dict], budgets) -> list[dict]:
  """Per budget: genode's most accurate deterministic run with NFE ≤ budget vs k-diffusion's."""
  rows = []
  for budget in budgets:
    row = {"budget": budget}
    for library in ("genode", "k-diffusion"):
      fits = [r for r in runs if r["library"] == library and r["nfe"] <= budget
              and (r["budget"] in (None, budget))]
      row[library] = min(fits, key=lambda r: r["rms_error"]) if fits else None
    rows.append(row)
  return rows


# ---------------------------------------------------------------------------
# 2. Speed: diffrax (genode.sampling.sample) vs a hand-written lax.scan.
# ---------------------------------------------------------------------------


def mlp_denoiser(key, hidden: int, dtype=jnp.float32):
  """EDM-preconditioned D(x; σ) around a random 2 → hidden → hidden → 2 SiLU MLP of (x, c_noise)."""
  sizes = [(3, hidden), (hidden, hidden), (hidden, 2)]
  keys = jax.random.split(key, len(sizes))
  params = [(jax.random.normal(k, s, dtype) / math.sqrt(s[0]), jnp.zeros(s[1], dtype))
            for k, s in zip(keys, sizes)]

  def network(x_in, c_noise):  # (B, 2), (B,) -> (B, 2)
    h = jnp.concatenate([x_in, c_noise[:, None].astype(x_in.dtype)], -1)
    for i, (w, b) in enumerate(params):
      h = h @ w + b
      h = jax.nn.silu(h) if i < len(params) - 1 else h
    return h

  return precondition(EDM(), network)


def scan_sampler(denoiser, sigmas: np.ndarray, heun: bool):
  """Euler or Heun (EDM Alg. 1) down a grid ending in 0, as one `lax.scan`.

  The last step, to σ = 0, is x = D(x; σ_last) (the Euler step to 0), as in genode.
  """
  positive = jnp.asarray(sigmas[:-1])

  def step(x, pair):
    sigma, sigma_next = pair
    h = sigma_next - sigma
    d = (x - denoiser(x, sigma)) / sigma
    if not heun:
      return x + h * d, None
    x_euler = x + h * d
    d_next = (x_euler - denoiser(x_euler, sigma_next)) / sigma_next
    return x + h * (0.5 * d + 0.5 * d_next), None

  def run(x):
    x, _ = jax.lax.scan(step, x, (positive[:-1].astype(x.dtype), positive[1:].astype(x.dtype)))
    return denoiser(x, positive[-1].astype(x.dtype))

  return run


def _timing(bench: SamplingBenchmark) -> dict:
  denoiser = mlp_denoiser(jax.random.key(bench.seed), bench.timing_hidden)
  sigmas = append_zero(karras_sigmas(bench.timing_steps, 0.002, 80.0, bench.rho))
  x = 80.0 * jax.random.normal(jax.random.key(bench.seed + 2), (bench.timing_batch, 2),
                               jnp.float32)
  fns = {}
  for solver in ("euler", "heun"):
    fns[f"diffrax_{solver}"] = jax.jit(lambda x, s=solver: sample(denoiser, x, sigmas, s)[0])
    fns[f"scan_{solver}"] = jax.jit(scan_sampler(denoiser, sigmas, heun=solver == "heun"))
  outputs = {name: jax.block_until_ready(fn(x)) for name, fn in fns.items()}  # warm-up
  wall = {name: [] for name in fns}
  cpu = {name: [] for name in fns}  # process CPU time: less sensitive to other processes
  names = list(fns)
  for repeat in range(bench.timing_repeats):  # interleaved, rotating the order
    for name in names[repeat % len(names):] + names[:repeat % len(names)]:
      start, start_cpu = time.perf_counter(), time.process_time()
      jax.block_until_ready(fns[name](x))
      wall[name].append(time.perf_counter() - start)
      cpu[name].append(time.process_time() - start_cpu)
  result = {"batch": bench.timing_batch, "steps": bench.timing_steps, "dtype": "float32",
            "hidden": bench.timing_hidden, "repeats": bench.timing_repeats, "solvers": {}}
  median = statistics.median
  for solver in ("euler", "heun"):
    d, s = f"diffrax_{solver}", f"scan_{solver}"
    result["solvers"][solver] = {
        "diffrax_median_s": median(wall[d]), "scan_median_s": median(wall[s]),
        "ratio": median(wall[d]) / median(wall[s]),
        "ratio_of_minima": min(wall[d]) / min(wall[s]),
        "cpu_ratio": median(cpu[d]) / median(cpu[s]),
        "diffrax_all_s": wall[d], "scan_all_s": wall[s],
        "diffrax_cpu_s": cpu[d], "scan_cpu_s": cpu[s],
        "max_abs_diff": float(jnp.max(jnp.abs(outputs[d] - outputs[s]))),
        "output_scale": float(jnp.max(jnp.abs(outputs[s])))}
  return result


# ---------------------------------------------------------------------------
# Markdown.
# ---------------------------------------------------------------------------


def _describe(run_record):
  if run_record is None:
    return "—", "—", "—"
  return run_record["solver"], run_record["nfe"], run_record["rms_error"]


def to_markdown(results: dict) -> str:
  lines = ["# Sampler benchmark", ""]
  if results["quick"]:
    lines += ["_Quick run (`--quick`): tiny sizes, for the tests; not a measurement._", ""]
  lines += ["Karras grid (ρ = 7, σ ∈ [0.002, 80], final 0), float64, ideal denoisers. "
            "Error: RMS vs the exact endpoint (closed form for the Gaussian, "
            "Dopri5 at tol 1e-12 for the ring), through the shared final denoising step.", ""]
  for acc in results["accuracy"]:
    lines += [f"## {acc['problem']} (d = {acc['dim']}, {acc['num_samples']} samples, "
              f"RMS of the endpoint {acc['data_scale']:.3g})", ""]
    rows = []
    for row in acc["best_per_budget"]:
      g_solver, g_nfe, g_err = _describe(row["genode"])
      k_solver, k_nfe, k_err = _describe(row["k-diffusion"])
      ratio = g_err / k_err if row["genode"] and row["k-diffusion"] else "—"
      rows.append([row["budget"], g_solver, g_nfe, g_err, k_solver, k_nfe, k_err, ratio])
    lines += [report.markdown_table(
        ["NFE budget", "best genode", "NFE", "RMS error", "best k-diffusion", "NFE",
         "RMS error", "genode / k-diffusion"], rows), ""]
    lines += [f"genode `heun` vs k-diffusion `sample_heun` on the same grids: max |Δ| = "
              f"{acc['heun_vs_kdiffusion_max_abs_diff']:.2e}, `lms` vs `sample_lms`: "
              f"{acc['lms_vs_kdiffusion_max_abs_diff']:.2e} (float64 rounding); "
              f"`karras_sigmas` vs `get_sigmas_karras`: max |Δ| = "
              f"{acc['karras_grid_vs_kdiffusion_max_abs_diff']:.2e}.", ""]
    if acc["tight_dopri5_vs_closed_form_rms"] is not None:
      lines += [f"The ring's reference method (Dopri5, tol 1e-12) on this problem: RMS error "
                f"{acc['tight_dopri5_vs_closed_form_rms']:.2e}.", ""]
    rows = [[r["library"], r["solver"], r["budget"] if r["budget"] is not None else "adaptive",
             r["steps"], r["nfe"], r["rms_error"]] for r in acc["runs"]]
    lines += ["<details><summary>All runs</summary>", "",
              report.markdown_table(["library", "solver", "budget", "steps", "NFE", "RMS error"],
                                    rows), "", "</details>", ""]
  timing = results["timing"]
  lines += [f"## Speed: diffrax vs `lax.scan` ({timing['batch']} × 2, {timing['dtype']}, "
            f"MLP 2→{timing['hidden']}→{timing['hidden']}→2, {timing['steps']} Karras σ's + 0, "
            f"median of {timing['repeats']} interleaved runs after warm-up)", ""]
  rows = [[solver, t["diffrax_median_s"] * 1e3, t["scan_median_s"] * 1e3, t["ratio"],
           t["ratio_of_minima"], t["cpu_ratio"], t["max_abs_diff"], t["output_scale"]]
          for solver, t in timing["solvers"].items()]
  lines += [report.markdown_table(
      ["solver", "diffrax ms", "lax.scan ms", "ratio (medians)", "ratio (minima)",
       "ratio (CPU time)", "max |Δ| of outputs", "max |x|"], rows), ""]
  lines += ["Wall times are medians; on a shared machine (see the load average below) the "
            "CPU-time ratio and the ratio of minima are the steadier figures.", ""]
  return "\n".join(lines)
