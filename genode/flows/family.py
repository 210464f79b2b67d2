"""Normalizing flows as a model family (DESIGN §8): the `genode.families` interface.

`NormalizingFlow(flow, data_shape, quantization_levels)` owns what is particular to a
flow (NICE, RealNVP, Glow of genode.flows.architectures):

* `init_params(key, batch)`: the flow's forward pass on one uniformly dequantized
  *real* training batch, which is where Glow's ActNorm takes its data-dependent values.
  They are parameters from then on: a TrainState restored from a checkpoint carries them
  and nothing re-initializes them (the loop and `genode.workdir` restore into the
  abstract state, `jax.eval_shape` of the init, which computes nothing);
* `objective()`: −log p of the dequantized batch, x = 2(k + u)/L − 1, u ~ U[0, 1)^d,
  in bits/dim (genode's convention, `genode.bits.bits_per_dim`: the Jacobian of the
  [−1, 1] scaling is the +log₂(L/2) there; every later preprocessing step, RealNVP's
  logit, is inside the flow's log_prob); nats for continuous data (toy2d);
* `sample`, `make_sampler`: z = T·ε from the prior, x = f⁻¹(z), one inverse pass
  (NFE = 1), temperature T (Glow §5's eps_std; `config.sampler.temperature`);
* `sampler_settings(eval_config)`: one setting per `eval.temperatures` entry;
* `log_likelihood(params, x, key)`: the exact change-of-variables log p(x) of already
  dequantized x (the evaluation dequantizes, as for the PF-ODE likelihood); the trace
  options of the ODE likelihoods do not apply and are ignored.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from genode.bits import bits_per_dim, dequantize
from genode.diffusion import Overrides
from genode.flows.architectures import Flow
from genode.losses import Objective

OBJECTIVES = ("nll",)


class FlowSampleInfo(NamedTuple):
  """What a flow's sampler reports: NFE (one inverse pass), finiteness, temperature."""

  nfe: jax.Array
  finite: jax.Array
  temperature: float


class FlowLikelihoodInfo(NamedTuple):
  """What `log_likelihood` reports: NFE (one forward pass); no probe error (exact)."""

  nfe: jax.Array
  stderr: None = None


@dataclasses.dataclass(frozen=True)
class TemperatureSetting:
  """One evaluated flow sampler: z = T·ε."""

  temperature: float

  @property
  def name(self) -> str:
    return f"inverse_T{self.temperature:g}"

  def describe(self) -> dict:
    return dict(solver="inverse", grid=None, steps=None, tol=None,
                temperature=self.temperature)


def levels_of(x: jax.Array, num_levels: int) -> jax.Array:
  """[−1, 1] floats x = k/((L − 1)/2) − 1 → integer levels k (int32), rounded, clipped."""
  half = (num_levels - 1) / 2.0
  return jnp.clip(jnp.rint((x + 1.0) * half), 0, num_levels - 1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True, eq=False)
class NormalizingFlow:
  """The flow family.

  Attributes:
    flow: a genode.flows `Flow` module (NICE, RealNVP, Glow) for `data_shape`.
    data_shape: one sample's shape, e.g. (8, 8, 1) or (2,).
    quantization_levels: L of the data (256 for 8-bit images); 0 = continuous data.
    temperature: the default sampling temperature (`config.sampler.temperature`).
    num_classes: 0 (the flows are unconditional).
  """

  flow: Flow
  data_shape: tuple[int, ...]
  quantization_levels: int = 256
  temperature: float = 1.0
  num_classes: int = 0

  name = "flow"

  @property
  def num_dims(self) -> int:
    return math.prod(self.data_shape)

  @property
  def quantized(self) -> bool:
    return bool(self.quantization_levels)

  # -- training ---------------------------------------------------------------
  def dequantized(self, key: jax.Array, x: jax.Array) -> jax.Array:
    """Uniform dequantization of [−1, 1] data (`genode.bits.dequantize`); continuous
    data as it is."""
    x = jnp.asarray(x)
    if not self.quantized:
      return x
    levels = levels_of(x, self.quantization_levels)
    return dequantize(key, levels, num_levels=self.quantization_levels).astype(x.dtype)

  def loss_of(self, logp: jax.Array) -> jax.Array:
    """Per-sample loss of log p (nats): bits/dim of quantized data, else −log p."""
    if not self.quantized:
      return -logp
    return bits_per_dim(logp, self.num_dims, num_levels=self.quantization_levels)

  def init_params(self, key: jax.Array, batch: dict[str, Any]) -> Any:
    """Params from a real batch (ActNorm's data-dependent init); batch["x"] (B, *shape)."""
    key_dequantize, key_init = jax.random.split(key)
    x = self.dequantized(key_dequantize, batch["x"])
    variables = self.flow.init(key_init, x, method="log_prob")
    other = sorted(set(variables) - {"params"})
    if other:
      raise ValueError(f"{type(self.flow).__name__} has variable collections {other} "
                       "besides 'params'; the train step supports stateless models only")
    return variables["params"]

  def log_prob(self, params, x: jax.Array) -> jax.Array:
    """log p(x) (B,) nats of x (B, *data_shape) in the data space (dequantized)."""
    return self.flow.apply({"params": params}, jnp.asarray(x), method="log_prob")

  def objective(self) -> Objective:
    """objective(params, batch, key) -> (per-sample loss (B,), metrics of scalars): −log p
    of the dequantized batch, in bits/dim (quantized data) or nats."""

    def objective(params, batch, key):
      x = self.dequantized(key, batch["x"])
      logp = self.log_prob(params, x)
      loss = self.loss_of(logp)
      metrics = {"nll_nats": -jnp.mean(logp)}
      if self.quantized:
        metrics["bits_per_dim"] = jnp.mean(loss)
      return loss, metrics

    return objective

  # -- sampling ---------------------------------------------------------------
  def sample(self, params, key: jax.Array, num: int, *,
             class_labels: jax.Array | None = None, temperature: float | None = None
             ) -> tuple[jax.Array, FlowSampleInfo]:
    """num samples (num, *data_shape) of z = T·ε pushed through f⁻¹; images clipped to
    [−1, 1]. Call it under `jax.jit` (static num) or use `make_sampler`."""
    if class_labels is not None:
      raise ValueError("class_labels given, but the flows are unconditional")
    temperature = self.temperature if temperature is None else float(temperature)
    x = self.flow.apply({"params": params}, key, num, temperature, method="sample")
    finite = jnp.all(jnp.isfinite(x))
    if self.quantized:
      x = jnp.clip(x, -1.0, 1.0)
    return x, FlowSampleInfo(nfe=jnp.asarray(1, jnp.int32), finite=finite,
                             temperature=temperature)

  def make_sampler(self, num: int, **kwargs) -> Callable:
    """`jit`-compiled `(params, key, class_labels=None) -> (samples, info)`; kwargs:
    temperature."""
    temperature = kwargs.pop("temperature", None)
    if kwargs:
      raise ValueError(f"Unknown flow sampler options {sorted(kwargs)}; valid: "
                       "['temperature']")
    fn = jax.jit(lambda params, key: self.sample(params, key, num, temperature=temperature))
    return lambda params, key, class_labels=None: fn(params, key)

  def sampler_overrides(self, temperature: float | None = None, **others):
    """Checks `launch.sample`'s overrides: a flow takes `temperature` only; the ODE
    sampler's (solver, grid, steps, sigmas, guidance_scale) are refused by name."""
    given = sorted(k for k, v in others.items() if v is not None)
    if given:
      raise ValueError(f"Sampler options {given} do not apply to a normalizing flow (it "
                       "samples by one inverse pass); valid: ['temperature']")
    temperature = self.temperature if temperature is None else float(temperature)
    return Overrides(kwargs=dict(temperature=temperature), label=f"inverse_T{temperature:g}",
                     record=dict(solver="inverse", temperature=temperature))

  def grid_labels(self, num: int) -> None:
    del num
    return None

  # -- evaluation -------------------------------------------------------------
  def sampler_settings(self, eval_config) -> list[TemperatureSetting]:
    """One setting per `eval.temperatures` entry (default: the config's temperature)."""
    temperatures = tuple(eval_config.get("temperatures", None) or (self.temperature,))
    if any(not float(t) > 0 for t in temperatures):
      raise ValueError(f"eval.temperatures must be > 0, got {temperatures}")
    return [TemperatureSetting(float(t)) for t in temperatures]

  def setting_sampler(self, setting: TemperatureSetting, num: int) -> tuple[Callable, dict]:
    """(jitted `(params, key, labels) -> (x, info)` at the setting's temperature, record)."""
    fn = jax.jit(lambda p, key, labels: self.sample(p, key, num,
                                                    temperature=setting.temperature))
    return fn, dict(temperature=setting.temperature)

  def log_likelihood(self, params, x: jax.Array, key: jax.Array, *,
                     class_labels: jax.Array | None = None, **options
                     ) -> tuple[jax.Array, FlowLikelihoodInfo]:
    """Exact log p(x) (B,) nats of dequantized x by the change of variables (prior +
    every log|det J|, preprocessing included). The ODE likelihoods' options (trace,
    num_probes, rtol, atol) do not apply and are ignored; `key` is unused."""
    del key, options
    if class_labels is not None:
      raise ValueError("class_labels given, but the flows are unconditional")
    return self.log_prob(params, x), FlowLikelihoodInfo(nfe=jnp.asarray(1, jnp.int32))

  def likelihood_record(self) -> dict:
    """What `log_likelihood` computes, for the evaluation's record."""
    return dict(trace="exact", method="change of variables (exact log-det)")

  def describe(self) -> str:
    coupling = getattr(self.flow, "coupling", "additive")
    return f"{type(self.flow).__name__} ({coupling} couplings)"
