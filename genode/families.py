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

`FAMILIES` maps `config.family` to a builder
`(config, data_shape, num_classes, quantization_levels) -> family` (the dataset's
quantization levels: 256 for 8-bit images, 0 for continuous data) that reads the config
sections that family needs (`REQUIRED_SECTIONS`).

| family | sections | model | objective |
|---|---|---|---|
| "diffusion" | formulation, model, sampler | a denoiser D(x; σ) (genode.diffusion) | denoising, reflow, distill |
| "flow" | flow, sampler | NICE, RealNVP, Glow (genode.flows) | nll (dequantized) |
| "cnf" | model, cnf, sampler | FFJORD, a vector field f(x, t) (genode.ffjord) | maximum likelihood (Hutchinson) |
"""

from __future__ import annotations

from typing import Any, Callable

import ml_collections

from genode import models as models_lib
from genode import ffjord
from genode.diffusion import Diffusion, SamplerSpec
from genode.flows import architectures as flow_architectures
from genode.flows.family import OBJECTIVES as FLOW_OBJECTIVES
from genode.flows.family import NormalizingFlow
from genode.formulations import get_formulation


def fields_of(section: ml_collections.ConfigDict) -> dict:
  """A config section as keyword arguments (ConfigDict → dict, lists → tuples)."""
  return {k: tuple(v) if isinstance(v, list) else v for k, v in section.to_dict().items()}


def build_diffusion(config: ml_collections.ConfigDict, data_shape: tuple[int, ...],
                    num_classes: int, quantization_levels: int = 0) -> Diffusion:
  """`config.formulation` + `config.model` (genode.models) + `config.sampler`, and the
  training objective `config.objective` (name + parameters; default "denoising")."""
  del num_classes, quantization_levels  # the model's own classes; the NLL dequantizes
  model = models_lib.get_model(**fields_of(config.model))
  objective = fields_of(config.objective) if "objective" in config else {"name": "denoising"}
  name = objective.pop("name")
  return Diffusion(formulation=get_formulation(**fields_of(config.formulation)), model=model,
                   data_shape=tuple(data_shape),
                   num_classes=int(getattr(model, "num_classes", 0)),
                   sampler=SamplerSpec.from_config(config.sampler),
                   objective_name=name, objective_params=tuple(sorted(objective.items())))


def build_cnf(config: ml_collections.ConfigDict, data_shape: tuple[int, ...],
              num_classes: int, quantization_levels: int = 0) -> ffjord.CNF:
  """A continuous normalizing flow (FFJORD): `config.model` is f(x, t); `config.cnf` has
  time_length, num_levels (256 = dequantize 8-bit data, 0 = continuous), `train` and
  `likelihood` (`genode.ffjord.Solve` fields), kinetic_weight and jacobian_weight (RNODE's
  λ_K, λ_J; 0 = off), whitening ("none" | "diagonal" | "full": an affine bijector fitted
  to the training split, `genode.whitening`); `config.sampler` (`genode.ffjord.CNFSampler`)."""
  del num_classes, quantization_levels  # config.cnf.num_levels says how to dequantize
  model = models_lib.get_model(**fields_of(config.model))
  section = config.cnf
  valid = {"time_length", "num_levels", "train", "likelihood", "kinetic_weight",
           "jacobian_weight", "whitening"}
  unknown = sorted(set(section) - valid)
  if unknown:
    raise ValueError(f"Unknown config.cnf fields {unknown}; valid: {sorted(valid)}")
  solves = {k: ffjord.from_fields(ffjord.Solve, fields_of(section[k]), f"cnf.{k}")
            for k in ("train", "likelihood") if k in section}
  train = solves.get("train", ffjord.CNF.train_solve)
  if train.adjoint == "recursive_checkpoint" and config.get("parallel") != "single":
    raise ValueError(
        f"cnf.train.adjoint='recursive_checkpoint' fails under parallel="
        f"{config.get('parallel')!r} (diffrax #765: equinox's checkpointed loop rejects "
        "shard_map/pmap sharding metadata); use parallel='single' or "
        "cnf.train.adjoint='backsolve'")
  whitening = str(section.get("whitening", "none"))
  if whitening != "none" and config.optim.get("weight_decay", 0.0):
    raise ValueError(f"cnf.whitening={whitening!r} keeps its fitted statistics fixed, but "
                     f"optim.weight_decay={config.optim.weight_decay} would decay them; use "
                     "weight_decay=0")
  return ffjord.CNF(model=model, data_shape=tuple(data_shape),
                    time_length=float(section.get("time_length", 1.0)),
                    num_levels=int(section.get("num_levels", 0)),
                    train_solve=train,
                    likelihood_solve=solves.get("likelihood", ffjord.CNF.likelihood_solve),
                    sampler=ffjord.from_fields(ffjord.CNFSampler, fields_of(config.sampler),
                                              "sampler"),
                    num_classes=int(getattr(model, "num_classes", 0)),
                    kinetic_weight=float(section.get("kinetic_weight", 0.0)),
                    jacobian_weight=float(section.get("jacobian_weight", 0.0)),
                    whitening=whitening)


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


FAMILIES: dict[str, Callable[..., Any]] = {"diffusion": build_diffusion, "flow": build_flow,
                                           "cnf": build_cnf}
# The config sections each family reads, besides the common ones.
REQUIRED_SECTIONS: dict[str, tuple[str, ...]] = {
    "diffusion": ("formulation", "model", "sampler"), "flow": ("flow", "sampler"),
    "cnf": ("model", "cnf", "sampler")}


def get_family(config: ml_collections.ConfigDict, data_shape, num_classes: int,
               quantization_levels: int = 0):
  """The family `config.family` (default "diffusion") built from `config`."""
  name = config.get("family", "diffusion")
  if name not in FAMILIES:
    raise ValueError(f"Unknown family {name!r}; valid families: {sorted(FAMILIES)}")
  missing = [k for k in REQUIRED_SECTIONS[name] if k not in config]
  if missing:
    raise ValueError(f"Config lacks {missing}, which family {name!r} needs")
  return FAMILIES[name](config, tuple(data_shape), num_classes, int(quantization_levels))
