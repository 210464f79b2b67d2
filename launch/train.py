"""Trains an experiment config in a workdir (resuming automatically).

  python -m launch.train --config=configs/digits_edm.py --workdir=/tmp/genode_main
  python -m launch.train --config=configs/toy2d_rf.py:runlocal --workdir=/tmp/smoke \
      --config.train.num_steps=10 --overwrite

Multi-process (one command per process; the flags default to the environment /
a single process): --coordinator_address=host:port --num_processes=N --process_id=i.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from launch import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and samples go.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Delete the workdir's previous run if its config differs.")
_INITIALIZE_PROCESSES = cli.define_process_flags()
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from genode import loop  # pylint: disable=g-import-not-at-top

  _INITIALIZE_PROCESSES()
  loop.train(_CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value)


if __name__ == "__main__":
  cli.run(main, config_flag="config")
