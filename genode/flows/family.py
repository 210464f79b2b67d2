"""Normalizing flows as a model family: init from a real batch, maximum likelihood,
temperature sampling and exact log-likelihood (DESIGN §8).

The objective is the negative log-likelihood of uniformly dequantized data,
x = 2(k + u)/L − 1 with u ~ U[0, 1)^d, where k = round((x_data + 1)(L − 1)/2) recovers the
integer levels of genode's [−1, 1] floats; in bits/dim (genode's convention,
`genode.likelihood.bits_per_dim`) for quantized data, in nats for continuous data
(`quantization_levels=None`, e.g. toy2d). `init_params` runs the flow's forward pass
on a dequantized training batch, which is where Glow's ActNorm takes its data-dependent
values; they are parameters from then on.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from genode.flows.architectures import Flow
from genode.bits import bits_per_dim, dequantize


def levels_of(x: jax.Array, num_levels: int) -> jax.Array:
  """[−1, 1] floats x = k/((L − 1)/2) − 1 → integer levels k (int32), rounded, clipped."""
  half = (num_levels - 1) / 2.0
  return jnp.clip(jnp.rint((x + 1.0) * half), 0, num_levels - 1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class NormalizingFlow:
  """The flow family.

  Attributes:
    flow: a genode.flows Flow module (NICE, RealNVP, Glow) for `data_shape`.
    data_shape: one sample's shape, e.g. (8, 8, 1) or (2,).
    quantization_levels: L of the data (256 for 8-bit images); None = continuous data.
    num_classes: 0 (the flows are unconditional).
  """

  flow: Flow
  data_shape: tuple[int, ...]
  quantization_levels: int | None = 256
  num_classes: int = 0

  @property
  def num_dims(self) -> int:
    return math.prod(self.data_shape)

  def _dequantized(self, key: jax.Array, x: jax.Array) -> jax.Array:
    x = jnp.asarray(x)
    if self.quantization_levels is None:
      return x
    levels = levels_of(x, self.quantization_levels)
    return dequantize(key, levels, num_levels=self.quantization_levels).astype(x.dtype)

  def _loss(self, logp: jax.Array) -> jax.Array:
    if self.quantization_levels is None:
      return -logp
    return bits_per_dim(logp, self.num_dims, num_levels=self.quantization_levels)

  def init_params(self, key: jax.Array, batch: dict[str, Any]) -> Any:
    """Params from a real batch (ActNorm's data-dependent init); batch["x"] (B, *data_shape)."""
    key_dequantize, key_init = jax.random.split(key)
    x = self._dequantized(key_dequantize, batch["x"])
    return self.flow.init(key_init, x, method="log_prob")

  def objective(self) -> Callable:
    """objective(params, batch, key) -> (per-sample loss (B,), metrics of scalars).

    The loss is −log p of the dequantized batch: bits/dim, or nats if continuous.
    """
    def objective(params, batch, key):
      x = self._dequantized(key, batch["x"])
      logp = self.flow.apply(params, x, method="log_prob")
      loss = self._loss(logp)
      metrics = {"nll_nats": -jnp.mean(logp)}
      if self.quantization_levels is not None:
        metrics["bits_per_dim"] = jnp.mean(loss)
      return loss, metrics
    return objective

  def sample(self, params, key: jax.Array, num: int, temperature: float = 1.0
             ) -> tuple[jax.Array, dict]:
    """num samples (num, *data_shape); images clipped to [−1, 1]. info: {"temperature"}."""
    x = self.flow.apply(params, key, num, temperature, method="sample")
    if self.quantization_levels is not None:
      x = jnp.clip(x, -1.0, 1.0)
    return x, {"temperature": temperature}

  def log_likelihood(self, params, x: jax.Array, key: jax.Array) -> tuple[jax.Array, dict]:
    """log p (B,) nats of one dequantization draw of x; info: {"bits_per_dim" (B,)} if quantized."""
    logp = self.flow.apply(params, self._dequantized(key, x), method="log_prob")
    info = {}
    if self.quantization_levels is not None:
      info["bits_per_dim"] = self._loss(logp)
    return logp, info
