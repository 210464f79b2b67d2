"""Rectified-flow reflow tools (Liu, Gong & Liu 2022). One subcommand: `couple`.

  python -m launch.reflow couple --teacher=/tmp/genode/toy2d_reflow/1rf \
      --out=/tmp/genode/toy2d_reflow/pairs_1rf --num_pairs=50000
  python -m launch.reflow couple --teacher=<workdir> --out=<dir> --num_pairs=16384 \
      --solver=heun --steps=18          # the teacher's 35-NFE Heun instead of RK45

`couple` solves the teacher's PF-ODE from fixed noise z (EMA parameters of its newest
checkpoint by default) and stores the pairs (z, x) in shards under --out (see
genode/reflow/store.py): resumable (rerun the same command), multi-process (one command
per process, --coordinator_address/--num_processes/--process_id), logs pairs/s and an
ETA. Defaults: dopri5 at rtol = atol = 1e-5 (the paper's RK45), batch 512, shards of
8192 pairs. Train a k-RF or distilled student on them with data.name = "couplings"
(configs/toy2d_reflow.py, configs/digits_reflow.py).
"""

from absl import app
from absl import flags

from launch import cli

COMMANDS = ("couple",)

_TEACHER = flags.DEFINE_string("teacher", None, "The teacher's workdir (launch.train).")
_OUT = flags.DEFINE_string("out", None, "The couplings directory to write (or resume).")
_NUM_PAIRS = flags.DEFINE_integer("num_pairs", None, "How many (z, x) pairs.")
_SOLVER = flags.DEFINE_string("solver", "dopri5", "A genode.sampling solver.")
_RTOL = flags.DEFINE_float("rtol", 1e-5, "Relative tolerance (adaptive solvers).")
_ATOL = flags.DEFINE_float("atol", 1e-5, "Absolute tolerance (adaptive solvers).")
_MAX_STEPS = flags.DEFINE_integer("max_steps", None, "Step budget (adaptive solvers).")
_GRID = flags.DEFINE_string("grid", None, "σ grid of a fixed-grid solver (default: the "
                            "teacher's sampler grid).")
_STEPS = flags.DEFINE_integer("steps", None, "Steps of a fixed-grid solver (default: the "
                              "teacher's sampler steps).")
_BATCH = flags.DEFINE_integer("batch_size", None, "Pairs per sampler call (default 512).")
_SHARD = flags.DEFINE_integer("shard_size", None, "Pairs per shard, a multiple of "
                              "--batch_size (default ≈ 8192).")
_SEED = flags.DEFINE_integer("seed", None, "Seed of the noise z (default: 0 for a teacher "
                             "trained on data, one more than its couplings' seed for a k-RF "
                             "teacher, so that each reflow round draws fresh noise).")
_STEP = flags.DEFINE_integer("step", None, "The teacher's checkpoint (default: newest).")
_PARAMS = flags.DEFINE_enum("params", "ema", ["ema", "raw"], "The teacher's parameters.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Replace couplings in --out made with other settings.")
_INITIALIZE_PROCESSES = cli.define_process_flags()


def main(argv):
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f"Usage: python -m launch.reflow {{{'|'.join(COMMANDS)}}} --flags; "
                         f"got {argv[1:]}")
  missing = [f"--{f.name}" for f in (_TEACHER, _OUT, _NUM_PAIRS) if f.value is None]
  if missing:
    raise ValueError(f"launch.reflow couple needs {', '.join(missing)}")
  from genode.reflow import couple  # pylint: disable=g-import-not-at-top

  _INITIALIZE_PROCESSES()
  summary = couple.couple_workdir(
      _TEACHER.value, _OUT.value, _NUM_PAIRS.value, solver=_SOLVER.value, rtol=_RTOL.value,
      atol=_ATOL.value, grid=_GRID.value, steps=_STEPS.value, batch_size=_BATCH.value,
      shard_size=_SHARD.value, seed=_SEED.value, step=_STEP.value, params=_PARAMS.value,
      overwrite=_OVERWRITE.value, max_steps=_MAX_STEPS.value)
  print(f"couplings {_OUT.value}: wrote shards {list(summary.shards_written)}, "
        f"{len(summary.shards_skipped)} already complete, {summary.seconds:.1f} s")


if __name__ == "__main__":
  cli.run(main)
