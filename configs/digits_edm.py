"""EDM (Karras et al. 2022) on scikit-learn's bundled 8×8 digits (no download), small U-Net.

  python -m launch.train --config=configs/digits_edm.py --workdir=/tmp/genode/digits_edm
  python -m launch.train --config=configs/digits_edm.py:runlocal --workdir=/tmp/genode/smoke
"""

from configs import base


def get_config(arg=None):
  return base.digits_config("edm", arg)
