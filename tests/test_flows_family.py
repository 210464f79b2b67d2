"""The flow family: data-dependent init, objective in bits/dim, a few optax steps learn."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genode.flows import get_flow
from genode.flows.family import NormalizingFlow, levels_of
from genode.bits import bits_per_dim


def test_levels_of_inverts_the_8bit_scaling():
  u = jnp.arange(256)
  np.testing.assert_array_equal(levels_of(u / 127.5 - 1.0, 256), u)


def test_few_adam_steps_lower_the_bits_per_dim():
  shape = (4, 4, 1)
  family = NormalizingFlow(get_flow("glow", data_shape=shape, hidden=8, num_levels=1,
                                    num_steps=2), shape, 256)
  levels = jax.random.randint(jax.random.key(0), (16,) + shape, 0, 64)
  batch = {"x": (levels / 127.5 - 1.0).astype(jnp.float32)}
  params = family.init_params(jax.random.key(1), batch)
  objective = family.objective()
  optimizer = optax.adam(3e-3)
  state = optimizer.init(params)

  @jax.jit
  def step(params, state, key):
    def loss_fn(p):
      loss, metrics = objective(p, batch, key)
      return jnp.mean(loss), metrics
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, state = optimizer.update(grads, state)
    return optax.apply_updates(params, updates), state, loss, metrics

  losses = []
  for i in range(20):
    params, state, loss, metrics = step(params, state, jax.random.key(100 + i))
    losses.append(float(loss))
  np.testing.assert_allclose(metrics["bits_per_dim"], losses[-1], rtol=1e-6)
  assert losses[-1] < losses[0] - 0.1, losses
  x = family.dequantized(jax.random.key(7), batch["x"])
  logp, info = family.log_likelihood(params, x, jax.random.key(7), trace="exact")
  np.testing.assert_array_equal(logp, family.log_prob(params, x))
  assert int(info.nfe) == 1 and info.stderr is None
  np.testing.assert_allclose(family.loss_of(logp), bits_per_dim(logp, 16), rtol=1e-6)
  x, info = family.sample(params, jax.random.key(8), 5, temperature=0.7)
  assert x.shape == (5,) + shape and float(jnp.abs(x).max()) <= 1.0
  assert int(info.nfe) == 1 and bool(info.finite) and info.temperature == 0.7


def test_continuous_family_reports_nats():
  family = NormalizingFlow(get_flow("realnvp", data_shape=(2,), hidden=8,
                                    num_vector_couplings=2), (2,), 0)
  batch = {"x": jax.random.normal(jax.random.key(0), (8, 2))}
  params = family.init_params(jax.random.key(1), batch)
  loss, metrics = family.objective()(params, batch, jax.random.key(2))
  np.testing.assert_allclose(loss, -family.log_prob(params, batch["x"]))
  assert "bits_per_dim" not in metrics


def test_sampler_settings_and_overrides():
  family = NormalizingFlow(get_flow("nice", data_shape=(2,), hidden=4, num_hidden_layers=1),
                           (2,), 0, temperature=0.8)
  settings = family.sampler_settings({"temperatures": (1.0, 0.7)})
  assert [s.name for s in settings] == ["inverse_T1", "inverse_T0.7"]
  assert settings[1].describe()["temperature"] == 0.7
  assert family.sampler_overrides().label == "inverse_T0.8"
  with pytest.raises(ValueError, match=r"Sampler options \['solver'\] do not apply to a "
                                       r"normalizing flow"):
    family.sampler_overrides(solver="heun")
  with pytest.raises(ValueError, match="eval.temperatures must be > 0"):
    family.sampler_settings({"temperatures": (0.0,)})
