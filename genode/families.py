"""Model families, resolved once from a config: the only place that branches on one.

A family owns what differs between kinds of generative model: parameter init from a real
batch, the training objective, sampling, log-likelihood and the evaluation's sampler
settings. The training loop, the evaluation and the launchers call a family's methods,
never its name. Every family has

  name, data_shape, num_classes
  init_params(key, batch) -> params           (batch: a real training batch)
  objective() -> genode.losses.Objective
  sample(params, key, num, class_labels=None) -> (x (num, *data_shape), info with .nfe)
  make_sampler(num) -> jitted (params, key, class_labels=None) -> (x, info)
  grid_labels(num) -> labels for a sample grid, or None
  sampler_settings(eval_config) -> settings, each with .name, .describe()
  setting_sampler(setting, num) -> (jitted (params, key, labels) -> (x, info), record)
  log_likelihood(params, x, key, *, class_labels=None, **nll options) -> (logp (B,), info)
  sampler_overrides(**launch.sample flags) -> checked overrides (kwargs, label, record)
  likelihood_record() -> dict, describe() -> str

`FAMILIES` maps `config.family` to a builder `(config, data_shape, num_classes) -> family`
that reads the config sections that family needs (`REQUIRED_SECTIONS`); a builder that
also takes `quantization_levels` gets the dataset's (256 for 8-bit images, 0 for
continuous data).

| family | sections | model | objective |
|---|---|---|---|
| "diffusion" | formulation, model, sampler | a denoiser D(x; σ) (genode.diffusion) | denoising, reflow, distill |
| "flow" | flow, sampler | NICE, RealNVP, Glow (genode.flows) | nll (dequantized) |
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import ml_collections

from genode import models as models_lib
from genode.diffusion import Diffusion, SamplerSpec
from genode.flows import architectures as flow_architectures
from genode.flows.family import OBJECTIVES as FLOW_OBJECTIVES
from genode.flows.family import NormalizingFlow
from genode.formulations import get_formulation


def fields_of(section: ml_collections.ConfigDict) -> dict:
  """A config section as keyword arguments (ConfigDict → dict, lists → tuples)."""
  return {k: tuple(v) if isinstance(v, list) else v for k, v in section.to_dict().items()}


def build_diffusion(config: ml_collections.ConfigDict, data_shape: tuple[int, ...],
                    num_classes: int) -> Diffusion:
  """`config.formulation` + `config.model` (genode.models) + `config.sampler`, and the
  training objective `config.objective` (name + parameters; default "denoising")."""
  del num_classes  # the model's own num_classes is what it is conditioned on
  model = models_lib.get_model(**fields_of(config.model))
  objective = fields_of(config.objective) if "objective" in config else {"name": "denoising"}
  name = objective.pop("name")
  return Diffusion(formulation=get_formulation(**fields_of(config.formulation)), model=model,
                   data_shape=tuple(data_shape),
                   num_classes=int(getattr(model, "num_classes", 0)),
                   sampler=SamplerSpec.from_config(config.sampler),
                   objective_name=name, objective_params=tuple(sorted(objective.items())))


def build_flow(config: ml_collections.ConfigDict, data_shape: tuple[int, ...],
               num_classes: int, quantization_levels: int = 0) -> NormalizingFlow:
  """`config.flow` (name + the architecture's fields, genode.flows.FLOWS) and
  `config.sampler.temperature`; the objective is the dequantized NLL ("nll")."""
  del num_classes  # the flows are unconditional
  objective = config.objective.name if "objective" in config else "nll"
  if objective not in FLOW_OBJECTIVES:
    raise ValueError(f"Unknown objective {objective!r} for family 'flow'; valid "
                     f"objectives: {list(FLOW_OBJECTIVES)}")
  fields = fields_of(config.flow)
  flow = flow_architectures.get_flow(fields.pop("name"), data_shape=tuple(data_shape),
                                     **fields)
  return NormalizingFlow(flow=flow, data_shape=tuple(data_shape),
                         quantization_levels=int(quantization_levels),
                         temperature=float(config.sampler.get("temperature", 1.0)))


FAMILIES: dict[str, Callable[..., Any]] = {"diffusion": build_diffusion, "flow": build_flow}
# The config sections each family reads, besides the common ones.
REQUIRED_SECTIONS: dict[str, tuple[str, ...]] = {
    "diffusion": ("formulation", "model", "sampler"), "flow": ("flow", "sampler")}


def get_family(config: ml_collections.ConfigDict, data_shape, num_classes: int,
               quantization_levels: int = 0):
  """The family `config.family` (default "diffusion") built from `config`."""
  name = config.get("family", "diffusion")
  if name not in FAMILIES:
    raise ValueError(f"Unknown family {name!r}; valid families: {sorted(FAMILIES)}")
  missing = [k for k in REQUIRED_SECTIONS[name] if k not in config]
  if missing:
    raise ValueError(f"Config lacks {missing}, which family {name!r} needs")
  builder = FAMILIES[name]
  data = ({"quantization_levels": int(quantization_levels)}
          if "quantization_levels" in inspect.signature(builder).parameters else {})
  return builder(config, data_shape, num_classes, **data)
