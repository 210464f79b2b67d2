"""The 2-D trajectory figure: crossing 1-RF paths against straight 2-RF paths.

`plot_trajectories(path, {"1-RF": traj1, "2-RF": traj2})` draws one panel per flow: the
paths of `rf_trajectory` (RF coordinates) from the noise (τ = 0, grey dots) to the data
(τ = 1, coloured dots), with S/E‖Z₁ − Z₀‖² (eq. 3) in each title, as in Liu, Gong &
Liu 2022, Fig. 2. Written as a PNG with matplotlib's Agg backend (no display).
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from genode.reflow.straightness import Trajectory, trajectory_straightness


def plot_trajectories(path: str, trajectories: Mapping[str, Trajectory],
                      num_paths: int = 64, limit: float | None = None) -> None:
  """Writes one panel per named (K + 1, B, 2) trajectory; at most `num_paths` paths each."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  if not trajectories:
    raise ValueError("plot_trajectories needs at least one trajectory.")
  for name, trajectory in trajectories.items():
    if trajectory.x.ndim != 3 or trajectory.x.shape[-1] != 2:
      raise ValueError(f"Trajectory {name!r}: expected states (K + 1, B, 2), got "
                       f"{tuple(trajectory.x.shape)}.")
  fig, axes = plt.subplots(1, len(trajectories), figsize=(4 * len(trajectories), 4), dpi=100,
                           squeeze=False)
  for ax, (name, trajectory) in zip(axes[0], trajectories.items()):
    x = np.asarray(trajectory.x)[:, :num_paths]
    ax.plot(x[:, :, 0], x[:, :, 1], color="tab:blue", alpha=0.35, linewidth=0.8)
    ax.scatter(x[0, :, 0], x[0, :, 1], s=6, color="0.5", label="noise z (τ = 0)", zorder=3)
    ax.scatter(x[-1, :, 0], x[-1, :, 1], s=6, color="tab:red", label="x (τ = 1)", zorder=3)
    s = trajectory_straightness(trajectory)
    ax.set_title(f"{name}: S/E‖Z₁−Z₀‖² = {float(s.normalized):.3g}")
    if limit is not None:
      ax.set_xlim(-limit, limit)
      ax.set_ylim(-limit, limit)
    ax.set_aspect("equal")
  axes[0][0].legend(loc="lower left", fontsize=7)
  fig.tight_layout()
  folder = os.path.dirname(path)
  if folder:
    os.makedirs(folder, exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
