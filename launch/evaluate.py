"""Evaluates a trained workdir's checkpoint: samplers × metrics, NLL; writes <workdir>/eval/.

  python -m launch.evaluate --workdir=/tmp/genode_main
  python -m launch.evaluate --workdir=/tmp/genode_main --step=1500 --params=raw \
      --eval.solvers="('heun',)" --eval.steps="(18,)" --eval.num_samples=1000
  python -m launch.evaluate --workdir=/tmp/genode/smoke --eval=configs/eval.py:runlocal

See configs/eval.py for the fields and genode/evaluation/evaluate.py for the outputs.
"""

import json
import os

from absl import app
from absl import flags

from launch import cli
from launch import config_flags_util

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by launch.train.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the one selected by "
                             "validation, else the newest readable).")
_PARAMS = flags.DEFINE_enum("params", "ema", ["ema", "raw"], "EMA or raw parameters.")
_DEFAULT_EVAL = os.path.join(os.path.dirname(__file__), os.pardir, "configs", "eval.py")
_EVAL = config_flags_util.define_config_file_with_default("eval", _DEFAULT_EVAL,
                                                          "The eval config.")
flags.mark_flag_as_required("workdir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from genode.evaluation import evaluate  # pylint: disable=g-import-not-at-top

  records = evaluate.evaluate_workdir(_WORKDIR.value, _EVAL.value, step=_STEP.value,
                                      params=_PARAMS.value)
  for record in records:
    print(json.dumps({k: record.get(k) for k in ("name", "nfe", "metrics", "nll_bits_per_dim")
                      if k in record}))


if __name__ == "__main__":
  cli.run(main, config_flag="eval")
