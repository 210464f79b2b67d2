"""Sample pictures: PNG grids of images (Pillow) and scatter plots of 2-D samples.

Images come in as uint8 (N, H, W, C) (a dataset's `to_uint8` maps the model's [-1, 1]
range to 8 bits); 2-D samples as float (N, 2).
"""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image


def image_grid(images: np.ndarray, num_cols: int | None = None, padding: int = 1,
               pad_value: int = 0) -> np.ndarray:
  """Tiles uint8 images (N, H, W, C) into one (rows·(H+p)+p, cols·(W+p)+p, C) array."""
  images = np.asarray(images)
  if images.ndim != 4 or images.dtype != np.uint8:
    raise ValueError(f"image_grid expects uint8 images (N, H, W, C); got {images.dtype} "
                     f"{images.shape}")
  n, h, w, c = images.shape
  num_cols = num_cols or math.ceil(math.sqrt(n))
  num_rows = math.ceil(n / num_cols)
  grid = np.full((num_rows * (h + padding) + padding, num_cols * (w + padding) + padding, c),
                 pad_value, np.uint8)
  for i, image in enumerate(images):
    top = padding + (i // num_cols) * (h + padding)
    left = padding + (i % num_cols) * (w + padding)
    grid[top:top + h, left:left + w] = image
  return grid


def save_image_grid(path: str, images: np.ndarray, num_cols: int | None = None,
                    upscale: int = 1) -> None:
  """Writes uint8 images (N, H, W, C), C ∈ {1, 3}, as one PNG grid, upscaled by pixels."""
  grid = image_grid(images, num_cols)
  if upscale > 1:
    grid = grid.repeat(upscale, axis=0).repeat(upscale, axis=1)
  mode = {1: "L", 3: "RGB"}.get(grid.shape[-1])
  if mode is None:
    raise ValueError(f"Can write 1- or 3-channel images; got {grid.shape[-1]} channels")
  _makedirs(path)
  Image.fromarray(grid[..., 0] if mode == "L" else grid, mode=mode).save(path)


def save_points(path: str, points: np.ndarray, limit: float | None = None) -> None:
  """Writes a scatter plot of 2-D samples (N, 2) as a PNG (matplotlib, no display)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  points = np.asarray(points)
  if points.ndim != 2 or points.shape[1] != 2:
    raise ValueError(f"save_points expects (N, 2) samples; got {points.shape}")
  finite = points[np.all(np.isfinite(points), axis=1)]
  fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
  ax.scatter(finite[:, 0], finite[:, 1], s=2, alpha=0.5)
  if limit is not None:
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-limit, limit)
  ax.set_aspect("equal")
  ax.set_title(f"{len(points)} samples ({len(points) - len(finite)} non-finite)")
  _makedirs(path)
  fig.savefig(path)
  plt.close(fig)


def save_samples(path: str, x: np.ndarray, to_uint8=None) -> None:
  """Writes samples as a picture: a scatter plot for (N, 2), a grid for (N, H, W, C).

  `to_uint8` maps images to uint8 (a dataset's `to_uint8`; default: [-1, 1] → [0, 255]).
  """
  x = np.asarray(x)
  if x.ndim == 2:
    save_points(path, x)
  elif x.ndim == 4:
    images = to_uint8(x) if to_uint8 is not None else _default_to_uint8(x)
    upscale = max(1, 64 // x.shape[1])  # small images (8×8 digits) are upscaled to be seen
    save_image_grid(path, np.asarray(images), upscale=upscale)
  else:
    raise ValueError(f"Samples must be (N, 2) points or (N, H, W, C) images; got {x.shape}")


def _default_to_uint8(x):
  return np.clip(np.round((np.nan_to_num(x) + 1) * 127.5), 0, 255).astype(np.uint8)


def _makedirs(path):
  directory = os.path.dirname(path)
  if directory:
    os.makedirs(directory, exist_ok=True)
