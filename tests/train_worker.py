"""Subprocess helper for tests/test_loop.py: trains the runlocal toy2d config in a workdir.

  python tests/train_worker.py WORKDIR NUM_STEPS CHECKPOINT_EVERY [KILL_AFTER_STEP [KILL_AT]]
      [--config=NAME]

NAME is a module of configs/ (default toy2d_edm), trained at its `runlocal` argument.

With KILL_AFTER_STEP the process SIGKILLs itself right after the checkpoint of that step
is committed; with KILL_AT as well, checkpoints are committed synchronously and the kill
comes when the batch of step KILL_AT is drawn (between two checkpoints, after metrics
past the checkpoint were logged: the resume must drop them).
`persistent_compilation_cache` lets the test's processes share compiled programs.
"""

import contextlib
import importlib
import os
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from absl import logging  # noqa: E402

from configs import toy2d_edm  # noqa: E402
from genode.train import checkpoint  # noqa: E402
from genode import experiment as experiment_lib  # noqa: E402
from genode import loop  # noqa: E402


def resume_config(num_steps: int, checkpoint_every: int, config_name: str = "toy2d_edm"):
  """The config that test_loop trains straight through and this worker in pieces."""
  module = toy2d_edm if config_name == "toy2d_edm" else importlib.import_module(
      f"configs.{config_name}")
  config = module.get_config("runlocal")
  config.train.update(num_steps=num_steps, checkpoint_every=checkpoint_every, log_every=2,
                      sample_every=0, keep_checkpoints=10)
  return config


_CACHE_OPTIONS = {"jax_compilation_cache_dir": None,
                  "jax_persistent_cache_min_compile_time_secs": 0,
                  "jax_persistent_cache_min_entry_size_bytes": 0}


@contextlib.contextmanager
def persistent_compilation_cache(directory: str):
  """JAX's on-disk compilation cache in `directory`, for this process and (via the yielded
  environment) for subprocesses; the previous settings are restored after."""
  import jax  # pylint: disable=g-import-not-at-top
  options = dict(_CACHE_OPTIONS, jax_compilation_cache_dir=directory)
  previous = {name: getattr(jax.config, name) for name in options}
  for name, value in options.items():
    jax.config.update(name, value)
  try:
    yield dict(os.environ, **{name.upper(): str(value) for name, value in options.items()})
  finally:
    for name, value in previous.items():
      jax.config.update(name, value)


def main(workdir, num_steps, checkpoint_every, kill_after=None, kill_at=None,
         config_name="toy2d_edm"):
  logging.set_verbosity(logging.INFO)
  if kill_after is not None:
    save = checkpoint.Checkpointer.save

    def save_then_die(self, state, step=None):
      save(self, state, step)
      if step == kill_after:
        self.wait()
        if kill_at is None:
          os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.Checkpointer.save = save_then_die
  if kill_at is not None:
    train_batch = experiment_lib.Experiment.train_batch

    def die_at(self, step):
      if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
      return train_batch(self, step)

    experiment_lib.Experiment.train_batch = die_at
  loop.train(resume_config(num_steps, checkpoint_every, config_name), workdir)


if __name__ == "__main__":
  names = [a.split("=", 1)[1] for a in sys.argv[2:] if a.startswith("--config=")]
  numbers = [int(a) for a in sys.argv[2:] if not a.startswith("--config=")]
  main(sys.argv[1], *numbers, **({"config_name": names[0]} if names else {}))
