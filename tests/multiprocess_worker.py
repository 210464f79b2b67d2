"""A tiny model and toy training run for the train tests; as a script, one process of
tests/test_multiprocess.py.

  python tests/multiprocess_worker.py OUT.npz COORDINATOR NUM_PROCESSES PROCESS_ID

joins the runtime (`genode.train.initialize`), trains `train_toy` with a shard_map mesh
over every process's devices, each process feeding its own rows of the global batch, and
writes the final parameters, EMA and metrics to OUT.npz.
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from genode.diffusion import Diffusion
from genode.formulations import get_formulation
from genode.train import (DataParallel, TrainState, create_train_state, initialize,
                          make_optimizer, make_train_step)


class TinyMLP(nn.Module):
  """F(x, c_noise[, label]) for 2-D data: the model interface of genode.models, in small."""

  hidden: int = 16
  num_classes: int = 0
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x, noise_labels, class_labels=None, train=False):
    h = jnp.concatenate([x, noise_labels[:, None].astype(x.dtype)], axis=-1)
    h = nn.silu(nn.Dense(self.hidden)(h))
    if self.num_classes:
      if class_labels is None:
        raise ValueError("TinyMLP with num_classes > 0 needs class_labels")
      h = h + nn.Embed(self.num_classes, self.hidden)(class_labels)
    h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
    h = nn.silu(nn.Dense(self.hidden)(h))
    return nn.Dense(x.shape[-1])(h)


def toy_batch(step: int, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """The global batch at `step`: points near a unit circle (B, 2) and labels (B,) in {0, 1}."""
  rng = np.random.default_rng([seed, step])
  angle = rng.uniform(0, 2 * np.pi, batch_size)
  x = np.stack([np.cos(angle), np.sin(angle)], -1) + 0.05 * rng.standard_normal((batch_size, 2))
  return {"x": x.astype(np.float32), "label": (angle > np.pi).astype(np.int32)}


def toy_family(model: nn.Module, num_classes: int = 0) -> Diffusion:
  """EDM on 2-D data with `model` as its network."""
  return Diffusion(get_formulation("edm"), model, data_shape=(2,), num_classes=num_classes)


def toy_state(family: Diffusion, optimizer, seed: int = 0) -> TrainState:
  """The family's initial TrainState for `seed`."""
  params = family.init_params(jax.random.key(seed), toy_batch(0, 8, seed))
  return create_train_state(params, optimizer, jax.random.key(seed))


class ToyRun(NamedTuple):
  initial_state: TrainState  # before training (not donated)
  state: TrainState  # after training, one copy
  metrics: dict[str, np.ndarray]  # {name: (num_steps,)}
  first_gradient: Any  # the device-averaged gradient of step 0


def train_toy(parallel: DataParallel, *, num_steps: int = 3, batch_size: int = 16,
              process_index: int = 0, process_count: int = 1, seed: int = 0) -> ToyRun:
  """Trains TinyMLP with dropout (EDM, Adam clipped at 0.1) for `num_steps`.

  The optimizer starts with `optax.trace(decay=0)`, the identity on updates whose state
  keeps the latest gradient, so the run also reports the gradient of step 0.
  """
  model = TinyMLP(dropout_rate=0.1)
  optimizer = optax.chain(optax.trace(decay=0.0),
                          make_optimizer(1e-2, warmup_steps=1, total_steps=10, decay="cosine",
                                         grad_clip_norm=0.1))
  family = toy_family(model)
  initial_state = toy_state(family, optimizer, seed)
  step = parallel.compile(make_train_step(family.objective(), optimizer, ema_decay=0.9))
  state = parallel.replicate(initial_state)
  history, first_gradient = [], None
  rows = batch_size // process_count
  for k in range(num_steps):
    batch = toy_batch(k, batch_size, seed)
    local = jax.tree.map(lambda a: a[process_index * rows:(process_index + 1) * rows], batch)
    state, metrics = step(state, parallel.shard_batch(local))
    history.append({name: float(value) for name, value in metrics.items()})
    if k == 0:
      first_gradient = parallel.unreplicate(state.opt_state[0].trace)
  metrics = {name: np.array([h[name] for h in history]) for name in history[0]}
  return ToyRun(initial_state, parallel.unreplicate(state), metrics, first_gradient)


def flat_arrays(state, metrics) -> dict[str, np.ndarray]:
  """The state's params and EMA as {"params['Dense_0']…": array}, plus the metrics."""
  out = {"metrics/" + name: values for name, values in metrics.items()}
  for prefix, tree in (("params", state.params), ("ema", state.ema_params)):
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
      out[prefix + jax.tree_util.keystr(path)] = np.asarray(leaf)
  return out


def main(out_path: str, coordinator: str, num_processes: str, process_id: str) -> None:
  info = initialize(coordinator, int(num_processes), int(process_id), initialization_timeout=60)
  assert info.process_count == int(num_processes), info
  run = train_toy(DataParallel("shard_map"), process_index=info.process_index,
                  process_count=info.process_count)
  np.savez(out_path, **flat_arrays(run.state, run.metrics))
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(*sys.argv[1:])
