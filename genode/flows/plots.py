"""Density figures of 2-D flows: the model's exp log p on a grid next to the true density."""

from __future__ import annotations

import numpy as np


def density_grid(log_prob, lim: float = 4.5, num: int = 200):
  """(xs (num,), log p (num, num)) of `log_prob((n, 2)) -> (n,)` on [−lim, lim]²; rows
  are the second coordinate."""
  xs = np.linspace(-lim, lim, num)
  grid = np.stack(np.meshgrid(xs, xs, indexing="xy"), -1).reshape(-1, 2)
  return xs, np.asarray(log_prob(grid.astype(np.float32)), np.float64).reshape(num, num)


def plot_densities(panels: dict, path: str, lim: float = 4.5) -> None:
  """One image per {title: log p grid (from `density_grid`)}, side by side, into `path`."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.2), dpi=100)
  for ax, (title, logp) in zip(np.atleast_1d(axes), panels.items()):
    ax.imshow(np.exp(logp), origin="lower", extent=(-lim, lim, -lim, lim), cmap="magma")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
