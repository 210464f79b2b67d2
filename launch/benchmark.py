"""Runs a benchmark and writes `<out>/<name>.json` and `<out>/<name>.md`.

  python -m launch.benchmark sampling [--out=benchmarks/out] [--quick]
  python -m launch.benchmark train [--train_configs=digits_edm,cifar10_edm] [--train_steps=500]
  python -m launch.benchmark couple --teacher=<workdir> [--couple_solver=heun --couple_steps=18]

`train` defaults to digits_edm and the full CIFAR-10 DDPM++ (cifar10_edm) on an
accelerator, and to digits_edm and cifar10_edm:runlocal (CIFAR-10-size inputs through a
tiny U-Net) on a CPU, where the full U-Net takes minutes per step.
"""

from absl import app
from absl import flags

from launch import cli

_OUT = flags.DEFINE_string("out", "benchmarks/out", "Output directory.")
_QUICK = flags.DEFINE_bool("quick", False, "sampling: a tiny run (for the tests).")
_TRAIN_CONFIGS = flags.DEFINE_list(
    "train_configs", None, "train: config names (configs/<name>.py[:arg]); default: "
    "digits_edm and cifar10_edm (cifar10_edm:runlocal on a CPU).")
_TRAIN_STEPS = flags.DEFINE_integer(
    "train_steps", 500, "train: steps timed per config (one checkpoint among them).")

_TEACHER = flags.DEFINE_string("teacher", None, "couple: the teacher workdir.")
_COUPLE_SOLVER = flags.DEFINE_string("couple_solver", "heun", "couple: the sampler.")
_COUPLE_STEPS = flags.DEFINE_integer("couple_steps", 18, "couple: fixed-grid steps.")
_COUPLE_BATCHES = flags.DEFINE_integer("couple_batches", 4, "couple: timed batches of 512.")

BENCHMARKS = ("sampling", "train", "couple")


def main(argv):
  if len(argv) != 2 or argv[1] not in BENCHMARKS:
    raise app.UsageError(f"Usage: python -m launch.benchmark <benchmark> [flags]; "
                         f"benchmarks: {list(BENCHMARKS)}, got {argv[1:]}")
  # Imported lazily: each benchmark pulls in only what it needs.
  if argv[1] == "couple":
    if _TEACHER.value is None:
      raise ValueError("launch.benchmark couple needs --teacher=<workdir>")
    from genode.benchmarks import couple  # pylint: disable=g-import-not-at-top
    results = couple.run(_TEACHER.value, _OUT.value, solver=_COUPLE_SOLVER.value,
                         steps=_COUPLE_STEPS.value, num_batches=_COUPLE_BATCHES.value)
  elif argv[1] == "sampling":
    from genode.benchmarks import sampling  # pylint: disable=g-import-not-at-top
    results = sampling.run(_OUT.value, quick=_QUICK.value)
  else:
    import jax  # pylint: disable=g-import-not-at-top
    from genode.benchmarks import training  # pylint: disable=g-import-not-at-top
    configs = _TRAIN_CONFIGS.value or [
        "digits_edm", "cifar10_edm:runlocal" if jax.default_backend() == "cpu" else "cifar10_edm"]
    results = training.run(configs, _TRAIN_STEPS.value, _OUT.value)
  paths = results.get("paths", {}) if isinstance(results, dict) else {}
  print(f"{argv[1]} benchmark written: {paths or _OUT.value}")


if __name__ == "__main__":
  cli.run(main)
