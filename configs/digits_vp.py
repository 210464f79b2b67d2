"""VP / DDPM++ (Song et al. 2021) on scikit-learn's bundled 8×8 digits (no download), small U-Net.

  python -m launch.train --config=configs/digits_vp.py --workdir=/tmp/genode/digits_vp
  python -m launch.train --config=configs/digits_vp.py:runlocal --workdir=/tmp/genode/smoke
"""

from configs import base


def get_config(arg=None):
  return base.digits_config("vp", arg)
