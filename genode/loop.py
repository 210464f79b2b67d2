"""The training loop: `train(config, workdir)` runs an experiment to `train.num_steps`.

Per step k (0-based): the batch is `dataset.train_batch(seed, k, B, process, processes)`
and the noise is derived from (seed, k, device) inside the step, so a run resumed from a
checkpoint repeats the uninterrupted run bit for bit. Around the jitted step:

* metrics: every `log_every` steps, to `<workdir>/metrics.jsonl`, TensorBoard and the
  log (with steps/s and ETA, and the run's wall and process CPU seconds so far,
  `train_wall_s` and `train_cpu_s`, summed over resumes); the loop blocks on the device
  only there;
* a non-finite loss or gradient stops training with `NonFiniteLossError` naming the
  step; checkpoints are only written after the steps before them are checked finite, so
  the last good checkpoint is left untouched;
* checkpoints every `checkpoint_every` steps and at the end (asynchronous orbax saves);
* with `train.select_by = "val_nll"`: the held-out NLL of the EMA parameters every
  `validate_every` steps and at the end (`genode.validation`), each such step
  checkpointed, the best recorded in `<workdir>/selection.json` and its checkpoint kept;
  with `train.patience` = P > 0 training stops (early stopping) once P validations in a
  row were no better than the best, and a resumed run that had stopped stays stopped;
* sample grids `<workdir>/samples/step_<k>.png` every `sample_every` steps and at the end,
  from the EMA parameters with `config.sampler` (the sampler is jitted once);
  `sample_every = 0` writes none;
* SIGTERM / SIGINT: the loop saves a checkpoint at the current step and returns;
* one run per workdir: process 0 holds `<workdir>/lock.json` while it trains
  (`genode.workdir.hold`); a second run there is refused, naming the holder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from genode import images
from genode import validation as validation_lib
from genode import workdir as workdir_lib
from genode.experiment import Experiment
from genode.train import checkpoint as checkpoint_lib
from genode.train import metrics as metrics_lib

SAMPLES_DIR = "samples"


class NonFiniteLossError(FloatingPointError):
  """The loss or gradient became NaN/Inf; training stopped."""


def train(config: ml_collections.ConfigDict, workdir: str, *,
          overwrite: bool = False) -> Any:
  """Trains `config` in `workdir` (resuming from its newest checkpoint); returns the state.

  Raises ValueError (before compiling) for a bad config or a workdir that holds another
  experiment (unless `overwrite`), NonFiniteLossError if the loss becomes non-finite.
  Returns the final TrainState on the host (numpy leaves).
  """
  return train_experiment(Experiment.from_config(config), workdir, overwrite=overwrite)


def train_experiment(experiment: Experiment, workdir: str, *,
                     overwrite: bool = False) -> Any:
  """`train` for an already built Experiment (e.g. with a dataset object of one's own)."""
  is_main = experiment.process_index == 0
  lock = workdir_lib.hold(workdir) if is_main else contextlib.nullcontext()
  with lock:
    return _train(experiment, workdir, overwrite=overwrite)


def _train(experiment: Experiment, workdir: str, *, overwrite: bool) -> Any:
  config, tc = experiment.config, experiment.config.train
  is_main = experiment.process_index == 0
  workdir_lib.prepare_workdir(workdir, config, overwrite=overwrite, write=is_main)
  _sync("genode_prepare_workdir", experiment)
  checkpointer = checkpoint_lib.Checkpointer(workdir, max_to_keep=tc.keep_checkpoints)
  restored = checkpointer.restore_newest(experiment.abstract_state(), move_broken=is_main)
  if restored is None:
    state, start = workdir_lib.warm_start(experiment, experiment.init_state()), 0
    logging.info("Training %s from scratch in %s", experiment.describe(), workdir)
  else:
    state, start = restored
    logging.info("Resuming %s from checkpoint %d in %s", experiment.describe(), start,
                 workdir)
    if is_main:
      metrics_lib.truncate_metrics(workdir, start)
  parallel = experiment.parallel
  run = _Run(experiment, workdir, checkpointer, last_saved=start if restored else None)
  with _stop_on_signals() as stop, contextlib.closing(run):
    frozen = experiment.frozen_inputs()
    step_fn = parallel.compile(experiment.train_step(), num_frozen=len(frozen))
    frozen = parallel.replicate(frozen)
    replicated = parallel.replicate(state)
    step = start
    while step < tc.num_steps and not stop.is_set() and not run.patience_exhausted():
      batch = parallel.shard_batch(experiment.train_batch(step))
      replicated, metrics = step_fn(replicated, batch, *frozen)
      step += 1
      run.pending.append((step, metrics))
      if step == start + 1:
        run.first_step_done(step)
      run.after_step(step, replicated, final=step == tc.num_steps)
    if stop.is_set():
      logging.warning("Stopped by a signal at step %d; saving a checkpoint.", step)
    elif run.patience_exhausted():
      logging.info("Stopped at step %d: no better validation NLL in the last %d validations "
                   "(train.patience; best %.4f at step %d).", step, tc.patience,
                   run.selection["best_value"], run.selection["best_step"])
    run.finish(step, replicated)
  return jax.device_get(parallel.unreplicate(replicated))


class _Run:
  """The loop's bookkeeping between steps: metrics, checks, checkpoints, samples."""

  def __init__(self, experiment: Experiment, workdir: str,
               checkpointer: checkpoint_lib.Checkpointer, last_saved: int | None):
    self.experiment = experiment
    self.workdir = workdir
    self.checkpointer = checkpointer
    self.last_saved = last_saved
    self.is_main = experiment.process_index == 0
    self.writer = metrics_lib.MetricsWriter(workdir, enabled=self.is_main)
    self.pending: list[tuple[int, dict]] = []  # (step, device metrics) not yet logged
    self.checked = 0  # pending[:checked] are known finite
    self.progress: metrics_lib.Progress | None = None
    self._sampler = None
    self._start_time = time.perf_counter()
    self._start_cpu = time.process_time()
    previous = metrics_lib.read_metrics(workdir) if last_saved and self.is_main else []
    timed = [r for r in previous if "train_wall_s" in r]
    self._elapsed = ((timed[-1]["train_wall_s"], timed[-1]["train_cpu_s"]) if timed
                     else (0.0, 0.0))
    self.validator = validation_lib.Validator.build(experiment)
    self.selection = None
    if self.validator is not None:
      previous = workdir_lib.read_selection(workdir) if last_saved else None
      self.selection = validation_lib.truncate_selection(previous, last_saved or 0)
      if self.is_main:
        workdir_lib.write_selection(workdir, self.selection)
      if self.selection is not None:
        checkpointer.protected.add(self.selection["best_step"])

  def first_step_done(self, step: int) -> None:
    jax.block_until_ready(self.pending[-1][1])
    logging.info("First step (compilation included) took %.1f s",
                 time.perf_counter() - self._start_time)
    self.progress = metrics_lib.Progress(step, self.experiment.config.train.num_steps)

  def after_step(self, step: int, replicated, final: bool) -> None:
    tc = self.experiment.config.train
    if step % tc.log_every == 0 or final:
      self.log(step)
    validate = self.validator is not None and (step % self.validator.every == 0 or final)
    if validate:
      self.validate(step, replicated)
    if step % tc.checkpoint_every == 0 or final or validate:
      self.save(step, replicated)
    if self.is_main and tc.sample_every and (step % tc.sample_every == 0 or final):
      self.write_samples(step, replicated)

  def check_finite(self) -> None:
    """Raises NonFiniteLossError naming the first non-finite step among the pending ones."""
    unchecked = self.pending[self.checked:]
    flags = jax.device_get([m["nonfinite"] for _, m in unchecked])
    for (step, metrics), flag in zip(unchecked, flags):
      if flag:
        values = jax.device_get({k: metrics[k] for k in ("loss", "grad_norm")})
        raise NonFiniteLossError(
            f"Non-finite loss/gradient at step {step} (loss={float(values['loss'])}, "
            f"grad_norm={float(values['grad_norm'])}); training stopped. The last good "
            f"checkpoint is step {self.last_saved} in {self.checkpointer.directory}.")
    self.checked = len(self.pending)

  def log(self, step: int) -> None:
    self.check_finite()
    if not self.pending:
      return
    values = jax.device_get([m for _, m in self.pending])
    scalars = {k: float(np.mean([v[k] for v in values]))
               for k in values[-1] if k != "nonfinite"}
    scalars["learning_rate"] = float(values[-1].get("learning_rate", np.nan))
    scalars["train_wall_s"] = self._elapsed[0] + time.perf_counter() - self._start_time
    scalars["train_cpu_s"] = self._elapsed[1] + time.process_time() - self._start_cpu
    if self.progress is not None:
      scalars["steps_per_sec"] = self.progress.log(step, scalars)
    self.writer.write(step, scalars)
    self.pending, self.checked = [], 0

  def patience_exhausted(self) -> bool:
    """Whether the last `train.patience` validations (0 = never) were all worse than the
    best: training has stopped improving on held-out data."""
    patience = int(self.experiment.config.train.get("patience", 0) or 0)
    if not patience or self.selection is None:
      return False
    later = [h for h in self.selection["history"] if h[0] > self.selection["best_step"]]
    return len(later) >= patience

  def validate(self, step: int, replicated) -> None:
    """The held-out NLL of the EMA parameters at `step`; records the best step (which the
    checkpointer then keeps)."""
    self.check_finite()
    start = time.perf_counter()
    value = self.validator(self.experiment.parallel.unreplicate(replicated).ema_params)
    self.selection = validation_lib.update_selection(
        self.selection, step, value, unit=self.validator.unit,
        num_examples=self.validator.num_examples)
    self.checkpointer.protected.clear()
    self.checkpointer.protected.add(self.selection["best_step"])
    if self.is_main:
      workdir_lib.write_selection(self.workdir, self.selection)
    self.writer.write(step, {"val_nll": value})
    logging.info("Step %d: validation NLL %.4f %s (best %.4f at step %d; %.1f s)", step, value,
                 self.validator.unit, self.selection["best_value"], self.selection["best_step"],
                 time.perf_counter() - start)

  def save(self, step: int, replicated) -> None:
    if step == self.last_saved:
      return
    self.check_finite()
    state = jax.device_get(self.experiment.parallel.unreplicate(replicated))
    self.checkpointer.save(state, step)
    self.last_saved = step

  def write_samples(self, step: int, replicated) -> None:
    experiment, family = self.experiment, self.experiment.family
    num = experiment.config.sampler.num_samples
    if self._sampler is None:
      self._sampler = family.make_sampler(num)
    ema_params = experiment.parallel.unreplicate(replicated).ema_params
    key = jax.random.fold_in(jax.random.key(experiment.config.seed), step)
    start = time.perf_counter()
    x, info = self._sampler(ema_params, key, family.grid_labels(num))
    x = np.asarray(jax.device_get(x))
    path = os.path.join(self.workdir, SAMPLES_DIR, f"step_{step}.png")
    images.save_samples(path, x, getattr(experiment.dataset, "to_uint8", None))
    logging.info("Wrote %s (%d samples, %s NFE, %.1f s)", path, num,
                 int(np.asarray(info.nfe)), time.perf_counter() - start)

  def finish(self, step: int, replicated) -> None:
    self.log(step)
    self.save(step, replicated)
    self.checkpointer.wait()

  def close(self) -> None:
    self.writer.close()
    self.checkpointer.close()


@contextlib.contextmanager
def _stop_on_signals():
  """A flag set by SIGTERM/SIGINT while the loop runs (the handlers are restored after)."""
  stop = threading.Event()
  if threading.current_thread() is not threading.main_thread():
    yield stop
    return

  def handler(signum, frame):
    del frame
    if stop.is_set() and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C stops at once
    logging.warning("Received %s: stopping after this step.", signal.Signals(signum).name)
    stop.set()

  previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield stop
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


def _sync(name: str, experiment: Experiment) -> None:
  if experiment.process_count > 1:
    multihost_utils.sync_global_devices(name)
