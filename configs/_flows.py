"""The normalizing-flow experiments (family "flow", genode.flows) as configs.

`flow_config(arch, data, arg)` builds NICE, RealNVP or Glow on toy2d, digits, MNIST or
CIFAR-10. The config argument is a comma-separated list of

  runlocal          a CPU smoke test (a few steps of a tiny flow)
  spline            rational-quadratic spline couplings (Durkan et al. 2019) instead of
                    the paper's affine ones (RealNVP, Glow; NICE stays additive)
  additive          Glow's additive coupling (openai/glow `flow_coupling=0`)

Shared settings: the dequantized NLL objective ("nll"), temperature sampling
(`sampler.temperature`, z = T·ε). Image experiments select their checkpoint by held-out
bits/dim on a validation split of the training set (`train.select_by = "val_nll"`,
`data.validation_examples`, genode.validation); toy2d draws fresh samples every step and
holds out fresh samples of their own seed.
"""

from __future__ import annotations

import ml_collections

from configs import base

ARCHS = ("nice", "realnvp", "glow")
DATA = ("toy2d", "digits", "mnist", "cifar10")
OPTIONS = ("runlocal", "spline", "additive")


def _flow_section(arch: str, data: str, options: set) -> dict:
  """The architecture and its size per dataset (each paper's settings, sized down where
  the data is small)."""
  if arch == "nice":
    if "spline" in options or "additive" in options:
      raise ValueError("NICE is additive by definition; the options 'spline' and "
                       "'additive' are for RealNVP and Glow")
    sizes = {  # Dinh et al. 2014: 4 additive couplings + diagonal scaling, logistic prior
        "toy2d": dict(num_couplings=4, hidden=128, num_hidden_layers=4),
        "digits": dict(num_couplings=4, hidden=256, num_hidden_layers=4, logit_alpha=0.05),
        "mnist": dict(num_couplings=4, hidden=1000, num_hidden_layers=5),  # official yaml
        "cifar10": dict(num_couplings=4, hidden=2000, num_hidden_layers=4),  # paper §5
    }
    return dict(name="nice", prior="logistic", **sizes[data])
  coupling = {"realnvp": "affine_tanh", "glow": "affine_sigmoid"}[arch]
  if "spline" in options:
    coupling = "spline"
  if "additive" in options:
    if arch != "glow":
      raise ValueError("The option 'additive' is Glow's (RealNVP is affine or spline)")
    coupling = "additive"
  spline = {}
  if coupling == "spline":  # toy2d: finer bins for the checkerboard's hard edges on [−4, 4]
    spline = (dict(num_bins=16, spline_bound=5.0) if data == "toy2d"
              else dict(num_bins=8, spline_bound=4.0))
  if arch == "realnvp":
    sizes = {  # Dinh et al. 2016 §3.6/§4.1: multi-scale, checkerboard + channel masks
        "toy2d": dict(num_vector_couplings=8, hidden=128, num_hidden_layers=2),
        "digits": dict(num_scales=2, hidden=64, logit_alpha=0.05),
        "mnist": dict(num_scales=3, hidden=64, logit_alpha=0.05),
        "cifar10": dict(num_scales=3, hidden=64, logit_alpha=0.05),  # chrischute port width
    }
    return dict(name="realnvp", coupling=coupling, **spline, **sizes[data])
  sizes = {  # Kingma & Dhariwal 2018: L levels × K steps, ActNorm / 1×1 conv / coupling
      "toy2d": dict(num_levels=2, num_steps=4, hidden=128, num_hidden_layers=2),
      "digits": dict(num_levels=2, num_steps=8, hidden=128, logit_alpha=0.05),
      "mnist": dict(num_levels=2, num_steps=16, hidden=512),  # 28 = 4·7: two squeezes
      "cifar10": dict(num_levels=3, num_steps=32, hidden=512),  # the paper's CIFAR-10
  }
  return dict(name="glow", coupling=coupling, lu=True, **spline, **sizes[data])


def flow_config(arch: str, data: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """NICE / RealNVP / Glow (`arch`) on `data`; `arg` as in the module docstring."""
  if arch not in ARCHS or data not in DATA:
    raise ValueError(f"flow_config: arch in {ARCHS}, data in {DATA}; got {arch!r}, {data!r}")
  options = set(filter(None, (arg or "").split(",")))
  unknown = sorted(options - set(OPTIONS))
  if unknown:
    raise ValueError(f"Unknown config argument(s) {unknown}; valid: {list(OPTIONS)} "
                     "(comma-separated) or none")
  config = base.get_base_config()
  config.family = "flow"
  for section in ("formulation", "model"):  # the diffusion family's, not read here
    del config[section]
  config.objective = ml_collections.ConfigDict({"name": "nll"})
  config.flow = ml_collections.ConfigDict(_flow_section(arch, data, options))
  config.sampler = ml_collections.ConfigDict(dict(num_samples=64, temperature=1.0))
  config.optim.update(optimizer="adam", learning_rate=1e-3, warmup_steps=100,
                      grad_clip_norm=100.0, ema_half_life_images=2_000.0)
  if arch == "glow":
    config.optim.optimizer = "adamax"  # openai/glow's default
  if data == "toy2d":
    config.data = ml_collections.ConfigDict(dict(name="toy2d", distribution="checkerboard"))
    config.optim.ema_half_life_images = 50_000.0
    config.train.update(num_steps=5000, batch_size=512, log_every=100, checkpoint_every=1000,
                        sample_every=5000, keep_checkpoints=2, select_by="val_nll",
                        validate_every=500)
    config.sampler.num_samples = 2000
  elif data == "digits":
    config.data = ml_collections.ConfigDict(dict(name="digits", validation_examples=200))
    config.train.update(num_steps=3000, batch_size=64, log_every=50, checkpoint_every=500,
                        sample_every=3000, keep_checkpoints=2, select_by="val_nll",
                        validate_every=50, patience=6)
    if arch == "glow":  # measured: lr 1e-3 still improves at 3000 steps; 3e-3 converges
      config.optim.learning_rate = 3e-3
      config.train.num_steps = 10_000
  else:
    path = {"mnist": "data/mnist", "cifar10": "data/cifar10"}[data]
    config.data = ml_collections.ConfigDict(dict(name=data, path=path,
                                                 validation_examples=5000))
    config.optim.update(learning_rate=1e-3, warmup_steps=1000, ema_half_life_images=50_000.0)
    config.train.update(num_steps=100_000, batch_size=64, log_every=500,
                        checkpoint_every=5000, sample_every=5000, keep_checkpoints=2,
                        select_by="val_nll", validate_every=5000, patience=4)
  if "runlocal" in options:
    config.train.update(num_steps=4, batch_size=16, log_every=2, checkpoint_every=2,
                        sample_every=4, keep_checkpoints=2, validate_every=2)
    config.optim.warmup_steps = 0
    config.sampler.num_samples = 16
    config.flow.hidden = 8
    for field, small in (("num_hidden_layers", 1), ("num_steps", 2), ("num_couplings", 4),
                         ("num_vector_couplings", 2)):
      if field in config.flow:
        config.flow[field] = small
    if data == "toy2d":
      config.data.split_size = 256
  return config
