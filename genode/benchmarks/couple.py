"""Coupling generation throughput: `write_couplings` against a bare sampler call.

For a trained teacher workdir, in one process, with the sampler `couple_workdir` builds
(`make_workdir_sampler`: the teacher's EMA parameters an argument of one jitted solve):

* bare sampler: `num_batches` calls on device-resident noise after a compiling one,
  blocked at the end (what the solver itself costs);
* couple loop: `store.write_couplings` of `num_batches · batch_size` pairs in one shard,
  same sampler, already compiled: the noise drawn per shard, every batch dispatched
  before any is gathered, the shard written to disk (what generation costs).

The ratio bare pairs/s ÷ loop pairs/s is the loop's overhead (target ≈ 1: no per-pair
host round trips). Wall and process CPU seconds are both reported (a shared machine
inflates wall time, not CPU time).

  python -m launch.benchmark couple --teacher=/tmp/genode/digits_reflow/1rf \
      --couple_solver=heun --couple_steps=18
"""

from __future__ import annotations

import tempfile
import time

import jax
import numpy as np

from genode import workdir as workdir_lib
from genode.benchmarks import report
from genode.reflow import couple as couple_lib
from genode.reflow import store


def _timed(fn):
  wall, cpu = time.perf_counter(), time.process_time()
  out = fn()
  return out, time.perf_counter() - wall, time.process_time() - cpu


def benchmark(teacher: str, *, solver: str = "heun", steps: int | None = 18,
              batch_size: int = 512, num_batches: int = 4) -> dict:
  restored = workdir_lib.restore_workdir(teacher)
  family = restored.experiment.family
  weights = workdir_lib.select_params(restored.state, "ema")
  sigmas = couple_lib.teacher_grid(family, solver, None, steps)
  sample = couple_lib.make_workdir_sampler(family, weights, sigmas, solver)
  z = jax.random.normal(jax.random.key(0), (batch_size,) + tuple(family.data_shape))
  _, compile_s, _ = _timed(lambda: jax.block_until_ready(sample(z)))

  def bare():
    out = [sample(z) for _ in range(num_batches)]
    return jax.block_until_ready(out)

  _, bare_wall, bare_cpu = _timed(bare)
  num = num_batches * batch_size
  settings = store.CouplingSettings(num_pairs=num, shard_size=num, batch_size=batch_size,
                                    seed=0, shape=tuple(family.data_shape),
                                    sigma_max=float(sigmas[0]))
  with tempfile.TemporaryDirectory() as out:
    _, loop_wall, loop_cpu = _timed(lambda: store.write_couplings(out, sample, settings))
  nfe = int(np.asarray(sample(z)[1].nfe))
  return dict(teacher=teacher, solver=solver, steps=steps, nfe=nfe, batch_size=batch_size,
              num_pairs=num, compile_s=compile_s,
              bare_pairs_per_sec=num / bare_wall, loop_pairs_per_sec=num / loop_wall,
              bare_cpu_s=bare_cpu, loop_cpu_s=loop_cpu, bare_wall_s=bare_wall,
              loop_wall_s=loop_wall, overhead_ratio=loop_wall / bare_wall,
              cpu_overhead_ratio=loop_cpu / max(bare_cpu, 1e-9),
              environment=report.environment())


def run(teacher: str, out_dir: str, *, solver: str = "heun", steps: int | None = 18,
        num_batches: int = 4) -> dict:
  """Benchmarks `teacher`'s coupling generation; writes `<out_dir>/couple.{json,md}`."""
  r = benchmark(teacher, solver=solver, steps=steps, num_batches=num_batches)
  table = report.markdown_table(
      ["teacher", "solver", "NFE", "pairs", "bare pairs/s", "loop pairs/s", "loop/bare wall",
       "bare CPU s", "loop CPU s"],
      [[r["teacher"], r["solver"], r["nfe"], r["num_pairs"], r["bare_pairs_per_sec"],
        r["loop_pairs_per_sec"], r["overhead_ratio"], r["bare_cpu_s"], r["loop_cpu_s"]]])
  markdown = ("# Coupling generation: write_couplings vs a bare sampler call\n\n"
              "Same jitted sampler, compiled before timing; target loop/bare ≈ 1.\n\n" + table)
  paths = report.write_report(out_dir, "couple", {"results": [r]}, markdown)
  return {"results": [r], "paths": paths._asdict()}
