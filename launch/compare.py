"""One comparison table over trained workdirs of any family (genode.evaluation.compare).

  python -m launch.compare --workdirs=/tmp/genode/digits_nice,/tmp/genode/digits_realnvp \
      --out=/tmp/genode/digits_table.md
  python -m launch.compare --workdirs=a,b,c --evaluate --eval=configs/eval_flows.py

Each row comes from `<workdir>/eval/<step>/` (the validation-selected step if the run has
one, else the newest evaluation); `--evaluate` runs `launch.evaluate` first where that
step has no evaluation, with the eval config given (`--eval.<field>=…` overrides apply).
Prints the Markdown table (and writes it to --out, with the rows as JSON beside it).
"""

import json
import os

from absl import app
from absl import flags

from launch import cli
from launch import config_flags_util

_WORKDIRS = flags.DEFINE_list("workdirs", None, "Workdirs written by launch.train.")
_EVALUATE = flags.DEFINE_bool("evaluate", False, "Evaluate workdirs that have no evaluation.")
_OUT = flags.DEFINE_string("out", None, "Write the table here (.md; rows beside as .json).")
_DEFAULT_EVAL = os.path.join(os.path.dirname(__file__), os.pardir, "configs", "eval_flows.py")
_EVAL = config_flags_util.define_config_file_with_default("eval", _DEFAULT_EVAL,
                                                          "The eval config.")
flags.mark_flag_as_required("workdirs")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from genode.evaluation import compare  # pylint: disable=g-import-not-at-top

  for workdir in _WORKDIRS.value:  # every workdir is checked before anything is evaluated
    compare.workdir_lib.load_config(workdir)
  rows = [compare.row(w, eval_config=_EVAL.value if _EVALUATE.value else None)
          for w in _WORKDIRS.value]
  table = compare.markdown(rows)
  print(table)
  if _OUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value, "w") as f:
      f.write(table)
    with open(os.path.splitext(_OUT.value)[0] + ".json", "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  cli.run(main, config_flag="eval")
