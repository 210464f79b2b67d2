"""Training metrics: JSONL + TensorBoard (tensorboardX) + absl logging with steps/s and ETA.

`<workdir>/metrics.jsonl` holds one JSON object per log point: {"step": k, name: value…}.
`<workdir>/tensorboard/` holds the same scalars as TensorBoard events.
Only process 0 writes (`enabled=False` elsewhere).
"""

from __future__ import annotations

import json
import os
import time
from typing import Mapping

from absl import logging

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class MetricsWriter:
  """Appends scalars to `<workdir>/metrics.jsonl` and TensorBoard events."""

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, METRICS_FILE)
    self._tensorboard = None
    if enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tensorboard = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    for name, value in scalars.items():
      self._tensorboard.add_scalar(name, float(value), int(step))

  def flush(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.flush()

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()
      self._tensorboard = None


def read_metrics(workdir: str) -> list[dict]:
  """The records of `<workdir>/metrics.jsonl`, in order ([] if there is none)."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def truncate_metrics(workdir: str, last_step: int) -> None:
  """Drops records after `last_step` (a run resumed from a checkpoint at that step)."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return
  records = read_metrics(workdir)
  kept = [r for r in records if r["step"] <= last_step]
  if len(kept) != len(records):
    with open(path, "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in kept)


class Progress:
  """Steps/s and ETA between log points."""

  def __init__(self, step: int, num_steps: int):
    self.num_steps = num_steps
    self._step, self._time = step, time.perf_counter()

  def update(self, step: int) -> tuple[float, float]:
    """(steps/s since the last update, seconds left at that rate)."""
    now = time.perf_counter()
    rate = (step - self._step) / max(now - self._time, 1e-9)
    self._step, self._time = step, now
    return rate, (self.num_steps - step) / max(rate, 1e-9)

  def log(self, step: int, scalars: Mapping[str, float]) -> float:
    """Logs `scalars` with steps/s and ETA; returns steps/s."""
    rate, eta = self.update(step)
    values = " ".join(f"{k}={v:.4g}" for k, v in scalars.items())
    logging.info("step %d/%d  %s  %.2f steps/s  ETA %s", step, self.num_steps, values, rate,
                 _duration(eta))
    return rate


def _duration(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
