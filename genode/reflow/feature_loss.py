"""A perceptual loss for image distillation: a small classifier's features as LPIPS.

Liu, Gong & Liu 2022 distill k = 1 students with LPIPS (Zhang et al. 2018) on VGG
features. LPIPS weights cannot be downloaded here, so the stand-in is the small-data
feature network of `genode.evaluation.feature_net` (a CNN classifier trained once on the
dataset's train split and cached), used as LPIPS eq. 1 uses its network with unit
weights: every layer's activations (the ReLU outputs of each conv and of the feature
layer) normalised to unit length along channels, their squared difference averaged
over positions, summed over layers:

    d(x, y) = Σ_l mean_hw ‖ φ̂_l(x)_hw − φ̂_l(y)_hw ‖²,   φ̂ = φ / (‖φ‖_channels + ε).

The network's parameters are *frozen inputs* of the train step (`make_train_step`
`*frozen`, `DataParallel.compile(num_frozen=1)`), never constants of the compiled step.

The trap: the FD metric of the evaluation uses the same architecture. A loss on the
metric's own network would optimise the yardstick, so the loss network is trained with
another seed (`LOSS_SEED`): same data and architecture, different weights.

Shapes: images (B, H, W, C) in [−1, 1]; the distance (B,).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

LOSS_SEED = 1  # the FD metric's network has seed 0 (`feature_net.FEATURE_NETS`)
_EPS = 1e-10  # LPIPS's normalisation epsilon


def loss_spec(dataset: str):
  """The `FeatureNetSpec` of the loss network for `dataset` ("digits", "mnist"): the
  dataset's default spec with seed `LOSS_SEED`; ValueError listing the known datasets."""
  from genode.evaluation import feature_net  # pylint: disable=g-import-not-at-top
  return feature_net.get_feature_net_spec(dataset, seed=LOSS_SEED)


def load_params(dataset: str) -> Any:
  """The loss network's parameters for `dataset` (trained and cached on first use, see
  `genode.evaluation.feature_net.load_or_train_feature_net`; the digits net ≈ 10 s)."""
  from genode import data as data_lib  # pylint: disable=g-import-not-at-top
  from genode.evaluation import feature_net  # pylint: disable=g-import-not-at-top
  spec = loss_spec(dataset)
  ds = data_lib.get_dataset(name=dataset)
  splits = []
  for which in ("train", "test"):
    images, labels = ds.arrays(which)
    splits += [images.astype(np.float32) / np.float32(127.5) - np.float32(1.0), labels]
  return feature_net.load_or_train_feature_net(dataset, spec, *splits).params


def _normalize(a: jax.Array) -> jax.Array:
  return a / (jnp.sqrt(jnp.sum(a * a, axis=-1, keepdims=True)) + _EPS)


def make_feature_distance(spec) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
  """`distance(params, x, y) -> (B,)`, the LPIPS-style distance of the module docstring
  on the layers of `spec.module` (a `FeatureCNN`)."""
  module = spec.module
  num_conv = len(spec.channels)

  def layers(params, images):
    _, state = module.apply({"params": params}, images, capture_intermediates=True,
                            mutable=["intermediates"])
    inter = state["intermediates"]
    convs = [jax.nn.relu(inter[f"Conv_{i}"]["__call__"][0]) for i in range(num_conv)]
    features = jax.nn.relu(inter["Dense_0"]["__call__"][0])
    return convs + [features]

  def distance(params, x, y):
    total = jnp.zeros(x.shape[:1], x.dtype)
    for a, b in zip(layers(params, x), layers(params, y)):
      d = jnp.sum((_normalize(a) - _normalize(b)) ** 2, axis=-1)  # (B, ...positions)
      total = total + jnp.mean(d.reshape(d.shape[0], -1), axis=1)
    return total

  return distance


@dataclasses.dataclass(frozen=True)
class FeatureLoss:
  """The loss network of `dataset`: `distance(params, x, y)` and its frozen `params()`."""

  dataset: str

  def __post_init__(self):
    loss_spec(self.dataset)  # an unknown dataset fails at the config layer

  def check_shape(self, data_shape: tuple[int, ...]) -> None:
    """ValueError (one line) unless the student's examples are this network's images."""
    from genode import data as data_lib  # pylint: disable=g-import-not-at-top
    shape = tuple(data_lib.get_dataset(name=self.dataset).shape)
    if tuple(data_shape) != shape:
      raise ValueError(f"The feature loss of {self.dataset!r} takes images of shape {shape}; "
                       f"the student's examples have shape {tuple(data_shape)} (use "
                       "objective.loss='l2')")

  @property
  def distance(self) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
    return make_feature_distance(loss_spec(self.dataset))

  def params(self) -> Any:
    return load_params(self.dataset)
