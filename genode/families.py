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

`FAMILIES` maps `config.family` to a builder `(config, data_shape, num_classes) -> family`
that reads the config sections that family needs (`REQUIRED_SECTIONS`).
"""

from __future__ import annotations

from typing import Any, Callable

import ml_collections

from genode import models as models_lib
from genode import ffjord
from genode.diffusion import Diffusion, SamplerSpec
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


def build_cnf(config: ml_collections.ConfigDict, data_shape: tuple[int, ...],
              num_classes: int) -> ffjord.CNF:
  """A continuous normalizing flow (FFJORD): `config.model` is f(x, t); `config.cnf` has
  time_length, num_levels (256 = dequantize 8-bit data, 0 = continuous), `train` and
  `likelihood` (`genode.ffjord.Solve` fields); `config.sampler` (`genode.ffjord.CNFSampler`)."""
  del num_classes
  model = models_lib.get_model(**fields_of(config.model))
  section = config.cnf
  unknown = sorted(set(section) - {"time_length", "num_levels", "train", "likelihood"})
  if unknown:
    raise ValueError(f"Unknown config.cnf fields {unknown}; valid: ['likelihood', "
                     "'num_levels', 'time_length', 'train']")
  solves = {k: ffjord.from_fields(ffjord.Solve, fields_of(section[k]), f"cnf.{k}")
            for k in ("train", "likelihood") if k in section}
  train = solves.get("train", ffjord.CNF.train_solve)
  if train.adjoint == "recursive_checkpoint" and config.get("parallel") != "single":
    raise ValueError(
        f"cnf.train.adjoint='recursive_checkpoint' fails under parallel="
        f"{config.get('parallel')!r} (diffrax #765: equinox's checkpointed loop rejects "
        "shard_map/pmap sharding metadata); use parallel='single' or "
        "cnf.train.adjoint='backsolve'")
  return ffjord.CNF(model=model, data_shape=tuple(data_shape),
                    time_length=float(section.get("time_length", 1.0)),
                    num_levels=int(section.get("num_levels", 0)),
                    train_solve=train,
                    likelihood_solve=solves.get("likelihood", ffjord.CNF.likelihood_solve),
                    sampler=ffjord.from_fields(ffjord.CNFSampler, fields_of(config.sampler),
                                              "sampler"),
                    num_classes=int(getattr(model, "num_classes", 0)))


FAMILIES: dict[str, Callable[..., Any]] = {"diffusion": build_diffusion, "cnf": build_cnf}
# The config sections each family reads, besides the common ones.
REQUIRED_SECTIONS: dict[str, tuple[str, ...]] = {"diffusion": ("formulation", "model",
                                                               "sampler"),
                                                 "cnf": ("model", "cnf", "sampler")}


def get_family(config: ml_collections.ConfigDict, data_shape, num_classes: int):
  """The family `config.family` (default "diffusion") built from `config`."""
  name = config.get("family", "diffusion")
  if name not in FAMILIES:
    raise ValueError(f"Unknown family {name!r}; valid families: {sorted(FAMILIES)}")
  missing = [k for k in REQUIRED_SECTIONS[name] if k not in config]
  if missing:
    raise ValueError(f"Config lacks {missing}, which family {name!r} needs")
  return FAMILIES[name](config, data_shape, num_classes)
