"""Networks F(x; c_noise, label) for the denoiser D = c_skip·x + c_out·F(c_in·x; c_noise).

Every model is a Flax linen module with one call signature (the training code relies on
it):

  model.apply(variables, x, noise_labels, class_labels=None, train=False, rngs=...) -> F

with F the shape of x; x is (B, d) for `MLP`, (B, H, W, C) for `UNet`, either for
`ConcatSquashMLP` (FFJORD's vector field f(x, t), noise_labels = t); noise_labels (B,)
float (the formulation's c_noise); class_labels int (B,) or None (= the null
class, unconditional). In training (`train=True`), dropout and label dropout draw from
the rng stream "dropout". Names resolve to classes in `MODELS`, once, via `get_model`.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax

from genode.models.concatsquash import ConcatSquashMLP
from genode.models.embeddings import fourier_embedding, positional_embedding
from genode.models.mlp import MLP
from genode.models.unet import UNet

__all__ = ["MLP", "UNet", "ConcatSquashMLP", "MODELS", "get_model", "count_params",
           "fourier_embedding", "positional_embedding"]

MODELS: dict[str, type[nn.Module]] = {"mlp": MLP, "unet": UNet,
                                      "concatsquash": ConcatSquashMLP}


def get_model(name: str, **fields) -> nn.Module:
  """The model `name` ("mlp" | "unet" | "concatsquash") with the given fields; ValueError lists valid ones."""
  try:
    cls = MODELS[name]
  except KeyError:
    raise ValueError(f"Unknown model {name!r}; valid models: {sorted(MODELS)}") from None
  valid = sorted(f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name"))
  unknown = sorted(set(fields) - set(valid))
  if unknown:
    raise ValueError(f"Unknown fields {unknown} for model {name!r}; valid fields: {valid}")
  for key in ("hidden_dims", "channel_mults", "attention_resolutions"):
    if key in fields:  # configs hand over lists; frozen modules want hashable tuples
      fields[key] = tuple(fields[key])
  return cls(**fields)


def count_params(params) -> int:
  """Number of scalars in a parameter pytree (arrays or `jax.ShapeDtypeStruct`s)."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params))
