"""Checkpoint selection by held-out likelihood: `config.train.select_by = "val_nll"`.

Flows overfit 1500 digits within a few hundred steps, so a run can select its
checkpoint by the negative log-likelihood of a validation split held out of the
training data (`data.validation_examples` for images, fresh samples for toy2d; never the
test split). Any family works: the score is `family.log_likelihood` of the "val" split,

  quantized data: bits/dim of one fixed uniform-dequantization draw per example
                  (`genode.bits`, the evaluation's convention),
  continuous data: nats per example,

of the EMA parameters (what `launch.evaluate` and `launch.sample` use by default), every
`train.validate_every` steps and at the end. Each validated step is also checkpointed;
the best one is recorded in `<workdir>/selection.json` (`genode.workdir.read_selection`)
and kept whatever `train.keep_checkpoints` says, and a workdir restored without a step
(evaluation, sampling) restores it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from genode import bits

SELECT_BY = ("", "val_nll")
MAX_EXAMPLES = 2000  # a toy2d validation split is capped to this many samples
_KEY_TAG = 15485863  # the validation's dequantization keys: fold_in(key(seed), tag)


@dataclasses.dataclass
class Validator:
  """params → mean held-out NLL (bits/dim or nats) of the "val" split, jitted once."""

  every: int
  unit: str
  num_examples: int
  _batches: list
  _score: Callable

  @classmethod
  def build(cls, experiment) -> "Validator | None":
    """The experiment's validator, None if `train.select_by` is unset; ValueError for an
    unknown `select_by` or a dataset without a validation split."""
    tc = experiment.config.train
    select_by = tc.get("select_by", "") or ""
    if select_by not in SELECT_BY:
      raise ValueError(f"Unknown train.select_by {select_by!r}; valid: {list(SELECT_BY)}")
    if not select_by:
      return None
    every = int(tc.get("validate_every", 0) or tc.checkpoint_every)
    dataset, family = experiment.dataset, experiment.family
    levels_count = int(getattr(dataset, "quantization_levels", 0))
    if levels_count:
      values = dataset.arrays("val")[0]
      if not len(values):
        raise ValueError(f"{dataset.name} has no validation split; set "
                         "data.validation_examples to hold some training images out")
    else:
      values = dataset.split("val")["x"][:MAX_EXAMPLES]
    n = len(values)
    batch = min(n, int(tc.get("validation_batch_size", 500)))
    dim = math.prod(dataset.shape)
    root = jax.random.fold_in(jax.random.key(int(experiment.config.seed)), _KEY_TAG)
    batches = []
    for i in range(math.ceil(n / batch)):
      idx = np.arange(i * batch, (i + 1) * batch) % n  # the last batch wraps (one compile)
      keep = min(batch, n - i * batch)
      if levels_count:
        x = bits.dequantize(jax.random.fold_in(root, i), values[idx], num_levels=levels_count)
      else:
        x = jnp.asarray(values[idx])
      batches.append((x.astype(jnp.float32), keep))

    @jax.jit
    def score(params, x):
      logp, _ = family.log_likelihood(params, x, root)
      if levels_count:
        return bits.bits_per_dim(logp, dim, data_scale=2.0, num_levels=levels_count)
      return -logp

    return cls(every=every, unit="bits/dim" if levels_count else "nats",
               num_examples=n, _batches=batches, _score=score)

  def __call__(self, params: Any) -> float:
    """The mean held-out NLL of `params` (inf if it is not finite)."""
    values = [np.asarray(self._score(params, x))[:keep] for x, keep in self._batches]
    value = float(np.mean(np.concatenate(values)))
    return value if math.isfinite(value) else math.inf


def update_selection(record: dict | None, step: int, value: float, *, unit: str,
                     num_examples: int) -> dict:
  """The selection record after validating `step` (the lowest value is the best)."""
  record = dict(record or dict(metric="val_nll", unit=unit, split="val",
                               num_examples=num_examples, params="ema", history=[]))
  record["history"] = [h for h in record["history"] if h[0] < step] + [[int(step), value]]
  best_step, best_value = min(record["history"], key=lambda h: (h[1], h[0]))
  record.update(best_step=int(best_step), best_value=float(best_value))
  return record


def truncate_selection(record: dict | None, last_step: int) -> dict | None:
  """The record as it was after `last_step` (a resumed run repeats the later steps)."""
  if record is None:
    return None
  history = [h for h in record["history"] if h[0] <= last_step]
  if not history:
    return None
  record = dict(record, history=history)
  best_step, best_value = min(history, key=lambda h: (h[1], h[0]))
  record.update(best_step=int(best_step), best_value=float(best_value))
  return record
