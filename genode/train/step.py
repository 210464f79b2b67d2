"""The per-device train step (the pmap programming model).

`make_train_step` returns `train_step(state, batch) -> (state, metrics)`, written for ONE
device's shard of the batch and run over all devices by `genode.train.parallel`
(shard_map, pmap, or a vmap on one device). Inside it:

* keys: k = fold_in(fold_in(rng, step), device index): the noise and dropout at step k on
  device i are a pure function of (seed, k, i), so a resumed run repeats itself exactly;
* loss: mean over the shard of `denoising_loss` (EDM eq. 8) of the preconditioned network;
* gradient: of the device-averaged loss. The pmean trap: under `shard_map` with
  check_vma on, the parameters are replicated (device-invariant) and their gradient is
  already summed over devices, so pmean(grad(local loss)) is n_devices × the true
  gradient. We take grad(pmean(loss)) — the true mean gradient there — and then pmean
  the gradient: the identity there (a redundant all-reduce, which is why `DataParallel`
  turns check_vma off), the needed average under pmap, vmap and shard_map with
  check_vma off (where grad(pmean(loss)) is the device's own gradient).
  tests/test_parallel.py checks every mode against a one-device gradient.
* update: optax, then θ_ema ← β(k)·θ_ema + (1 − β(k))·θ_{k+1}.
"""

from __future__ import annotations

from typing import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax

from genode.denoiser import precondition
from genode.formulations import Formulation
from genode.losses import denoising_loss
from genode.train.optim import EmaDecay, learning_rate_of, update_ema
from genode.train.state import TrainState

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]
TrainStep = Callable[[TrainState, Batch], tuple[TrainState, Metrics]]


def make_train_step(formulation: Formulation, model: nn.Module,
                    optimizer: optax.GradientTransformation, *,
                    ema_decay: float | EmaDecay, axis_name: str = "data",
                    class_conditional: bool = False) -> TrainStep:
  """The per-device step; run it under a named axis `axis_name` (see `DataParallel`).

  ema_decay: β, or a function of the step k giving β(k) (`optim.ema_decay_schedule`).
  class_conditional: pass batch["label"] (B,) to the model as `class_labels`.

  train_step(state, batch): batch["x"] is this device's (B_local, ...) shard. Returns the
  new state and device-averaged scalar metrics:
    loss       the mean training loss over the global batch,
    grad_norm  the global norm of the averaged gradient, before clipping,
    learning_rate  the rate used by this update (if the optimizer injects it),
    ema_decay  β used for this step's EMA update,
    nonfinite  bool: loss or gradient has a NaN/Inf (the update is not skipped; stop).
  """
  ema_decay_fn = ema_decay if callable(ema_decay) else (lambda step: jnp.float32(ema_decay))

  def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    device_key = jax.random.fold_in(jax.random.fold_in(state.key, state.step),
                                    lax.axis_index(axis_name))
    noise_key, dropout_key = jax.random.split(device_key)
    labels = {"class_labels": batch["label"]} if class_conditional else {}

    def mean_loss(params):
      def network(x_in, c_noise):
        return model.apply({"params": params}, x_in, c_noise, train=True,
                           rngs={"dropout": dropout_key}, **labels)

      per_sample = denoising_loss(formulation, precondition(formulation, network),
                                  batch["x"], noise_key)
      return lax.pmean(jnp.mean(per_sample), axis_name)

    loss, grads = jax.value_and_grad(mean_loss)(state.params)
    grads = lax.pmean(grads, axis_name)  # the average (identity under shard_map + check_vma)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    beta = ema_decay_fn(state.step)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              ema_params=update_ema(state.ema_params, params, beta))

    grad_norm = optax.tree.norm(grads)
    metrics = {"loss": loss, "grad_norm": grad_norm, "ema_decay": beta,
               "nonfinite": ~(jnp.isfinite(loss) & jnp.isfinite(grad_norm))}
    learning_rate = learning_rate_of(opt_state)
    if learning_rate is not None:
      metrics["learning_rate"] = learning_rate
    return new_state, metrics

  return train_step
