"""Inception-v3 pool3 features for FID, in Flax (the network of TF FID / pytorch-fid).

The architecture is torchvision's Inception3 with pytorch-fid's FID blocks
(`FIDInceptionA/C/E_1/E_2`, which reproduce the 2015 TF graph: average pools that do
not count padding, and a max pool in the last block), up to the 2048-d global average
pool ("pool3"). Inputs follow pytorch-fid: images resized to 299×299 with bilinear
interpolation, half-pixel centres, no antialiasing (`F.interpolate(...,
align_corners=False)`), values in [−1, 1]; grayscale images are repeated to 3 channels.

Weights are not downloaded. They are read from a local `.npz` whose keys are the Flax
variable tree flattened with '/', e.g.

    params/Conv2d_1a_3x3/conv/kernel        (3, 3, 3, 32)   HWIO
    params/Conv2d_1a_3x3/bn/scale           (32,)
    params/Conv2d_1a_3x3/bn/bias            (32,)
    batch_stats/Conv2d_1a_3x3/bn/mean       (32,)
    batch_stats/Conv2d_1a_3x3/bn/var        (32,)
    params/Mixed_5b/branch1x1/conv/kernel   ...

(94 conv + batch-norm layers, float32). `python -m genode.evaluation.convert_inception`
writes it from pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`; see that module.
The default location is `default_weights_path()`.

Shapes: images (B, H, W, C), C ∈ {1, 3}; features (B, 2048).
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

FEATURE_DIM = 2048
INPUT_SIZE = 299
WEIGHTS_FILENAME = "inception_v3_fid.npz"
PYTORCH_FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/"
                           "fid_weights/pt_inception-2015-12-05-6726825d.pth")

Variables = dict[str, Any]


def default_weights_path() -> pathlib.Path:
  """`$GENODE_CACHE/inception_v3_fid.npz`, `$GENODE_CACHE` defaulting to ~/.cache/genode."""
  return cache_dir() / WEIGHTS_FILENAME


def cache_dir() -> pathlib.Path:
  """genode's cache directory: `$GENODE_CACHE`, else `~/.cache/genode`."""
  return pathlib.Path(os.environ.get("GENODE_CACHE", "~/.cache/genode")).expanduser()


def how_to_get_weights(path) -> str:
  return (f"Inception-v3 FID weights not found at {path}. Download pytorch-fid's "
          f"{PYTORCH_FID_WEIGHTS_URL.rsplit('/', 1)[-1]} (from {PYTORCH_FID_WEIGHTS_URL}) and "
          f"convert it once, with torch installed: python -m genode.evaluation.convert_inception "
          f"--input=pt_inception-2015-12-05-6726825d.pth --output={path}")


# ---------------------------------------------------------------------------
# The network.
# ---------------------------------------------------------------------------


class BasicConv2d(nn.Module):
  """Conv (no bias) → BatchNorm(ε = 10⁻³, running statistics) → ReLU."""

  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x):
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel_size, strides=self.strides,
                padding=((ph, ph), (pw, pw)), use_bias=False, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3(x):
  """3×3 average pool, stride 1, padding 1, not counting the padding (TF semantics)."""
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x):
  return nn.max_pool(x, (3, 3), (2, 2))


class InceptionA(nn.Module):
  """Mixed_5b/c/d (pytorch-fid FIDInceptionA)."""

  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(64, (1, 1), name="branch1x1")(x)
    b5 = BasicConv2d(48, (1, 1), name="branch5x5_1")(x)
    b5 = BasicConv2d(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = BasicConv2d(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], -1)


class InceptionB(nn.Module):
  """Mixed_6a: the 35×35 → 17×17 reduction."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(384, (3, 3), strides=2, name="branch3x3")(x)
    bd = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
    bd = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = BasicConv2d(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], -1)


class InceptionC(nn.Module):
  """Mixed_6b/c/d/e (pytorch-fid FIDInceptionC): factorised 7×7 convolutions."""

  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    b1 = BasicConv2d(192, (1, 1), name="branch1x1")(x)
    b7 = BasicConv2d(c7, (1, 1), name="branch7x7_1")(x)
    b7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = BasicConv2d(c7, (1, 1), name="branch7x7dbl_1")(x)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = BasicConv2d(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], -1)


class InceptionD(nn.Module):
  """Mixed_7a: the 17×17 → 8×8 reduction."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(192, (1, 1), name="branch3x3_1")(x)
    b3 = BasicConv2d(320, (3, 3), strides=2, name="branch3x3_2")(b3)
    b7 = BasicConv2d(192, (1, 1), name="branch7x7x3_1")(x)
    b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = BasicConv2d(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], -1)


class InceptionE(nn.Module):
  """Mixed_7b (FIDInceptionE_1, average pool) and Mixed_7c (FIDInceptionE_2, max pool)."""

  max_pool: bool

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(320, (1, 1), name="branch1x1")(x)
    b3 = BasicConv2d(384, (1, 1), name="branch3x3_1")(x)
    b3 = jnp.concatenate([
        BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
        BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], -1)
    bd = BasicConv2d(448, (1, 1), name="branch3x3dbl_1")(x)
    bd = BasicConv2d(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([
        BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
        BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], -1)
    if self.max_pool:  # pytorch-fid: "the FID Inception model uses max pooling here"
      pooled = nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
    else:
      pooled = _avg_pool_3x3(x)
    bp = BasicConv2d(192, (1, 1), name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], -1)


class InceptionV3(nn.Module):
  """Inception-v3 up to pool3: (B, H, W, 3) in [−1, 1], H, W ≥ 75 → (B, 2048)."""

  @nn.compact
  def __call__(self, x):
    x = BasicConv2d(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)
    x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3_s2(x)
    x = BasicConv2d(80, (1, 1), name="Conv2d_3b_1x1")(x)
    x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max_pool_3x3_s2(x)
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(c7, name=name)(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE(max_pool=False, name="Mixed_7b")(x)
    x = InceptionE(max_pool=True, name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2))  # adaptive average pool to 1×1: pool3


# ---------------------------------------------------------------------------
# Inputs, weights and features.
# ---------------------------------------------------------------------------


def preprocess(images, size: int = INPUT_SIZE):
  """(B, H, W, C∈{1,3}) in [−1, 1] → (B, size, size, 3) float32, bilinear, half-pixel centres.

  Resizing commutes with pytorch-fid's affine [0, 1] → [−1, 1] map, so resizing
  [−1, 1] images equals its resize-then-normalise.
  """
  images = jnp.asarray(images, jnp.float32)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"images must be (B, H, W, 1 or 3), got shape {images.shape}")
  if images.shape[-1] == 1:
    images = jnp.repeat(images, 3, axis=-1)
  return jax.image.resize(images, (images.shape[0], size, size, 3), "bilinear", antialias=False)


def variable_shapes(size: int = INPUT_SIZE) -> dict[str, tuple[int, ...]]:
  """The flat '/'-keyed variable shapes a weights file must hold."""
  shapes = jax.eval_shape(InceptionV3().init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
  return {k: v.shape for k, v in traverse_util.flatten_dict(shapes, sep="/").items()}


def load_weights(path=None) -> Variables:
  """Reads an Inception `.npz` (format in the module docstring) into Flax variables.

  Raises FileNotFoundError saying how to get the file, ValueError on missing, unexpected or
  mis-shaped entries.
  """
  path = pathlib.Path(path) if path is not None else default_weights_path()
  if not path.is_file():
    raise FileNotFoundError(how_to_get_weights(path))
  with np.load(path) as data:
    flat = {k: np.asarray(data[k], np.float32) for k in data.files}
  expected = variable_shapes()
  missing = sorted(set(expected) - set(flat))
  unexpected = sorted(set(flat) - set(expected))
  wrong = sorted(k for k in set(flat) & set(expected) if flat[k].shape != expected[k])
  if missing or unexpected or wrong:
    raise ValueError(
        f"{path} is not an Inception-v3 FID weights file: {len(missing)} missing keys "
        f"{missing[:3]}, {len(unexpected)} unexpected keys {unexpected[:3]}, mis-shaped "
        f"{[(k, flat[k].shape, expected[k]) for k in wrong[:3]]}")
  return traverse_util.unflatten_dict(flat, sep="/")


def save_weights(path, variables: Variables) -> None:
  """Writes Flax variables in the documented flat '/'-keyed `.npz` format."""
  flat = traverse_util.flatten_dict(variables, sep="/")
  np.savez(path, **{k: np.asarray(v, np.float32) for k, v in flat.items()})


@jax.jit
def _pool3(variables, images):
  return InceptionV3().apply(variables, images)


def inception_features(variables: Variables, images, *, batch_size: int = 200,
                       size: int = INPUT_SIZE) -> np.ndarray:
  """pool3 features (N, 2048) of images (N, H, W, C) in [−1, 1], in batches.

  The last batch is padded to `batch_size` (one compilation per image shape).
  """
  images = np.asarray(images, np.float32)
  out = []
  for i in range(0, len(images), batch_size):
    batch = images[i:i + batch_size]
    padded = np.concatenate([batch, np.zeros((batch_size - len(batch),) + batch.shape[1:],
                                             batch.dtype)])
    out.append(np.asarray(_pool3(variables, preprocess(padded, size)))[:len(batch)])
  return np.concatenate(out, 0) if out else np.zeros((0, FEATURE_DIM), np.float32)


def conv_layer_names(variables: Variables) -> Sequence[str]:
  """'/'-joined paths of every BasicConv2d in a variable tree (94 in Inception-v3)."""
  flat = traverse_util.flatten_dict(variables["params"], sep="/")
  return sorted(k[:-len("/conv/kernel")] for k in flat if k.endswith("/conv/kernel"))
