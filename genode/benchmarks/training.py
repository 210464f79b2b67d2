"""Training throughput: the full loop against a bare jitted step of the same model.

For each config (`configs/<name>.py`), in one process:

* full loop: `genode.loop.train_experiment` in a fresh workdir — data from the
  dataset, the data-parallel step (loss, gradient, optimizer, EMA), metric logging and
  one asynchronous checkpoint inside the timed window (every `num_steps` steps). Timed from the end of the first
  (compiling) step over `num_steps` steps, by the loop's own steps/s record;
* bare step: `jax.jit` of value_and_grad(loss) + optimizer update on one device, the batch
  already on the device, `num_steps` calls after a compiling one, blocked at the end.

The ratio bare images/s ÷ loop images/s is the loop's overhead (target ≤ 1.10).
On CPU the batch is capped (`CPU_MAX_BATCH_VALUES`: 16 CIFAR-10 images; digits keep
their batch) so a CIFAR-10-size U-Net step takes seconds; elsewhere the config's batch
is used. A dataset whose files are absent (CIFAR-10 by
default) is replaced by synthetic data of the same shape (a pure function of the step).

  python -m launch.benchmark train --train_configs=digits_edm,cifar10_edm --train_steps=20
  python -m launch.benchmark train --train_configs=digits_edm,cifar10_edm:runlocal

A config name may carry its argument (`cifar10_edm:runlocal`: CIFAR-10-size inputs through
a tiny U-Net, which a CPU runs in seconds).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genode.benchmarks import report
from genode import loop
from genode.experiment import Experiment
from genode.train import metrics as metrics_lib

# On CPU the batch is capped at this many input values per step (16 CIFAR-10 images).
CPU_MAX_BATCH_VALUES = 16 * 32 * 32 * 3
# Example shapes of the datasets read from files, for synthetic stand-ins.
FILE_DATASET_SHAPES = {"cifar10": (32, 32, 3), "mnist": (28, 28, 1)}


@dataclasses.dataclass(frozen=True)
class SyntheticImages:
  """Uniform noise in [-1, 1] of a dataset's shape; the batch at step k is fixed by (seed, k)."""

  name: str
  shape: tuple[int, ...]
  num_classes: int = 0

  def train_batch(self, seed, step, batch_size, process_index=0, process_count=1):
    local = batch_size // process_count
    rng = np.random.default_rng((seed, step, process_index))
    return {"x": rng.uniform(-1, 1, (local,) + self.shape).astype(np.float32)}

  def to_uint8(self, x):
    return np.clip(np.round((np.asarray(x) + 1) * 127.5), 0, 255).astype(np.uint8)


def benchmark_config(name: str, num_steps: int, batch_size: int | None = None) -> dict:
  """Images/s of the full loop and of the bare step for `configs/<name>.py[:arg]`."""
  module, _, arg = name.partition(":")
  config = importlib.import_module(f"configs.{module}").get_config(arg or None)
  dataset, synthetic = None, False
  if "path" in config.data and not os.path.exists(config.data.path):
    shape = FILE_DATASET_SHAPES[config.data.name]
    dataset, synthetic = SyntheticImages(config.data.name, shape), True
  if batch_size is None:
    batch_size = config.train.batch_size
    if jax.default_backend() == "cpu":
      values = math.prod((dataset or Experiment.from_config(config, validate=False).dataset)
                         .shape)
      batch_size = max(1, min(batch_size, CPU_MAX_BATCH_VALUES // values))
  # One checkpoint per timed window: `--train_steps` equal to a config's checkpoint_every
  # (digits: 500) times its real cadence; fewer steps overstate the checkpoint's share.
  checkpoint_every = num_steps
  config.train.update(batch_size=batch_size, num_steps=num_steps + 1, log_every=num_steps + 1,
                      checkpoint_every=checkpoint_every, sample_every=0, keep_checkpoints=2)
  experiment = Experiment.from_config(config, dataset=dataset)
  with tempfile.TemporaryDirectory() as workdir:
    loop.train_experiment(experiment, workdir)
    (record,) = [r for r in metrics_lib.read_metrics(workdir) if r["step"] == num_steps + 1]
  loop_steps_per_sec = record["steps_per_sec"]
  bare_steps_per_sec = _bare_steps_per_sec(experiment, num_steps)
  return dict(
      config=name, batch_size=batch_size, num_steps=num_steps, synthetic_data=synthetic,
      checkpoint_every=checkpoint_every,
      parameters=sum(x.size for x in jax.tree.leaves(experiment.abstract_state().params)),
      loop_images_per_sec=loop_steps_per_sec * batch_size,
      bare_images_per_sec=bare_steps_per_sec * batch_size,
      overhead_ratio=bare_steps_per_sec / loop_steps_per_sec)


def _bare_steps_per_sec(experiment: Experiment, num_steps: int) -> float:
  """value_and_grad + optimizer update, jitted, one device, the batch resident."""
  state = experiment.init_state()
  params, opt_state = state.params, state.opt_state
  batch = jax.tree.map(jnp.asarray, experiment.train_batch(0))
  objective, optimizer = experiment.family.objective(), experiment.optimizer

  @jax.jit
  def step(params, opt_state, key):
    def loss_fn(p):
      return jnp.mean(objective(p, batch, key)[0])

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  key = jax.random.key(0)
  params, opt_state, loss = step(params, opt_state, key)  # compile
  jax.block_until_ready(loss)
  start = time.perf_counter()
  for k in range(num_steps):
    params, opt_state, loss = step(params, opt_state, jax.random.fold_in(key, k))
  jax.block_until_ready((params, loss))
  return num_steps / (time.perf_counter() - start)


def run(config_names: list[str], num_steps: int, out_dir: str) -> dict:
  """Benchmarks each config; writes `<out_dir>/training.json` and `training.md`."""
  rows = [benchmark_config(name, num_steps) for name in config_names]
  header = ["config", "batch", "params", "loop img/s", "bare step img/s", "bare/loop",
            "data"]
  table = report.markdown_table(header, [
      [r["config"], r["batch_size"], r["parameters"], r["loop_images_per_sec"],
       r["bare_images_per_sec"], r["overhead_ratio"],
       "synthetic" if r["synthetic_data"] else "real"] for r in rows])
  markdown = (f"# Training throughput: full loop vs bare jitted step\n\n{num_steps} timed steps "
              "per config (after a compiling one); target bare/loop ≤ 1.10.\n\n" + table)
  results = {"num_steps": num_steps, "results": rows}
  paths = report.write_report(out_dir, "training", results, markdown)
  return {**results, "paths": paths._asdict()}
