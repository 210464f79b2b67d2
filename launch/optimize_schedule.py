"""Fits a σ grid to a trained workdir's checkpoint (or a closed-form denoiser); writes JSON.

  python -m launch.optimize_schedule --workdir=/tmp/genode_main --solver=dpmpp_2m --steps=5
  python -m launch.optimize_schedule --workdir=W --solver=heun --steps=6 --objective=feature
  python -m launch.optimize_schedule --problem=ring --solver=lms_data --steps=10 --out=/tmp/g.json
  python -m launch.optimize_schedule --workdir=W --solver=dpmpp_2m --steps=10 --objective=klub

The grid goes to <workdir>/schedules/<solver>_<steps>.json (see genode/schedule_store.py, genode/schedule_fit.py),
which `launch.sample --grid=optimized` and `launch.evaluate` (eval.optimized_grids) load.
Deterministic given --seed. Objectives: mse (data space, after the final denoise),
mse_at_sigma_min, feature (the dataset's feature net: digits, mnist), klub (Align Your
Steps' KL upper bound, on forward-noised training-split rows: num_train + num_holdout).
"""

import json

from absl import app
from absl import flags

from launch import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by launch.train.")
_PROBLEM = flags.DEFINE_string("problem", None, "Instead of a workdir: a closed-form "
                               "denoiser (gaussian64 | ring), float64.")
_OUT = flags.DEFINE_string("out", None, "With --problem: the JSON file to write.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: newest readable).")
_PARAMS = flags.DEFINE_enum("params", "ema", ["ema", "raw"], "EMA or raw parameters.")
_SOLVER = flags.DEFINE_string("solver", "dpmpp_2m", "A fixed-grid deterministic solver.")
_STEPS = flags.DEFINE_integer("steps", None, "Grid steps n (n σ's then 0).")
_OBJECTIVE = flags.DEFINE_string("objective", "mse",
                                 "mse | mse_at_sigma_min | feature | klub.")
_KLUB_NODES = flags.DEFINE_integer("klub_nodes", 4, "klub: Gauss–Legendre nodes per interval.")
_NUM_TRAIN = flags.DEFINE_integer("num_train", 256, "Training noises.")
_NUM_HOLDOUT = flags.DEFINE_integer("num_holdout", 256, "Held-out noises.")
_ITERATIONS = flags.DEFINE_integer("num_iterations", 100, "Adam steps.")
_LR = flags.DEFINE_float("learning_rate", 0.05, "Peak learning rate (cosine decay).")
_BATCH = flags.DEFINE_integer("batch_size", None, "Noises per step (default: all).")
_TOL = flags.DEFINE_float("reference_tol", 1e-5, "rtol = atol of the Dopri5 reference.")
_SEED = flags.DEFINE_integer("seed", 0, "Seeds the noises and the minibatches.")
flags.mark_flag_as_required("steps")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from genode import schedule_fit  # pylint: disable=g-import-not-at-top

  kwargs = dict(objective=_OBJECTIVE.value, num_train=_NUM_TRAIN.value,
                num_holdout=_NUM_HOLDOUT.value, seed=_SEED.value,
                num_iterations=_ITERATIONS.value, learning_rate=_LR.value,
                batch_size=_BATCH.value, klub_nodes=_KLUB_NODES.value)
  if (_WORKDIR.value is None) == (_PROBLEM.value is None):
    raise ValueError("Pass exactly one of --workdir (a trained run) and --problem "
                     f"(a closed-form denoiser: {list(schedule_fit.CLOSED_FORM)})")
  if _PROBLEM.value is not None:
    if _OUT.value is None:
      raise ValueError("--problem needs --out=<file.json>")
    record = schedule_fit.optimize_closed_form(_PROBLEM.value, _SOLVER.value, _STEPS.value,
                                                 _OUT.value, **kwargs)
  else:
    record = schedule_fit.optimize_workdir(_WORKDIR.value, _SOLVER.value, _STEPS.value,
                                             step=_STEP.value, params=_PARAMS.value,
                                             reference_tol=_TOL.value, **kwargs)
  print(json.dumps({k: v for k, v in record.items() if k != "initial_sigmas"}, indent=2))


if __name__ == "__main__":
  cli.run(main)
