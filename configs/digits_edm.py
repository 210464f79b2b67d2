"""EDM (Karras et al. 2022) on scikit-learn's bundled 8×8 digits: genode's main job.

  python -m launch.train --config=configs/digits_edm.py --workdir=/tmp/genode_main
  python -m launch.sample --workdir=/tmp/genode_main        # another grid, from the EMA
  python -m launch.train --config=configs/digits_edm.py:runlocal --workdir=/tmp/genode/smoke

No download: the data ship with scikit-learn. A small DDPM++ U-Net (16 channels,
multipliers (1, 2), one block per level, attention at 4×4; ≈0.2 M parameters), batch 64,
2000 steps, Adam lr 2e-3, EMA half-life 20 k images; the sample grid
`<workdir>/samples/step_2000.png` (Heun, 18 steps, 35 NFE) shows recognizable digits.
It costs ≈330 s of CPU time (compilation ≈75 s of it), a few minutes on 2 cores.
"""

from configs import base


def get_config(arg=None):
  return base.digits_config("edm", arg)
