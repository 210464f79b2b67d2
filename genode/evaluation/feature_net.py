"""Feature networks for small image data (8×8 digits, MNIST): a CNN classifier, cached.

Inception-v3 features mean little on 8×8 or 28×28 grayscale digits, so the Fréchet
distance of such data uses the penultimate layer of a small classifier trained once on
the dataset's training split (the "FID with a domain classifier" of e.g. the MNIST
diffusion literature). The number is only comparable between evaluations that use the
same network: the cache key holds the dataset, the architecture and the training settings.

Cache: `<cache>/feature_nets/<dataset>-<key>.npz`, where <cache> is `$GENODE_CACHE`
(default `~/.cache/genode`) and <key> a hash of the `FeatureNetSpec` (the file name also
spells out the architecture). The `.npz` holds the Flax params flattened with '/' plus
`test_accuracy`. Delete the file to retrain; training is deterministic given the spec.

Shapes: images (N, H, W, 1) in [−1, 1]; labels (N,) int; features (N, feature_dim).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import numpy as np
import optax
from flax import traverse_util

from genode.evaluation import inception


class FeatureCNN(nn.Module):
  """Conv 3×3 (stride 1, then 2, 2, …) + ReLU → flatten → Dense + ReLU (features) → logits."""

  channels: tuple[int, ...] = (32, 64)
  feature_dim: int = 128
  num_classes: int = 10

  @nn.compact
  def __call__(self, x):
    """(B, H, W, C) → (logits (B, num_classes), features (B, feature_dim))."""
    for i, c in enumerate(self.channels):
      x = nn.relu(nn.Conv(c, (3, 3), strides=1 if i == 0 else 2, padding="SAME")(x))
    features = nn.relu(nn.Dense(self.feature_dim)(x.reshape(x.shape[0], -1)))
    return nn.Dense(self.num_classes)(features), features


@dataclasses.dataclass(frozen=True)
class FeatureNetSpec:
  """Architecture and training settings of a feature network (all part of the cache key)."""

  channels: tuple[int, ...] = (32, 64)
  feature_dim: int = 128
  num_classes: int = 10
  train_steps: int = 600
  batch_size: int = 128
  learning_rate: float = 1e-3
  seed: int = 0

  @property
  def module(self) -> FeatureCNN:
    return FeatureCNN(self.channels, self.feature_dim, self.num_classes)

  def cache_name(self, dataset: str) -> str:
    key = hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode())
    arch = "x".join(map(str, self.channels))
    return f"{dataset}-cnn{arch}-f{self.feature_dim}-{key.hexdigest()[:10]}.npz"


# The default network per dataset (CPU training: digits ~10 s, MNIST ~1 min, unloaded).
FEATURE_NETS = {
    "digits": FeatureNetSpec(channels=(32, 64), train_steps=600),
    "mnist": FeatureNetSpec(channels=(32, 64, 64), train_steps=2000),
}


def get_feature_net_spec(dataset: str, **overrides) -> FeatureNetSpec:
  """The default `FeatureNetSpec` of a dataset; ValueError listing the known datasets."""
  if dataset not in FEATURE_NETS:
    raise ValueError(f"No feature network for dataset {dataset!r}; datasets with one: "
                     f"{sorted(FEATURE_NETS)} (Inception FID applies to RGB images)")
  return dataclasses.replace(FEATURE_NETS[dataset], **overrides)


class FeatureNet(NamedTuple):
  """A trained feature network: `features(images)` gives the penultimate layer."""

  spec: FeatureNetSpec
  params: Any
  test_accuracy: float
  path: pathlib.Path | None

  def features(self, images, batch_size: int = 1000) -> np.ndarray:
    images = np.asarray(images, np.float32)
    out = [np.asarray(_apply(self.spec.module, self.params, images[i:i + batch_size])[1])
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, self.spec.feature_dim), np.float32)

  def accuracy(self, images, labels) -> float:
    logits = _apply(self.spec.module, self.params, np.asarray(images, np.float32))[0]
    return float(np.mean(np.argmax(logits, -1) == np.asarray(labels)))


@jax.jit(static_argnums=0)
def _apply(module, params, images):
  return module.apply({"params": params}, images)


@jax.jit(static_argnums=0)
def _init(spec: FeatureNetSpec, example):
  """Initial params, jitted, from an "rbg" key: XLA:CPU compiles threefry-based
  initializers several times slower (~40 s against ~6 s here), and eagerly each op alone."""
  return spec.module.init(jax.random.key(spec.seed, impl="rbg"), example)["params"]


@jax.jit(static_argnums=0)
def _train_step(spec: FeatureNetSpec, params, opt_state, x, y):
  """One Adam step on the mean cross-entropy (compiled once per spec and shapes)."""

  def loss_fn(params):
    logits, _ = spec.module.apply({"params": params}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  updates, opt_state = optax.adam(spec.learning_rate).update(jax.grad(loss_fn)(params),
                                                             opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def train_feature_net(spec: FeatureNetSpec, train_x, train_y, test_x, test_y) -> FeatureNet:
  """Trains the classifier with Adam on cross-entropy (a pure function of spec and data).

  A Python loop of jitted steps: XLA:CPU runs these convolutions ~10× slower inside a
  `lax.scan`. Batches are drawn with replacement by numpy's generator seeded by spec.seed.
  """
  train_x, train_y = np.asarray(train_x, np.float32), np.asarray(train_y, np.int32)
  params = _init(spec, train_x[:1])
  opt_state = optax.adam(spec.learning_rate).init(params)
  rng = np.random.default_rng(spec.seed)
  for _ in range(spec.train_steps):
    idx = rng.integers(0, train_x.shape[0], spec.batch_size)
    params, opt_state = _train_step(spec, params, opt_state, train_x[idx], train_y[idx])
  net = FeatureNet(spec, jax.device_get(params), 0.0, None)
  return net._replace(test_accuracy=net.accuracy(test_x, test_y))


def cache_dir() -> pathlib.Path:
  """`$GENODE_CACHE/feature_nets` (default `~/.cache/genode/feature_nets`)."""
  return inception.cache_dir() / "feature_nets"


def load_or_train_feature_net(dataset: str, spec: FeatureNetSpec, train_x, train_y, test_x,
                              test_y, *, directory=None) -> FeatureNet:
  """The cached network for (dataset, spec), training and caching it if absent."""
  path = pathlib.Path(directory or cache_dir()) / spec.cache_name(dataset)
  if path.is_file():
    with np.load(path) as data:
      flat = {k: data[k] for k in data.files if k != "test_accuracy"}
      accuracy = float(data["test_accuracy"])
    return FeatureNet(spec, traverse_util.unflatten_dict(flat, sep="/"), accuracy, path)
  net = train_feature_net(spec, train_x, train_y, test_x, test_y)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
  np.savez(tmp, test_accuracy=net.test_accuracy,
           **traverse_util.flatten_dict(net.params, sep="/"))
  os.replace(tmp, path)  # atomic: concurrent evaluations never read a half-written file
  return net._replace(path=path)
