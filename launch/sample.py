"""Samples a trained workdir's newest (or a given) checkpoint; writes a PNG grid and an .npz.

  python -m launch.sample --workdir=/tmp/genode_main
  python -m launch.sample --workdir=/tmp/genode_main --step=1500 --params=raw \
      --solver=heun --grid=karras --steps=18 --num_samples=64 --seed=0 --out=/tmp/samples
  python -m launch.sample --workdir=/tmp/genode_main --solver=dpmpp_2m --steps=5 --grid=optimized
  python -m launch.sample --workdir=/tmp/genode/digits_glow --temperature=0.7   # a flow

Unset sampler flags take the workdir config's `sampler` values.
"""

import json

from absl import app
from absl import flags

from launch import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by launch.train.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the one selected by "
                             "validation, else the newest readable).")
_PARAMS = flags.DEFINE_enum("params", "ema", ["ema", "raw"], "EMA or raw parameters.")
_SOLVER = flags.DEFINE_string("solver", None, "Sampler (genode.sampling.SOLVERS).")
_GRID = flags.DEFINE_string("grid", None, "σ grid (genode.sampling.GRIDS), or 'optimized': "
                            "the workdir's (launch.optimize_schedule) for --solver/--steps.")
_SIGMAS = flags.DEFINE_list("sigmas", None, "An explicit σ grid, e.g. 80,10,1,0.1,0 "
                            "(instead of --grid/--steps).")
_STEPS = flags.DEFINE_integer("steps", None, "Number of grid steps.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", None, "How many samples.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_GUIDANCE = flags.DEFINE_float("guidance_scale", None, "Classifier-free guidance weight.")
_FORCE = flags.DEFINE_bool("force", False, "--grid=optimized: use a grid fitted to another "
                           "checkpoint step or formulation.")
_TEMPERATURE = flags.DEFINE_float("temperature", None, "A flow's sampling temperature T "
                                  "(z = T·ε).")
_OUT = flags.DEFINE_string("out", None, "Output path without extension (.png and .npz).")
flags.mark_flag_as_required("workdir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from genode.workdir import sample_workdir  # pylint: disable=g-import-not-at-top

  sigmas = None if _SIGMAS.value is None else [float(s) for s in _SIGMAS.value]
  # Only the sampler flags given: each family checks the names it takes.
  sampler = {k: v for k, v in dict(solver=_SOLVER.value, grid=_GRID.value, steps=_STEPS.value,
                                   sigmas=sigmas, guidance_scale=_GUIDANCE.value,
                                   temperature=_TEMPERATURE.value).items() if v is not None}
  record = sample_workdir(_WORKDIR.value, step=_STEP.value, params=_PARAMS.value,
                          num_samples=_NUM_SAMPLES.value, seed=_SEED.value, out=_OUT.value,
                          force=_FORCE.value, **sampler)
  print(json.dumps(record, indent=2))


if __name__ == "__main__":
  cli.run(main)
