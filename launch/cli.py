"""How every launcher answers a user error: the message alone, on one line, exit status 1.

A user error is a bad name, a bad flag or config value, a missing file, workdir,
checkpoint or step, a workdir that holds another experiment or another run, a loss that
became non-finite: the exceptions in `USER_ERRORS`. Anything else is a bug and keeps its
traceback. `GENODE_TRACEBACK=1` shows the traceback of user errors too.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

from absl import app
from absl import flags

from launch import config_flags_util


def _user_errors() -> tuple[type[BaseException], ...]:
  from genode.loop import NonFiniteLossError  # pylint: disable=g-import-not-at-top
  from genode.train.checkpoint import CheckpointError  # pylint: disable=g-import-not-at-top
  from genode.workdir import WorkdirError  # pylint: disable=g-import-not-at-top
  return (ValueError, FileNotFoundError, NotADirectoryError, CheckpointError, WorkdirError,
          NonFiniteLossError)


def run(main: Callable[[list[str]], None], config_flag: str | None = None) -> None:
  """`absl.app.run(main)` with config-override errors and user errors as one line."""

  def guarded(argv):
    try:
      main(argv)
    except _user_errors() as e:
      if os.environ.get("GENODE_TRACEBACK"):
        raise
      print(f"error: {e}", file=sys.stderr)
      sys.exit(1)

  if config_flag is None:
    app.run(guarded)
  else:
    app.run(guarded, flags_parser=lambda argv: config_flags_util.parse_flags(argv, config_flag))


def define_process_flags() -> Callable[[], object]:
  """Defines --coordinator_address, --num_processes and --process_id (multi-process runs;
  they default to the environment / one process) and returns the function that joins
  the runtime with them (`genode.train.distributed.initialize`)."""
  coordinator = flags.DEFINE_string("coordinator_address", None,
                                    "host:port of process 0 (multi-process runs).")
  num_processes = flags.DEFINE_integer("num_processes", None, "Number of processes.")
  process_id = flags.DEFINE_integer("process_id", None, "This process's index.")

  def initialize():
    from genode.train import distributed  # pylint: disable=g-import-not-at-top
    return distributed.initialize(coordinator.value, num_processes.value, process_id.value)

  return initialize
