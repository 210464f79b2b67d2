"""The base config every experiment derives from, and the shared family builders.

Fields (every experiment has all of them):

  seed                 data order, initialization and training noise (pure functions of it)
  parallel             "shard_map" | "pmap" | "single"
  family               the model family (genode.families): "diffusion" | "flow" | "cnf"
  objective            the training objective of the family and its parameters:
                       "denoising" (EDM eq. 8), "reflow" (time), "distill" (num_steps)
  init_from            workdir, step, params: start from a trained run's parameters when
                       the architectures match (reflow, distillation); fresh optimizer/EMA
  formulation          name + that formulation's parameters (genode.formulations; the
                       defaults are read from its dataclass)
  model                name + the model's fields (genode.models)
  data                 name + the dataset's parameters, e.g. `path` (genode.data)
  optim                optimizer, learning_rate, warmup_steps, decay, grad_clip_norm, b1, b2,
                       eps, weight_decay, ema_half_life_images, ema_rampup_ratio
  train                num_steps, batch_size (global), log_every, checkpoint_every,
                       sample_every, keep_checkpoints; select_by ("" | "val_nll": select
                       the checkpoint by held-out NLL, genode.validation) every
                       validate_every steps (0 = checkpoint_every), stopping after
                       `patience` validations without improvement (0 = never)
  flow                 (family "flow") name + the architecture's fields (genode.flows)
  sampler              solver, options (the solver's), grid, steps, sigmas (an explicit σ
                       list, used instead of grid/steps), sigma_min, sigma_max (None = the
                       formulation's), coordinates ("sigma" | "native"), num_samples,
                       guidance_scale: the training-time sample grids and the defaults of
                       `launch.sample`

Multi-process settings (coordinator address, process count and id) are flags of
`launch.train`, not config fields: they describe the machines, not the experiment.
"""

from __future__ import annotations

import dataclasses

import ml_collections
from ml_collections import config_dict

from genode import formulations

def formulation_params(name: str) -> dict:
  """The parameters of formulation `name` and their defaults, read from its dataclass
  (`genode.formulations`); fields the class derives itself (VP's and DDPM's σ range)
  are left out."""
  cls = formulations.FORMULATIONS[name]
  default = cls()
  return {f.name: f.default for f in dataclasses.fields(cls)
          if getattr(default, f.name) == f.default}


def get_base_config() -> ml_collections.ConfigDict:
  """Defaults shared by all experiments (each experiment overrides what it needs)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.parallel = "shard_map"
  config.family = "diffusion"
  config.objective = ml_collections.ConfigDict({"name": "denoising"})
  config.init_from = ml_collections.ConfigDict(dict(
      workdir=config_dict.placeholder(str), step=config_dict.placeholder(int), params="ema"))
  config.formulation = formulation_config("edm")
  config.model = ml_collections.ConfigDict({"name": "mlp"})
  config.data = ml_collections.ConfigDict({"name": "digits"})

  config.optim = ml_collections.ConfigDict(dict(
      optimizer="adam",
      learning_rate=1e-3,
      warmup_steps=0,
      decay="constant",
      grad_clip_norm=1.0,  # 0 disables clipping
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      weight_decay=0.0,
      ema_half_life_images=50_000.0,
      ema_rampup_ratio=config_dict.placeholder(float),  # EDM: 0.05; None = no ramp-up
  ))

  config.train = ml_collections.ConfigDict(dict(
      num_steps=10_000,
      batch_size=128,
      log_every=100,
      checkpoint_every=1000,
      sample_every=5000,
      keep_checkpoints=3,
      select_by="",
      validate_every=0,
      patience=0,
  ))

  config.sampler = ml_collections.ConfigDict(dict(
      solver="heun",
      options=ml_collections.ConfigDict(),  # the solver's options, e.g. S_churn, rtol
      grid="karras",
      steps=18,
      sigmas=config_dict.placeholder(tuple),  # an explicit σ grid (overrides grid, steps)
      sigma_min=config_dict.placeholder(float),
      sigma_max=config_dict.placeholder(float),
      coordinates="sigma",  # or "native": the formulation's own ODE in its time t
      num_samples=64,
      guidance_scale=1.0,
  ))
  return config


def formulation_config(name: str, **overrides) -> ml_collections.ConfigDict:
  """`name` plus that formulation's parameters (EDM Table 1 constants by default)."""
  params = formulation_params(name)
  params.update(overrides)
  return ml_collections.ConfigDict({"name": name, **params})


def toy2d_config(formulation: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """A time-conditioned MLP on a 2-D toy distribution (default: two moons)."""
  config = get_base_config()
  overrides = {"sigma_data": 1.0} if formulation == "edm" else {}
  config.formulation = formulation_config(formulation, **overrides)
  config.model = ml_collections.ConfigDict(dict(
      name="mlp", hidden_dims=(256, 256, 256), embedding_dim=64))
  config.data = ml_collections.ConfigDict(dict(name="toy2d", distribution="moons"))
  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 100
  config.optim.ema_half_life_images = 50_000.0
  config.train.update(num_steps=5000, batch_size=512, log_every=100, checkpoint_every=1000,
                      sample_every=2500)
  config.sampler.num_samples = 2000
  return apply_arg(config, arg, hidden_dims=(32, 32), embedding_dim=16)


def digits_config(formulation: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """A small DDPM++-style U-Net on scikit-learn's bundled 8×8 digits (no download)."""
  config = get_base_config()
  config.formulation = formulation_config(formulation)
  config.model = ml_collections.ConfigDict(dict(
      name="unet", base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
      attention_resolutions=(4,), dropout=0.0, embedding_type="positional",
      num_classes=0, label_dropout=0.0))
  config.data = ml_collections.ConfigDict(dict(name="digits"))
  config.optim.learning_rate = 2e-3
  config.optim.warmup_steps = 100
  config.optim.ema_half_life_images = 20_000.0
  config.train.update(num_steps=2000, batch_size=64, log_every=100, checkpoint_every=500,
                      sample_every=2000)
  config.sampler.num_samples = 64
  return apply_arg(config, arg, base_channels=8, channel_mults=(1, 2),
                   attention_resolutions=())


# The model of a U-Net image experiment's `runlocal` (the data path still applies): two
# levels, as the digits U-Net (compile time grows with the depth; the full architecture's
# shapes are checked without running it, by `Experiment.from_config`'s eval_shape).
IMAGE_RUNLOCAL_MODEL = dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                            attention_resolutions=(), dropout=0.0)


def apply_arg(config: ml_collections.ConfigDict, arg: str | None,
              **runlocal_model) -> ml_collections.ConfigDict:
  """The config argument: None keeps the experiment; "runlocal" shrinks it to a CPU smoke
  test (seconds), with `runlocal_model` overriding model fields."""
  if arg == "runlocal":
    config.train.update(num_steps=4, batch_size=16, log_every=2, checkpoint_every=2,
                        sample_every=4, keep_checkpoints=2)
    config.optim.warmup_steps = 0
    config.sampler.update(steps=4, num_samples=16)
    config.model.update(runlocal_model)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; valid: 'runlocal' or none")
  return config
