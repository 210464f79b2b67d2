"""The per-device train step (the pmap programming model).

`make_train_step` returns `train_step(state, batch) -> (state, metrics)`, written for ONE
device's shard of the batch and run over all devices by `genode.train.parallel`
(shard_map, pmap, or a vmap on one device). Inside it:

* keys: k = fold_in(fold_in(rng, step), device index): the noise and dropout at step k on
  device i are a pure function of (seed, k, i), so a resumed run repeats itself exactly;
* loss: the mean over the shard of a training `Objective` (`genode.losses`): the
  denoising loss (EDM eq. 8) for diffusion, a negative log-likelihood for flows, …;
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

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax import lax

from genode.losses import Batch, Metrics, Objective
from genode.train.optim import EmaDecay, learning_rate_of, update_ema
from genode.train.state import TrainState

TrainStep = Callable[..., tuple[TrainState, Metrics]]


def make_train_step(objective: Objective, optimizer: optax.GradientTransformation, *,
                    ema_decay: float | EmaDecay, axis_name: str = "data") -> TrainStep:
  """The per-device step of `objective`; run it under a named axis (see `DataParallel`).

  objective: `objective(params, batch, key, *frozen) -> (per-sample loss (B_local,),
    metrics)` (`genode.losses.Objective`); `key` is this device's key of this step.
  ema_decay: β, or a function of the step k giving β(k) (`optim.ema_decay_schedule`).

  train_step(state, batch, *frozen): batch is this device's shard (leaves (B_local, ...));
  `frozen` are replicated inputs that are not trained (e.g. a teacher's parameters),
  arguments of the compiled step rather than constants baked into it. Returns the new
  state and device-averaged scalar metrics:
    loss       the mean training loss over the global batch,
    grad_norm  the global norm of the averaged gradient, before clipping,
    learning_rate  the rate used by this update (if the optimizer injects it),
    ema_decay  β used for this step's EMA update,
    nonfinite  bool: loss or gradient has a NaN/Inf (the update is not skipped; stop),
  plus the objective's own metrics (averaged over devices).
  """
  ema_decay_fn = ema_decay if callable(ema_decay) else (lambda step: jnp.float32(ema_decay))

  def train_step(state: TrainState, batch: Batch, *frozen) -> tuple[TrainState, Metrics]:
    device_key = jax.random.fold_in(jax.random.fold_in(state.key, state.step),
                                    lax.axis_index(axis_name))

    def mean_loss(params):
      per_sample, extra = objective(params, batch, device_key, *frozen)
      return lax.pmean(jnp.mean(per_sample), axis_name), extra

    (loss, extra), grads = jax.value_and_grad(mean_loss, has_aux=True)(state.params)
    grads = lax.pmean(grads, axis_name)  # the average (identity under shard_map + check_vma)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    beta = ema_decay_fn(state.step)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              ema_params=update_ema(state.ema_params, params, beta))

    grad_norm = optax.tree.norm(grads)
    metrics = {name: lax.pmean(value, axis_name) for name, value in extra.items()}
    metrics.update({"loss": loss, "grad_norm": grad_norm, "ema_decay": beta,
                    "nonfinite": ~(jnp.isfinite(loss) & jnp.isfinite(grad_norm))})
    learning_rate = learning_rate_of(opt_state)
    if learning_rate is not None:
      metrics["learning_rate"] = learning_rate
    return new_state, metrics

  return train_step
