"""The training state: one pytree that orbax saves and the train step maps to itself."""

from __future__ import annotations

import functools
from typing import Any

import flax
import flax.linen as nn
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


def create_train_state(model: nn.Module, optimizer: optax.GradientTransformation,
                       example_x: jax.Array, key: jax.Array,
                       class_labels: jax.Array | None = None) -> TrainState:
  """Initializes params (EMA = params), the optimizer state, step 0 and the base key.

  model: a flax module called as `model.apply(variables, x, noise_labels,
    class_labels=..., train=..., rngs=...)`; only its "params" collection is kept.
  example_x: (B, ...) an example input (values unused; its shape and dtype fix the params).
  key: typed or raw PRNG key; split into the init key and the run's base key.
  class_labels: (B,) example labels for a class-conditional model, else None.
  """
  init_key, dropout_key, run_key = jax.random.split(_typed(key), 3)
  noise_labels = jnp.zeros(example_x.shape[:1], example_x.dtype)
  labels = {} if class_labels is None else {"class_labels": class_labels}
  try:
    hash(model)
    init = _init_variables
  except TypeError:  # a module with unhashable fields (e.g. a list): initialize eagerly
    init = _init_variables.__wrapped__
  variables = init(model, init_key, dropout_key, example_x, noise_labels, labels)
  other = sorted(set(variables) - {"params"})
  if other:
    raise ValueError(f"The model has variable collections {other} besides 'params'; the "
                     "train step only supports stateless models (no batch statistics).")
  params = variables["params"]
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      ema_params=jax.tree.map(jnp.copy, params),
      opt_state=optimizer.init(params),
      rng=_default_impl_key_data(run_key),
  )


@functools.partial(jax.jit, static_argnames="model")
def _init_variables(model, init_key, dropout_key, x, noise_labels, labels):
  """model.init, compiled once per (model, shapes): flax modules are hashable."""
  return model.init({"params": init_key, "dropout": dropout_key}, x, noise_labels, train=False,
                    **labels)


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
