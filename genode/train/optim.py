"""The optimizer and the parameter EMA.

Optimizer: global-norm gradient clipping → Adam or AdamW → learning-rate warm-up and
decay, one `optax.chain`. The learning rate is injected (`optax.inject_hyperparams`),
so the rate used by the latest update can be read back from the optimizer state
(`learning_rate_of`) for logging.

EMA: θ_ema ← β·θ_ema + (1 − β)·θ after every step (`optax.incremental_update`; note
that `optax.ema` averages *updates*, not parameters). EDM states the EMA length as a
half-life in training images h: β = 0.5^(B/h) for batch size B (Karras et al. 2022,
Appendix F.3, `training_loop.py`), with an optional ramp-up that caps the half-life at
`rampup_ratio` × the images seen so far.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

Schedule = Callable[[jax.Array], jax.Array]
EmaDecay = Callable[[jax.Array], jax.Array]

DECAYS = ("constant", "cosine", "linear")
OPTIMIZERS = ("adam", "adamw", "adamax")  # adamax: Glow's (openai/glow `optim.adamax`)


# ---------------------------------------------------------------------------
# Learning rate and optimizer.
# ---------------------------------------------------------------------------


def make_schedule(learning_rate: float, *, warmup_steps: int = 0, total_steps: int | None = None,
                  decay: str = "constant") -> Schedule:
  """Learning rate at step k: linear warm-up 0 → `learning_rate` over `warmup_steps`, then decay.

  decay: "constant" (hold), "cosine" (half cosine to 0 at `total_steps`), or
  "linear" (straight line to 0 at `total_steps`). The decays need `total_steps` >
  `warmup_steps`. Step 0 has rate 0 when warming up (as in EDM and optax).
  """
  if decay not in DECAYS:
    raise ValueError(f"Unknown learning-rate decay {decay!r}; valid decays: {list(DECAYS)}")
  if warmup_steps < 0:
    raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
  if decay == "constant":
    after = optax.constant_schedule(learning_rate)
  else:
    if total_steps is None or total_steps <= warmup_steps:
      raise ValueError(f"decay={decay!r} needs total_steps > warmup_steps; got "
                       f"total_steps={total_steps}, warmup_steps={warmup_steps}")
    decay_steps = total_steps - warmup_steps
    if decay == "cosine":
      after = optax.cosine_decay_schedule(learning_rate, decay_steps)
    else:
      after = optax.linear_schedule(learning_rate, 0.0, decay_steps)
  if warmup_steps == 0:
    return after
  warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
  return optax.join_schedules([warmup, after], [warmup_steps])


def make_optimizer(learning_rate: float, *, warmup_steps: int = 0, total_steps: int | None = None,
                   decay: str = "constant", grad_clip_norm: float | None = None,
                   optimizer: str = "adam", b1: float = 0.9, b2: float = 0.999,
                   eps: float = 1e-8, weight_decay: float = 0.0) -> optax.GradientTransformation:
  """clip_by_global_norm(grad_clip_norm) → Adam/AdamW/Adamax(b1, b2, eps), scheduled rate.

  grad_clip_norm: None or 0 disables clipping. weight_decay is AdamW's decoupled decay
  (multiplied by the scheduled rate, as in optax); "adam" requires weight_decay == 0.
  The learning rate is an injected hyperparameter: see `learning_rate_of`.
  """
  if optimizer not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {optimizer!r}; valid optimizers: {list(OPTIMIZERS)}")
  if optimizer in ("adam", "adamax") and weight_decay:
    raise ValueError(f"optimizer='adam' has no weight decay (got weight_decay={weight_decay}); "
                     "use optimizer='adamw'")
  schedule = make_schedule(learning_rate, warmup_steps=warmup_steps, total_steps=total_steps,
                           decay=decay)
  if optimizer in ("adam", "adamax"):
    adam = optax.inject_hyperparams(getattr(optax, optimizer))(learning_rate=schedule, b1=b1,
                                                                b2=b2, eps=eps)
  else:
    adam = optax.inject_hyperparams(optax.adamw)(learning_rate=schedule, b1=b1, b2=b2, eps=eps,
                                                 weight_decay=weight_decay)
  if not grad_clip_norm:
    return adam
  if grad_clip_norm < 0:
    raise ValueError(f"grad_clip_norm must be positive (or None to disable), got {grad_clip_norm}")
  return optax.chain(optax.clip_by_global_norm(grad_clip_norm), adam)


def learning_rate_of(opt_state: Any) -> jax.Array | None:
  """The learning rate of the latest update, from an `inject_hyperparams` state; else None."""
  return optax.tree_utils.tree_get(opt_state, "learning_rate",
                                   filtering=lambda _, value: hasattr(value, "dtype"))


# ---------------------------------------------------------------------------
# Parameter EMA.
# ---------------------------------------------------------------------------


def ema_decay_from_half_life(half_life_images: float, batch_size: int) -> float:
  """β = 0.5^(B/h): the EMA weight of an image seen h images ago halves (EDM, App. F.3)."""
  if half_life_images <= 0 or batch_size <= 0:
    raise ValueError("half_life_images and batch_size must be positive, got "
                     f"{half_life_images} and {batch_size}")
  return 0.5 ** (batch_size / half_life_images)


def ema_decay_schedule(half_life_images: float, batch_size: int,
                       rampup_ratio: float | None = None) -> EmaDecay:
  """β(k) for the EMA update after step k (k = images seen so far / B).

  Without ramp-up β is constant, 0.5^(B/h). With `rampup_ratio` r the half-life is
  min(h, r·k·B) (EDM `training_loop.py`, ema_rampup_ratio = 0.05), so β(0) = 0 and
  early EMA weights track the parameters.
  """
  beta = ema_decay_from_half_life(half_life_images, batch_size)
  if rampup_ratio is None:
    return lambda step: jnp.asarray(beta, jnp.float32)
  if rampup_ratio <= 0:
    raise ValueError(f"rampup_ratio must be positive (or None), got {rampup_ratio}")

  def decay(step):
    images_seen = jnp.asarray(step, jnp.float32) * batch_size
    half_life = jnp.minimum(half_life_images, rampup_ratio * images_seen)
    return 0.5 ** (batch_size / jnp.maximum(half_life, 1e-8))

  return decay


def update_ema(ema_params: Any, params: Any, decay: jax.Array | float) -> Any:
  """θ_ema ← β·θ_ema + (1 − β)·θ, leaf by leaf."""
  return optax.incremental_update(params, ema_params, step_size=1.0 - decay)
