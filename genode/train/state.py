"""The training state: one pytree that orbax saves and the train step maps to itself."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs; every leaf is a plain array (orbax-saveable).

  step: int32 (), the number of optimizer updates applied so far.
  params: the network parameters (the "params" collection of the flax model).
  ema_params: the parameter EMA, same tree as `params`.
  opt_state: the optax state of `params`.
  rng: uint32 raw key data (e.g. (2,) for threefry), the run's base key; the step's
    keys are derived from (rng, step, device), never carried forward.
  """

  step: jax.Array
  params: Any
  ema_params: Any
  opt_state: Any
  rng: jax.Array

  @property
  def key(self) -> jax.Array:
    """The base key as a typed PRNG key."""
    return jax.random.wrap_key_data(self.rng)


def create_train_state(params: Any, optimizer: optax.GradientTransformation,
                       key: jax.Array) -> TrainState:
  """Step 0: `params` (EMA = params), the optimizer state and the run's base key.

  params: the initial parameters (a model family's `init_params`).
  key: typed or raw PRNG key of the run (training noise, dropout); stored as raw key data
    of JAX's default impl (drawn from `key` if it has another impl).
  """
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      ema_params=jax.tree.map(jnp.copy, params),
      opt_state=optimizer.init(params),
      rng=_default_impl_key_data(_typed(key)),
  )


def _default_impl_key_data(key: jax.Array) -> jax.Array:
  """Raw data of a key of JAX's default impl (threefry): `key`'s own, or drawn from it.

  So that `TrainState.key` (`wrap_key_data`) works whatever impl initialized the params
  (an "rbg" key compiles large initializers faster on CPU).
  """
  if key.dtype == jax.eval_shape(lambda: jax.random.key(0)).dtype:
    return jax.random.key_data(key)
  data = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))
  return jax.random.bits(key, data.shape, data.dtype)


def _typed(key: jax.Array) -> jax.Array:
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return key
  return jax.random.wrap_key_data(jnp.asarray(key))
